"""The time-relative triggers' timer (``REMINDER_SCHEDULE``, every minute by default): fire what is due.

Each run reads the due rows (``shared.records.reminders.due_by``) up to one period ahead (``lookahead``), so a
row is fired at its instant, not up to a period after it: a row already due fires at once, a later one when
its instant comes, within the run. Firing one row (``fire``):

1. the flow (``flows.flow_for_delivery``): removed, or registered after the instant → the row goes;
2. the appointment, read from Graph now (``shared.services.bookings``): what the flow receives is its state when
   the reminder fires, and an appointment Graph no longer has (cancelled) never fires. Graph throttled or
   unreachable → the row stays and the next run tries again (it goes out as soon as Graph answers, still
   with its ``ScheduledFor``);
3. its time: another instant than the row's → the appointment moved; the row for the new time is written
   (``services.reminders.due_reminder``, the late rule included) and this one goes. The old time never fires;
4. the flow's service and staff filters (an event filtered out is no delivery);
5. the event: an outbox row for the one flow (``outbox.put_reminder_event``), created once — its id, and so the
   delivery's idempotency key, is derived from (appointment, flow, scheduled instant) — then fan-out and the
   first attempt, as a reconcile's events go (``fan_out(..., attempt_now=delivery.attempt)``). Last, the due row
   is deleted.

A crash anywhere leaves the due row (the next run fires it: the outbox row exists, fan-out sends only a row
still pending) or a pending outbox row (the outbox sweep sends it): late, never lost, never under a second key.
A row that cannot fire for ``DELIVERY_RETRY_HOURS`` after its instant (Graph refusing for good) is given up
with an error in the log. Payload: ``AppointmentData`` of the appointment now, plus ``ScheduledFor``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.adapters.settings import get_settings
from shared.contracts import ncrontab
from shared.contracts.appointment_data import to_appointment_data
from shared.contracts.graph_times import parse_graph_datetime
from shared.records import flows, outbox
from shared.records.mailbox import iso
from shared.records.reminders import DueReminder, delete, due_by, put
from shared.services import reminders
from shared.services.bookings import Bookings
from shared.services.graph_failures import GraphFailure
from shared.workers import delivery
from shared.workers.fan_out import fan_out

log = logging.getLogger(__name__)

FIRE_CONCURRENCY = 16
MAX_PER_RUN = 5_000  # a backlog (after an outage) is worked off over several runs, earliest minutes first
LOOKAHEAD_CAP = timedelta(minutes=5)
# While a run waits for rows due later in its period, it reads the range again this often, for rows written after
# it began that are due before the next run (a booking a minute before its instant, one fired at once by the late
# rule): they wait seconds, not a period. A run with nothing (left) to wait for ends at once, so an idle minute costs
# one query and milliseconds of execution, not a minute of it: a row written then waits for the next run.
REREAD_SECONDS = 10.0
CHANGE_TYPES = {"AppointmentStarting": "Starting", "AppointmentEnded": "Ended"}


def lookahead(now: datetime) -> timedelta:
    """How far ahead a run fires: the timer's period (at most ``LOOKAHEAD_CAP``), so no instant waits for a run."""
    period = ncrontab.shortest_period(get_settings().reminder_schedule, now)
    return min(period or LOOKAHEAD_CAP, LOOKAHEAD_CAP)


async def run() -> Counter[str]:
    """One timer run: fire every row due now or within ``lookahead`` (the range read again every ``REREAD_SECONDS``
    while rows wait for their instant; the run ends when none is left). Returns what happened to each row."""
    now = datetime.now(UTC)
    horizon = now + lookahead(now)
    outcomes: Counter[str] = Counter()
    limit = asyncio.Semaphore(FIRE_CONCURRENCY)
    readers: dict[str, Bookings] = {}

    async def one(row: DueReminder) -> None:
        wait = (row.fire_at - datetime.now(UTC)).total_seconds()
        if wait > 0:
            await asyncio.sleep(wait)
        async with limit:
            reader = readers.setdefault(row.mailbox, Bookings(row.mailbox))
            try:
                outcomes[await fire(row, reader)] += 1
            except Exception:
                outcomes[await _failed(row)] += 1

    started = time.monotonic()
    seen: set[tuple[str, str]] = set()  # rows taken by this run (one a Graph failure left is for the next run)
    tasks: list[asyncio.Task[None]] = []
    try:
        while True:
            for row in await due_by(horizon, MAX_PER_RUN):
                if row.keys not in seen and len(seen) < MAX_PER_RUN:
                    seen.add(row.keys)
                    tasks.append(asyncio.ensure_future(one(row)))
            pending = [t for t in tasks if not t.done()]
            if not pending or (horizon - datetime.now(UTC)).total_seconds() <= REREAD_SECONDS:
                break
            await asyncio.wait(pending, timeout=REREAD_SECONDS)
    finally:  # storage failing a re-read: what was taken still fires
        await asyncio.gather(*tasks)
    if seen:
        log.info("reminders: %d row(s) due by %s in %.1f s: %s", len(seen), iso(horizon), time.monotonic() - started,
                 dict(outcomes))
    return outcomes


async def fire(row: DueReminder, reader: Bookings) -> str:
    """Fire one due row (see the module). Returns the outcome: fired | flow removed | flow newer | cancelled |
    moved | filtered out | later | given up."""
    flow = await flows.flow_for_delivery(row.mailbox, row.flow_id)
    if flow is None or flow.trigger != row.trigger:
        return await _done(row, "flow removed")
    if flow.created > row.scheduled_for:
        return await _done(row, "flow newer")
    try:
        appointment = await reader.appointment(row.appointment_id)
    except GraphFailure as error:
        return await _graph_failed(row, error)
    if appointment is None:
        return await _done(row, "cancelled")
    now = datetime.now(UTC)
    times = (parse_graph_datetime(appointment.get("startDateTime")),
             parse_graph_datetime(appointment.get("endDateTime")))
    if reminders.scheduled_instant(flow, *times) != row.scheduled_for:
        moved = reminders.due_reminder(flow, row.appointment_id, times, now)
        if moved is not None:
            await put([moved])
        return await _done(row, "moved")
    payload = await _payload(reader, appointment, row)
    services, staff = outbox.filter_keys_of(payload)
    if flow.filtered and not flow.matches(services, staff):
        return await _done(row, "filtered out")
    change_type = CHANGE_TYPES[row.trigger]
    event = outbox.event_id(row.mailbox, row.appointment_id, change_type, f"{row.flow_id}@{iso(row.scheduled_for)}")
    await outbox.put_reminder_event(row.mailbox, event, change_type, row.flow_id, payload, row.scheduled_for)
    await fan_out(row.mailbox, [event], attempt_now=delivery.attempt)
    return await _done(row, "fired")


async def _payload(reader: Bookings, appointment: dict[str, Any], row: DueReminder) -> dict[str, Any]:
    """The appointment as the flow receives it: ``AppointmentData`` now, and the instant the reminder was due."""
    lookups = await reader.lookups_for(appointment)
    payload = dict(to_appointment_data(appointment, services=lookups["services"], staff=lookups["staff"],
                                       questions=lookups["questions"]))
    payload["ScheduledFor"] = iso(row.scheduled_for)
    return payload


async def _graph_failed(row: DueReminder, error: GraphFailure) -> str:
    """Graph did not answer the read: the row stays for the next run, unless it has been failing for longer
    than deliveries are retried."""
    if _too_old(row) and not error.unreachable_or_throttled:
        log.error("reminder %s of flow %s (appointment %s of %s) given up: Graph kept refusing the read (%s %s)",
                  iso(row.scheduled_for), row.flow_id, row.appointment_id, row.mailbox, error.graph_status,
                  error.graph_code, extra={"mailbox": row.mailbox})
        return await _done(row, "given up")
    log.warning("reminder %s of flow %s: Graph %s %s; the next run tries again", iso(row.scheduled_for),
                row.flow_id, error.graph_status, error.graph_code, extra={"mailbox": row.mailbox})
    return "later"


def _too_old(row: DueReminder) -> bool:
    """Failing for longer than a delivery is retried: nothing unrecoverable is retried forever."""
    return datetime.now(UTC) - row.scheduled_for > timedelta(hours=get_settings().delivery_retry_hours)


async def _failed(row: DueReminder) -> str:
    """Firing the row raised (storage, or an appointment the app cannot map): the next run tries again; a row
    failing that long is given up, loudly."""
    if _too_old(row):
        log.exception("reminder %s of flow %s (appointment %s of %s) given up: it kept failing",
                      iso(row.scheduled_for), row.flow_id, row.appointment_id, row.mailbox)
        try:
            return await _done(row, "given up")
        except Exception:
            return "failed"
    log.exception("reminder %s of flow %s (appointment %s) failed; the next run tries again",
                  iso(row.scheduled_for), row.flow_id, row.appointment_id)
    return "failed"


async def _done(row: DueReminder, outcome: str) -> str:
    await delete([row])
    return outcome
