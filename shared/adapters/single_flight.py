"""Single flight: concurrent callers asking for the same thing share one run of the work that answers it.

Used where a burst would otherwise repeat the same I/O many times at once: the notification path's index
read (every request of a burst after start-up names the same subscriptions) and the anonymous health
probe. Runs are kept per event loop, since a future belongs to the loop that made it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from shared.adapters.per_loop import PerLoop

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._runs: PerLoop[dict[Hashable, asyncio.Future[T]]] = PerLoop(dict)

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        """``work()``'s result; a caller arriving while a run for ``key`` is in flight gets that run's."""
        runs = self._runs.get()
        current = runs.get(key)
        if current is None:
            current = runs[key] = asyncio.ensure_future(work())
            current.add_done_callback(lambda _: runs.pop(key, None))
        # Shielded: one caller's cancellation (its client went away) must not fail the others' run.
        return await asyncio.shield(current)
