"""``python -m bench._chaos_host [devhost arguments]``: the local host with the chaos bench's kill points.

The chaos bench (``bench.chaos``) SIGKILLs the host from outside at random moments, but a random moment
rarely falls into the narrow gaps where a crash does the most damage. This launcher wraps a few of the app's
functions from outside, before ``function_app`` is imported, so that the process SIGKILLs itself at exactly
those points with a given probability — as a power cut would. Nothing here is part of the app.

``CHAOS_KILL_POINTS`` is a comma-separated list of ``point:probability``:

============== =====================================================================================
before_commit  a reconcile read Graph and computed its events, but wrote nothing
after_commit   the snapshot and the outbox rows are committed, the fan-out has not started
after_enqueue  a delivery message was queued; its outbox row is not marked ``fannedOut`` yet
after_post     a flow answered a delivery 2xx; the queue message is not settled yet
reminder_event a reminder's outbox event is created, its fan-out has not started (time-relative triggers)
reminder_done  a reminder was fired (or found stale); its due row is not deleted yet
============== =====================================================================================

``CHAOS_RECONCILE_LEASE_SECONDS`` scales the reconcile lease down (the app's is 60 s), so that Graph latency
longer than the lease costs seconds of bench time instead of minutes; ``CHAOS_STALE_PENDING_SECONDS`` likewise
the age at which the outbox sweep takes over an event a crash left un-fanned-out (the app's: 1 minute);
``CHAOS_FLOW_CACHE_SECONDS`` the flow cache of the delivery worker (the app's: 15 s), for the test of a flow
removed on another host (tests/e2e/test_multi_host.py).
"""

from __future__ import annotations

import os
import random
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from devhost.host import main

POINTS = ("before_commit", "after_commit", "after_enqueue", "after_post", "reminder_event", "reminder_done")


def parse_points(text: str) -> dict[str, float]:
    points: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, probability = item.partition(":")
        if name not in POINTS:
            raise SystemExit(f"CHAOS_KILL_POINTS: unknown point {name!r} (known: {', '.join(POINTS)})")
        points[name] = float(probability or 1)
    return points


def _maybe_die(points: dict[str, float], point: str) -> None:
    if random.random() < points.get(point, 0.0):
        sys.stderr.write(f"chaos: SIGKILL at {point}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _before(points: dict[str, float], point: str, func: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        _maybe_die(points, point)
        return await func(*args, **kwargs)
    return wrapper


def _after(points: dict[str, float], point: str, func: Callable[..., Awaitable[Any]],
           when: Callable[[Any], bool] = lambda result: True) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = await func(*args, **kwargs)
        if when(result):
            _maybe_die(points, point)
        return result
    return wrapper


def install(points: dict[str, float], lease_seconds: float | None, stale_pending_seconds: float | None,
            flow_cache_seconds: float | None = None) -> None:
    # The app's modules, imported before function_app so that its imports find the wrapped functions.
    from shared.messages import deliveries
    from shared.workers import delivery, outbox_sweep, reconcile
    from shared.workers import reminders as reminder_timer

    if flow_cache_seconds is not None:
        from cachetools import TTLCache

        from shared.records import flows

        flows.FLOW_CACHE_SECONDS = flow_cache_seconds
        flows._flow_cache = TTLCache(flows.FLOW_CACHE_SIZE, flow_cache_seconds)
    if lease_seconds is not None:
        reconcile.LEASE_SECONDS = lease_seconds
    if stale_pending_seconds is not None:
        outbox_sweep.STALE_PENDING = timedelta(seconds=stale_pending_seconds)
    if "before_commit" in points:
        reconcile.Reconciler.commit = _before(points, "before_commit", reconcile.Reconciler.commit)  # type: ignore[method-assign]
    if "after_commit" in points:
        reconcile.fan_out = _before(points, "after_commit", reconcile.fan_out)
    if "after_enqueue" in points:
        deliveries.enqueue = _after(points, "after_enqueue", deliveries.enqueue)
    if "reminder_event" in points:
        reminder_timer.fan_out = _before(points, "reminder_event", reminder_timer.fan_out)
    if "reminder_done" in points:
        reminder_timer._done = _before(points, "reminder_done", reminder_timer._done)
    if "after_post" in points:
        delivery.post = _after(points, "after_post", delivery.post,
                               when=lambda attempt: attempt.outcome == "delivered")


if __name__ == "__main__":
    lease, stale = os.environ.get("CHAOS_RECONCILE_LEASE_SECONDS"), os.environ.get("CHAOS_STALE_PENDING_SECONDS")
    flow_cache = os.environ.get("CHAOS_FLOW_CACHE_SECONDS")
    install(parse_points(os.environ.get("CHAOS_KILL_POINTS", "")), float(lease) if lease else None,
            float(stale) if stale else None, float(flow_cache) if flow_cache else None)
    sys.exit(main())
