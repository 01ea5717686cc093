"""One object per running event loop: clients, locks and batchers that hold loop-bound state.

An asyncio object (a lock, a future, a pooled connection) belongs to the loop that made it. The Functions
worker runs one loop for its whole life; tests and the local host run many. ``PerLoop`` keeps one value per
loop, made by its factory on first use there, and drops it with the loop (weak keys), so no module writes its
own ``WeakKeyDictionary`` bookkeeping.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """``get()`` answers the running loop's value, made by ``factory()`` the first time (or when ``stale``)."""

    def __init__(self, factory: Callable[[], T], stale: Callable[[T], bool] | None = None) -> None:
        self._factory = factory
        self._stale = stale
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is None or (self._stale is not None and self._stale(value)):
            value = self._values[loop] = self._factory()
        return value

    def set(self, value: T) -> None:
        """Make ``value`` the running loop's (a benchmark hands the app an instrumented client)."""
        self._values[asyncio.get_running_loop()] = value

    def pop(self) -> T | None:
        """Forget the running loop's value (the caller closes it); ``None`` when it had none."""
        return self._values.pop(asyncio.get_running_loop(), None)


class LocksByKey:
    """One ``asyncio.Lock`` per key on the running loop, gone once nobody holds or awaits it (weak values): an
    in-process queue per mailbox, say, that keeps no entry for mailboxes nobody is writing."""

    def __init__(self) -> None:
        self._locks: PerLoop[weakref.WeakValueDictionary[str, asyncio.Lock]] = PerLoop(weakref.WeakValueDictionary)

    def lock(self, key: str) -> asyncio.Lock:
        locks = self._locks.get()
        found = locks.get(key)
        if found is None:
            found = locks[key] = asyncio.Lock()
        return found
