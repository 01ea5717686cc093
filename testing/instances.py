"""Another instance of the app inside a test: its own event loop, so its own per-loop state, on the same storage."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


def in_another_instance(work: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
    """Run ``work()`` (a coroutine function) as another instance would: its own event loop, so its own storage
    clients (``get_store`` is per loop) and in-process state (per-loop queues, locks), on the same Azurite."""
    from shared.adapters.storage import get_store

    async def instance() -> Any:
        try:
            return await work()
        finally:
            await get_store().close()

    return asyncio.to_thread(asyncio.run, instance())
