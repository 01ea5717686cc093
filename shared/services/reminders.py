"""When the time-relative triggers are due: the due rows (``shared.records.reminders``) written from what the
app knows of each appointment's time, and the rule for an instant that has already passed.

*When an appointment is about to start* is due at start minus the flow's offset (5 minutes to 7 days), *When an
appointment has ended* at end plus it (0 to 7 days). The rows are written

- by the reconcile, before it commits a snapshot change (``before_commit``): for every appointment that is new
  or whose start or end moved, one row per time-relative flow of the mailbox; the rows of its old time (and those
  of an appointment that vanished) are deleted. Before the commit, so that the index is a superset: a crash
  after it leaves a row the timer checks against Graph, never a reminder without a row;
- by a registration (``schedule_flow``): the new flow's rows for the appointments the mailbox's snapshots hold;
- by the timer itself when Graph shows a time other than the row's (``due_reminder`` for the new time): the
  appointment moved and the reconcile has not seen it yet.

Booked or moved inside the window (the instant is already past when the app learns the appointment's time):
*about to start* fires **at once**, as long as the appointment has not started and the flow existed at that
instant (a staff reminder for a booking made ten minutes before its start is still worth sending); *has ended*
does **not** fire (an appointment entered after it ended is a record of the past, not news). ``ScheduledFor``
stays the nominal instant either way, so every derivation of one reminder has one key. A flow registered after
the instant never receives it, whether the app learned the time late or not.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.records import reconcile_state
from shared.records.flows import OFFSET_RANGES, Flow, FlowRegistry
from shared.records.reconcile_state import Times
from shared.records.reminders import DueReminder, delete, put

log = logging.getLogger(__name__)

STARTING, ENDED = "AppointmentStarting", "AppointmentEnded"
TRIGGERS = frozenset(OFFSET_RANGES)


def scheduled_instant(flow: Flow, start: datetime | None, end: datetime | None) -> datetime | None:
    """The instant ``flow`` is due for an appointment of these times (None without the time it needs)."""
    offset = timedelta(minutes=flow.offset_minutes or 0)
    if flow.trigger == STARTING:
        return start - offset if start is not None else None
    return end + offset if end is not None else None


def fires_late(flow: Flow, scheduled: datetime, start: datetime | None, now: datetime) -> bool:
    """The rule for an instant already past when the app learns the appointment's time (see the module)."""
    return flow.trigger == STARTING and start is not None and start > now and flow.created <= scheduled


def due_reminder(flow: Flow, appointment_id: str, times: Times, now: datetime) -> DueReminder | None:
    """The row of ``flow`` for an appointment of ``times`` learned ``now``; None when it is not to fire."""
    start, end = times
    scheduled = scheduled_instant(flow, start, end)
    if scheduled is None:
        return None
    if scheduled > now:
        fire_at = scheduled
    elif fires_late(flow, scheduled, start, now):
        fire_at = now
    else:
        return None
    return DueReminder(flow.mailbox, appointment_id, flow.webhook_id, flow.trigger, scheduled, fire_at)


def _rows_at(flows: list[Flow], appointment_id: str, times: Times, after: datetime) -> list[DueReminder]:
    """The rows ``flows`` had for an appointment of ``times`` that fire after ``after`` (to delete them)."""
    rows = []
    for flow in flows:
        scheduled = scheduled_instant(flow, *times)
        if scheduled is not None and scheduled > after:
            rows.append(DueReminder(flow.mailbox, appointment_id, flow.webhook_id, flow.trigger, scheduled, scheduled))
    return rows


async def before_commit(mailbox: str, operations: list[tuple[Any, ...]]) -> list[Flow] | None:
    """The reconcile's hook, before it commits ``operations``: rows for the appointments they add or move,
    rows of old times and vanished appointments deleted. Storage: nothing when no snapshot changes; else one
    query of the mailbox's flows, and with time-relative flows one of its snapshots' times (no payloads) and a
    write per (moved appointment, flow). Returns the mailbox's flows when it read them (fan-out after the commit
    uses them instead of reading them again), else None."""
    written, deleted = reconcile_state.snapshot_changes(operations)
    if not written and not deleted:
        return None
    every = await FlowRegistry.default().list_flows(mailbox)
    flows = [f for f in every if f.trigger in TRIGGERS]
    if not flows:
        return every
    old = await reconcile_state.snapshot_times(mailbox)
    now = datetime.now(UTC)
    new_rows: list[DueReminder] = []
    stale: list[DueReminder] = []
    for appointment_id, times in written.items():
        before = old.get(appointment_id)
        if before == times:
            continue  # its rows were written when it got these times (or fired since)
        if before is not None:
            stale += _rows_at(flows, appointment_id, before, now)
        new_rows += [r for r in (due_reminder(f, appointment_id, times, now) for f in flows) if r is not None]
    for appointment_id in deleted:
        if appointment_id in old:
            stale += _rows_at(flows, appointment_id, old[appointment_id], now)
    keep = {r.row_key for r in new_rows}
    await put(new_rows)
    await delete(r for r in stale if r.row_key not in keep)
    if new_rows or stale:
        log.info("reminders of %s: %d scheduled, %d withdrawn", mailbox, len(new_rows), len(stale),
                 extra={"mailbox": mailbox})
    return every


async def schedule_flow(flow: Flow) -> int:
    """A new time-relative flow's rows for the appointments the mailbox's snapshots hold (instants to come
    only: a flow never receives an instant that passed before it was registered). Returns how many."""
    if flow.trigger not in TRIGGERS:
        return 0
    now = datetime.now(UTC)
    times = await reconcile_state.snapshot_times(flow.mailbox)
    rows = [r for r in (due_reminder(flow, a, t, now) for a, t in times.items()) if r is not None]
    return await put(rows)
