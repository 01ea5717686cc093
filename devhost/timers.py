"""Timer triggers on their NCRONTAB schedules.

One run at a time per function, and one host at a time per function (``devhost.singleton``: a blob lease
in the app's storage account, as the runtime's timer listener lock) however many hosts share the
account. One run at a time: an occurrence that falls
due while the previous run is still going starts when it ends, with ``past_due=True`` (the runtime's
meaning of past_due: the invocation is later than scheduled). ``run_on_startup`` runs once when the
host starts. Unlike the runtime, the local host keeps no schedule status across restarts, so
occurrences missed while it was stopped are not caught up.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import azure.functions as func

from devhost.functions import TimerFunction, invoke
from devhost.singleton import ListenerLock

log = logging.getLogger("devhost")

PAST_DUE_TOLERANCE_SECONDS = 1.0


async def run_timer(function: TimerFunction, stopping: asyncio.Event, time_limit: float | None = None,
                    lock: ListenerLock | None = None) -> None:
    """The schedule, while this host holds the function's listener lock (always, without a lock)."""
    if lock is None:
        await _schedule(function, stopping, time_limit)
    else:
        await lock.hold(lambda halt: _schedule(function, halt, time_limit), stopping)


async def _schedule(function: TimerFunction, stopping: asyncio.Event, time_limit: float | None) -> None:
    last: datetime | None = None
    if function.run_on_startup:
        now = datetime.now(UTC)
        await _fire(function, now, now, last, time_limit)
        last = now
    while not stopping.is_set():
        due = function.schedule.next_after(last or datetime.now(UTC))
        delay = (due - datetime.now(UTC)).total_seconds()
        if delay > 0:
            try:
                await asyncio.wait_for(stopping.wait(), delay)
                return  # stopping
            except TimeoutError:
                pass
        now = datetime.now(UTC)
        await _fire(function, due, now, last, time_limit)
        # An overrun fires the missed occurrence once (past due), then the schedule resumes from now.
        last = due if now - due < timedelta(seconds=PAST_DUE_TOLERANCE_SECONDS) else now


async def _fire(function: TimerFunction, due: datetime, now: datetime, last: datetime | None,
                time_limit: float | None) -> None:
    past_due = (now - due).total_seconds() > PAST_DUE_TOLERANCE_SECONDS
    status = {"Last": (last or datetime.min.replace(tzinfo=UTC)).isoformat(),
              "Next": function.schedule.next_after(due).isoformat(), "LastUpdated": now.isoformat()}
    request = func.timer.TimerRequest(past_due=past_due, schedule_status=status,
                                      schedule={"AdjustForDST": True})
    await invoke(function, request, f"schedule='{function.schedule.expression}' past_due={past_due}", time_limit)
