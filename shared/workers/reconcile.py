"""The reconcile worker: from "something changed in this mailbox" to exact Created/Updated/Cancelled events.

A message on ``mailbox-changes`` (``shared.messages.mailbox_changes``) is only a hint. The worker
re-reads the appointments from Graph, compares them with the mailbox's **snapshot** and derives events:

- an appointment not in the snapshot → ``Created``;
- one whose content changed in a way a flow maker cares about (``appointment_data.content_fingerprint``:
  time, staff, customers, answers, service, notes, location, online link) → ``Updated``;
- one in the snapshot that Graph no longer has (cancelled or deleted) → ``Cancelled``, carrying the
  snapshot's full last data (brought up to the current contract when an earlier version stored it:
  ``appointment_data.upgrade_stored_payload``) and the cancel reason when we know one.

Snapshot changes and the outbox rows of the events they cause commit together, in Table transactions
of the mailbox partition, each also updating the mailbox's ``sync`` row under its ETag. So an event
exists exactly when the snapshot moved, and two workers can never both emit it: the second one's
transaction fails on the ETag and it starts over from the snapshot the first one wrote.

The rows it keeps are owned by ``shared.records.reconcile_state`` (and ``shared.records.outbox``).

Cost (Graph calls per change). A hint for one event of a mailbox whose horizon lists in one page
(``WHOLE_LISTING_MAX_PAGES``; the sync row's ``HorizonPages`` says how many pages its last whole listing
took) is reconciled over the whole horizon: one listing, then a GET by id of what is new or changed (the
listing omits customers and notes). Listing the whole horizon costs that one request, where reading the
event first to narrow the window costs one more (``GET /users/{id}/events/{id}``: a notification without
resource data names the event, not its time), and it covers every hint received before it. When that listing
finds nothing new, the hinted event may be beyond the horizon (booked years ahead): the reconcile then reads
it after all and compares a window around it. A larger mailbox reads the event and lists a narrow window
around it from the start. Hints received while a reconcile of the same mailbox runs are deferred and come
back as one full reconcile, which covers them all, so a burst of notifications costs a couple of Graph
listings, not one per hint. The business's services, staff and custom questions, which payloads name, are
kept ``shared.services.bookings.LOOKUP_CACHE_SECONDS`` and read again sooner only when an appointment names an
id they lack (a new service, staff member or question). The floor per change: the listing and the GET by id,
2 requests, plus 3 lookups per business per ``LOOKUP_CACHE_SECONDS``. Every Graph call goes through
``shared.services.bookings``.
A first reconcile after a subscription is created is a *baseline*: it records what exists without
emitting events, except for appointments created or changed after the subscription was made.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.adapters.monitoring import record_histogram, telemetry_context, track_event
from shared.adapters.settings import get_settings
from shared.contracts import events
from shared.contracts.appointment_changes import (
    content_fingerprint,
    is_current_payload,
    upgrade_stored_payload,
    with_change_details,
)
from shared.contracts.appointment_data import to_appointment_data
from shared.contracts.graph_times import parse_graph_datetime as graph_time
from shared.messages import mailbox_changes
from shared.messages.mailbox_changes import MailboxChangeMessage
from shared.records import outbox, reconcile_state
from shared.records.flows import Flow
from shared.records.reconcile_state import NO_LEASE, LeaseLost, Snapshot
from shared.services import calendar_changes, reminders
from shared.services.bookings import Bookings
from shared.services.graph_failures import GraphFailure
from shared.workers import delivery, renewal
from shared.workers.fan_out import fan_out

log = logging.getLogger(__name__)

# One reconcile per mailbox at a time. Longer than a reconcile normally takes; if one takes longer, another
# worker may take over and the first one's commit fails on the ETag (no duplicates, just wasted work).
LEASE_SECONDS = 60
# Graph may take a moment to show a change it has already notified: hints this close to a reconcile's
# start are not treated as covered by it.
COVERAGE_MARGIN_SECONDS = 2.0
# Graph throttling (429/503/504) or unreachable: the hint comes back as a full reconcile after Retry-After
# (bounded, jittered) without spending a dequeue attempt. After this many the periodic resync (every 6 hours)
# takes over.
THROTTLE_DELAY_CAP_SECONDS = 300
THROTTLE_DEFAULT_SECONDS = 10
MAX_THROTTLED_RETRIES = 60


# A change the delta check found before its notification came is only said to be unannounced (ChangeNotNotified)
# once it is older than Graph's documented maximum latency of calendar notifications, 3 minutes
# (https://learn.microsoft.com/en-us/graph/change-notifications-overview, "Latency"): younger, the notification may
# still be on its way.
UNANNOUNCED_GRACE = timedelta(minutes=3)


# A hint about one event lists the whole horizon when the mailbox's last whole listing took at most this
# many pages (else: the event's time, then a narrow window).
WHOLE_LISTING_MAX_PAGES = 1


@dataclass
class Plan:
    """What one reconcile will write: table operations and the events they carry."""

    operations: list[tuple[Any, ...]] = field(default_factory=list)  # Table transaction operations
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (event id, change type, appointment id)
    graph_calls: int = 0
    whole: bool = False  # compared the whole horizon (not a narrow window around the hinted events)
    listing_pages: int = 0  # requests the listing took


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _list_fingerprint(item: dict[str, Any]) -> str:
    """What the listing shows of an appointment, minus volatile fields: changes here mean 'look closer'."""
    kept = {k: v for k, v in item.items() if not k.startswith("@") and k not in ("lastUpdatedDateTime",)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _changed_in_listing(listing: list[dict[str, Any]], snapshots: dict[str, Snapshot],
                        ) -> tuple[list[tuple[dict[str, Any], str, Snapshot | None]], set[str]]:
    """The listed appointments that are new or whose listing changed (each with its listing's fingerprint and
    its snapshot), to read by id; and every appointment id listed."""
    seen: set[str] = set()
    changed: list[tuple[dict[str, Any], str, Snapshot | None]] = []
    for item in listing:
        appointment_id = item.get("id")
        if not appointment_id or appointment_id in seen:
            continue
        seen.add(appointment_id)
        list_fp = _list_fingerprint(item)
        old = snapshots.get(appointment_id)
        if old is not None and old.last_updated == str(item.get("lastUpdatedDateTime") or "") \
                and old.list_fingerprint == list_fp:
            continue  # unchanged: no GET by id
        changed.append((item, list_fp, old))
    return changed, seen


def _change_of_new(appointment: dict[str, Any], baseline_at: datetime | None) -> str | None:
    """The event of an appointment the snapshot lacks: ``Created``, except in a baseline, which announces only
    what was created (``Created``) or changed (``Updated``) after ``baseline_at``, and records the rest (None)."""
    if baseline_at is None:
        return "Created"
    created = graph_time(appointment.get("createdDateTime"))
    updated = graph_time(appointment.get("lastUpdatedDateTime"))
    if created is not None and created > baseline_at:
        return "Created"
    if updated is not None and updated > baseline_at:
        return "Updated"
    return None


class Reconciler:
    def __init__(self, mailbox: str, bookings: Bookings | None = None) -> None:
        self.mailbox = mailbox
        self.bookings = bookings or Bookings(mailbox)
        self.settings = get_settings()
        self.etag: str | None = None  # of the sync row, after our last committed batch
        self.flows: list[Flow] | None = None  # the mailbox's flows, when the commit's hook read them (for fan-out)

    @property
    def graph_calls(self) -> int:
        """Graph requests this reconcile made."""
        return self.bookings.calls

    # ---- Graph reads -------------------------------------------------------------------------------

    async def _window(self, message: MailboxChangeMessage, full: bool,
                      horizon_pages: int | None) -> tuple[datetime, datetime, bool, bool]:
        """The time window to compare, whether it is the full horizon, and whether that was chosen only
        because it is cheap (``horizon_pages``: how many pages the mailbox's last whole listing took, None if
        unknown), not because the hint needs it."""
        now = datetime.now(UTC)
        horizon = (now - timedelta(days=self.settings.resync_past_days),
                   now + timedelta(days=self.settings.resync_horizon_days))
        changes = message.get("changes") or []
        if full or not changes or any(c.get("changeType") == "deleted" for c in changes):
            return horizon[0], horizon[1], True, False  # a deleted event cannot tell us where it was
        if horizon_pages is not None and horizon_pages <= WHOLE_LISTING_MAX_PAGES:
            return horizon[0], horizon[1], True, True  # as cheap as reading the event, and it covers more
        starts, ends = [], []
        for change in changes:
            calendar_event = await self.bookings.event(change.get("eventId", ""))
            if calendar_event is None:
                return horizon[0], horizon[1], True, False  # gone already: look everywhere
            start, end = graph_time(calendar_event.get("start")), graph_time(calendar_event.get("end"))
            if start is None or end is None:
                return horizon[0], horizon[1], True, False
            starts.append(start)
            ends.append(end)
        return min(starts) - timedelta(minutes=1), max(ends) + timedelta(minutes=1), False, False

    async def _payload(self, appointment: dict[str, Any], cancel_reason: str = "") -> dict[str, Any]:
        lookups = await self.bookings.lookups_for(appointment)
        return dict(to_appointment_data(appointment, services=lookups["services"], staff=lookups["staff"],
                                        questions=lookups["questions"], cancel_reason=cancel_reason))

    # ---- the diff ---------------------------------------------------------------------------------

    def _event_ops(self, plan: Plan, change_type: str, appointment_id: str, payload: dict[str, Any],
                   version: str, detected_at: datetime, previous: dict[str, Any] | None = None) -> None:
        """The event's outbox row; an Updated event's payload says what changed since ``previous``."""
        eid = outbox.event_id(self.mailbox, appointment_id, change_type, version)
        payload = with_change_details(payload, previous)
        plan.operations.append(outbox.event_operation(self.mailbox, eid, change_type, appointment_id, payload,
                                                      detected_at))
        plan.events.append((eid, change_type, appointment_id))

    async def diff(self, message: MailboxChangeMessage, baseline_at: datetime | None,
                   horizon_pages: int | None = None) -> Plan:
        """Read Graph, compare with the snapshot, and return what to write. No writes here."""
        full = bool(message.get("fullResync")) or baseline_at is not None
        start, end, whole, shortcut = await self._window(message, full, horizon_pages)
        plan = await self._compare(start, end, whole, baseline_at)
        if shortcut and not plan.events:
            # The hinted event may lie beyond the horizon (booked years ahead), where no whole listing looks:
            # read it and compare a window around it, as a larger mailbox would. Costs a GET when a hint
            # brings nothing new (a repeated notification); never loses a far-off booking.
            narrow = await self.diff(message, baseline_at, None)
            if narrow.events:
                return narrow
            plan.graph_calls = self.graph_calls
        return plan

    async def _compare(self, start: datetime, end: datetime, whole: bool, baseline_at: datetime | None) -> Plan:
        """List ``start``..``end``, read what is new or changed, and diff it against the snapshots."""
        snapshots = await reconcile_state.snapshots(self.mailbox)
        listing, pages = await self.bookings.calendar_view(start, end)
        plan = Plan(whole=whole, listing_pages=pages)
        now = datetime.now(UTC)
        changed, seen = _changed_in_listing(listing, snapshots)
        # The listing omits customers and notes: read new or changed appointments in full.
        fulls = await asyncio.gather(*(self.bookings.appointment(item["id"]) for item, _, _ in changed))
        for (item, list_fp, old), full_item in zip(changed, fulls, strict=True):
            if full_item is not None:  # else vanished between the listing and now: the next reconcile sees it
                await self._diff_read(plan, (item["id"], full_item), list_fp, old, baseline_at, now)
        unlisted = self._unlisted(plan, snapshots, seen, (start, end), whole, now)
        await self._cancel_vanished(plan, unlisted, now)
        plan.graph_calls = self.graph_calls
        return plan

    async def _diff_read(self, plan: Plan, read: tuple[str, dict[str, Any]], list_fp: str, old: Snapshot | None,
                         baseline_at: datetime | None, now: datetime) -> None:
        """The new snapshot of an appointment read in full (its id and Graph's answer), and its event when a flow
        maker would see a change."""
        appointment_id, appointment = read
        fingerprint = content_fingerprint(appointment)
        if old is not None and old.fingerprint == fingerprint:
            # Touched, but nothing a flow maker would see: no event. A payload stored by an earlier version
            # is re-mapped from what we just read (so its Cancelled event will be current); the fingerprint
            # is the same either way, so an upgrade does not make appointments look updated.
            kept = old.payload if is_current_payload(old.payload) else await self._payload(appointment)
            plan.operations.append(reconcile_state.snapshot_operation(self.mailbox, appointment, fingerprint,
                                                                      list_fp, kept))
            return
        payload = await self._payload(appointment)
        plan.operations.append(reconcile_state.snapshot_operation(self.mailbox, appointment, fingerprint, list_fp,
                                                                  payload))
        change_type = "Updated" if old is not None else _change_of_new(appointment, baseline_at)
        if change_type is None:
            return  # existed before the flows did: recorded, not announced
        # The version names this exact state: A→B→A yields two distinct Updated events, not one.
        version = f"{fingerprint}@{appointment.get('lastUpdatedDateTime') or ''}"
        self._event_ops(plan, change_type, appointment_id, payload, version, now,
                        old.payload if change_type == "Updated" and old is not None else None)

    def _unlisted(self, plan: Plan, snapshots: dict[str, Snapshot], seen: set[str],
                  window: tuple[datetime, datetime], whole: bool, now: datetime) -> list[Snapshot]:
        """The snapshots the listing should have shown but did not. Those of the past that a whole listing
        no longer covers are deleted."""
        start, end = window
        unlisted: list[Snapshot] = []
        for appointment_id, old in snapshots.items():
            if appointment_id in seen:
                continue
            in_window = old.start is None or ((old.end or old.start) >= start and old.start <= end)
            if not in_window:
                if whole and (old.end or old.start or now) < start:
                    plan.operations.append(reconcile_state.delete_snapshot_operation(self.mailbox, appointment_id))
                continue  # outside a narrow window: not evidence of anything
            unlisted.append(old)
        return unlisted

    async def _cancel_vanished(self, plan: Plan, unlisted: list[Snapshot], now: datetime) -> None:
        """Not listed any more: cancelled or deleted (404: a Cancelled event), or moved out of the window."""
        stills = await asyncio.gather(*(self.bookings.appointment(old.appointment_id) for old in unlisted))
        for old, still in zip(unlisted, stills, strict=True):
            appointment_id = old.appointment_id
            if still is not None:
                continue  # moved out of the window; a later reconcile with the right window will see it
            reason, cancelled_by = await reconcile_state.cancellation(self.mailbox, appointment_id)
            # The last state we saw; one stored before AppointmentId existed gets it (and Graph's ids) here.
            payload = upgrade_stored_payload(old.payload, appointment_id)
            if reason:
                payload["CancelReason"], payload["CancelledBy"] = reason, cancelled_by
                plan.operations.append(reconcile_state.delete_cancel_reason_operation(self.mailbox, appointment_id))
            plan.operations.append(reconcile_state.delete_snapshot_operation(self.mailbox, appointment_id))
            self._event_ops(plan, "Cancelled", appointment_id, payload, f"{old.fingerprint}@{old.last_updated}", now)

    # ---- commit -----------------------------------------------------------------------------------

    async def commit(self, plan: Plan, etag: str, final: dict[str, Any]) -> str:
        """Write the plan in transactions within Table storage's limits (``reconcile_state.transactions``: an
        appointment's snapshot and event are never split), each moving the sync row under its ETag. Should
        storage refuse an appointment's rows anyway, the others are stored and that one is left out (error
        log, ``AppointmentNotStored``) for the next reconcile to try again: its snapshot did not move."""
        batches = reconcile_state.transactions(plan.operations)
        # The time-relative triggers' due rows; the flows it reads (after the events were derived) serve fan-out.
        self.flows = await reminders.before_commit(self.mailbox, plan.operations)
        if plan.events:
            await outbox.before_writing(self.mailbox)  # the outbox sweep's index first: it is a superset
        for index, batch in enumerate(batches):
            # Each batch but the last also extends the lease: a large plan must not outlive it.
            more = {"LeaseUntil": datetime.now(UTC) + timedelta(seconds=LEASE_SECONDS)}
            etag, refusals = await reconcile_state.commit_isolating(self.mailbox, batch, etag,
                                                                    final if index == len(batches) - 1 else more)
            self.etag = etag
            for appointment_id, refused in refusals:
                plan.events = [event for event in plan.events if event[2] != appointment_id]
                log.error("storage refused the rows of appointment %s of %s (%s); its mailbox's other changes are "
                          "stored, it is tried again by the next reconcile", appointment_id, self.mailbox,
                          refused, extra={"mailbox": self.mailbox})
                track_event(events.APPOINTMENT_NOT_STORED, mailbox=self.mailbox, appointmentId=appointment_id,
                            errorCode=refused.code, status=refused.status)
        return etag


async def _defer(message: MailboxChangeMessage, seconds: float) -> None:
    """Come back later — as a full reconcile: it then covers every hint that waited with this one, so a
    burst costs one narrow and one full reconcile instead of one per hint."""
    later: MailboxChangeMessage = {**message, "fullResync": True}
    await mailbox_changes.enqueue(later, delay_seconds=max(1, int(seconds)))


async def _after_throttling(message: MailboxChangeMessage, error: GraphFailure) -> str:
    """Graph said "later" (or could not be reached): the hint comes back when it said, as a full reconcile."""
    attempt = int(message.get("attempt") or 0)
    mailbox = message["mailbox"]
    if attempt >= MAX_THROTTLED_RETRIES:
        log.error("reconcile of %s gave up after %d throttled attempts (Graph %s %s); the periodic resync "
                  "covers the mailbox", mailbox, attempt, error.graph_status, error.graph_code,
                  extra={"mailbox": mailbox})
        return "throttled, left to the resync"
    wait = error.retry_after if error.retry_after is not None else THROTTLE_DEFAULT_SECONDS * 2 ** min(attempt, 5)
    delay = min(max(1.0, wait), THROTTLE_DELAY_CAP_SECONDS)
    delay += random.uniform(0, delay / 2)  # noqa: S311 - spread the mailboxes a storm throttled together
    later: MailboxChangeMessage = {**message, "fullResync": True, "attempt": attempt + 1}
    await mailbox_changes.enqueue(later, delay_seconds=round(delay))
    log.warning("Graph throttled the reconcile of %s (%s %s); again in %.0f s (attempt %d)", mailbox,
                error.graph_status, error.graph_code, delay, attempt + 1, extra={"mailbox": mailbox})
    return "throttled"


class _lease_kept:  # used as ``async with _lease_kept(worker)``
    """Renew the reconcile lease every third of its length while the body runs; the latest ETag is kept in
    ``worker.etag``. Losing the lease (another worker took over) cancels the body with ``LeaseLost``."""

    def __init__(self, worker: Reconciler) -> None:
        self.worker = worker
        self.lost = False
        self._task: asyncio.Task[None] | None = None
        self._body: asyncio.Task[Any] | None = None

    async def _renew(self) -> None:
        lease = timedelta(seconds=LEASE_SECONDS)
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            etag = await reconcile_state.renew_lease(self.worker.mailbox, self.worker.etag or "", lease)
            if etag is None:
                self.lost = True
                if self._body is not None:
                    self._body.cancel()
                return
            self.worker.etag = etag

    async def __aenter__(self) -> _lease_kept:
        self._body = asyncio.current_task()
        self._task = asyncio.create_task(self._renew())
        return self

    async def __aexit__(self, kind: Any, error: Any, traceback: Any) -> bool:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        except Exception as renew_error:  # storage failed while renewing: the commit's ETag decides
            log.warning("could not renew the reconcile lease of %s (%s)", self.worker.mailbox,
                        type(renew_error).__name__)
        if self.lost:
            if self._body is not None:
                self._body.uncancel()  # the cancellation was ours, to stop the body: it is over now
            raise LeaseLost(self.worker.mailbox)
        return False


async def reconcile(message: MailboxChangeMessage, *, retried: bool = False) -> str:
    """Handle one hint. Returns what happened: covered | deferred | reconciled | unwatched | throttled | lease
    lost (for logs and tests). ``retried``: the queue offers the message again after a failed run."""
    with telemetry_context(mailbox=message["mailbox"].lower(), correlationId=message.get("correlationId") or None):
        if retried:
            await _fan_out_left_pending(message["mailbox"].lower())
        return await _reconcile(message)


async def _fan_out_left_pending(mailbox: str) -> None:
    """A failed run may have committed events and then failed to fan them out (storage gone between the
    two). The retry finds the snapshot already moved, so it derives nothing; fan those rows out now rather
    than when the outbox sweep finds them minutes later. One read of the mailbox's outbox rows, on retries
    only. A row another instance is fanning out at this moment gets its messages twice, under the same
    idempotency keys."""
    left = await outbox.pending_events(mailbox)
    if left:
        log.warning("reconcile of %s: %d event(s) committed by an earlier run were never fanned out", mailbox,
                    len(left), extra={"mailbox": mailbox})
        await fan_out(mailbox, left, attempt_now=delivery.attempt)


async def _reconcile(message: MailboxChangeMessage) -> str:
    mailbox = message["mailbox"].lower()
    started_clock = time.perf_counter()
    worker = Reconciler(mailbox)
    received = mailbox_changes.received_at(message)
    full = bool(message.get("fullResync"))
    row = await reconcile_state.sync_row(mailbox)
    if reconcile_state.is_unwatched(row):
        # The last flow went after this hint was queued: what it says is nobody's event any more.
        return "unwatched"
    covered_up_to = row.get("CoveredUpTo")
    if covered_up_to is not None and received < covered_up_to - timedelta(seconds=COVERAGE_MARGIN_SECONDS) \
            and row.get("BaselineDone"):
        return "covered"
    now = datetime.now(UTC)
    lease_until = row.get("LeaseUntil")
    if lease_until is not None and lease_until > now:
        # Someone is reconciling this mailbox: come back when they are done, then this is covered.
        await _defer(message, min((lease_until - now).total_seconds(), 5) + random.uniform(0.5, 1.5))  # noqa: S311
        return "deferred"
    etag = await reconcile_state.take_lease(mailbox, row, now, timedelta(seconds=LEASE_SECONDS))
    if etag is None:
        # Another worker took the mailbox since we read it: the same as finding it busy. (Trying again at
        # once made a burst of hints cost a listing each whenever the winner finished before they looked.)
        await _defer(message, 1 + random.uniform(0.5, 1.5))  # noqa: S311
        return "deferred"
    baseline_at = None if row.get("BaselineDone") else (row.get("BaselineAt") or now)
    worker.etag = etag
    try:
        async with _lease_kept(worker):  # a long listing must not lose the mailbox to another worker
            plan = await worker.diff(message, baseline_at, _int_or_none(row.get("HorizonPages")))
        etag = worker.etag
        final: dict[str, Any] = {"LeaseUntil": NO_LEASE, "BaselineDone": True}
        if plan.whole:
            # Only a look at the whole horizon covers hints about other events; a narrow one covers its own.
            final["CoveredUpTo"] = now
            final["HorizonPages"] = plan.listing_pages
        await worker.commit(plan, etag, final)
    except LeaseLost:
        log.warning("reconcile of %s lost its lease; the other worker's result stands", mailbox,
                    extra={"mailbox": mailbox})
        return "lease lost"
    except GraphFailure as error:
        await reconcile_state.release_lease(mailbox, worker.etag or etag)
        if not error.unreachable_or_throttled:
            raise
        return await _after_throttling(message, error)
    except BaseException:
        # Graph or storage failed: free the mailbox for the retry of this message (the runtime retries it)
        # instead of making every hint wait out the lease.
        await reconcile_state.release_lease(mailbox, worker.etag or etag)
        raise
    record_histogram(events.MAILBOX_RECONCILED_MS, round((time.perf_counter() - started_clock) * 1000),
                     mailbox=mailbox, fullResync="true" if full else "false")
    if plan.events:  # one delivery message per matching flow
        await fan_out(mailbox, [eid for eid, _, _ in plan.events], attempt_now=delivery.attempt, flows=worker.flows)
        if message.get("reason") == calendar_changes.REASON:
            await _unannounced(message, len(plan.events), datetime.now(UTC) - received)
    return "reconciled"


async def _unannounced(message: MailboxChangeMessage, count: int, age: timedelta) -> None:
    """A delta check's hint made events: no notification had announced those changes (one that had would have
    been reconciled first and covered this hint), or not yet. The subscription is checked at once either way; a
    change older than Graph's documented notification latency (``UNANNOUNCED_GRACE``) is said loudly."""
    mailbox = message["mailbox"].lower()
    if age >= UNANNOUNCED_GRACE:
        log.warning("the delta check found %d change(s) of %s that no notification announced; checking its "
                    "subscription", count, mailbox, extra={"mailbox": mailbox})
        track_event(events.CHANGE_NOT_NOTIFIED, logging.WARNING, mailbox=mailbox, itemCount=count)
    try:
        await renewal.check_after_unannounced_change(mailbox)
    except Exception as error:  # storage: the renewal sweep's audit still finds a removed subscription
        log.warning("could not queue the subscription check of %s (%s)", mailbox, type(error).__name__,
                    extra={"mailbox": mailbox})


async def handle_message(msg: Any) -> None:
    """Queue trigger entry for ``mailbox-changes``: a bundle is split first, a message is reconciled."""
    try:
        message = mailbox_changes.parse(msg.get_body())
    except ValueError as error:
        log.error("dropped a malformed mailbox-change message: %s", error)
        return
    if mailbox_changes.is_bundle(message):
        count = await mailbox_changes.split_bundle(message)  # type: ignore[arg-type]
        log.info("split a bundle of change hints into %d mailbox messages", count)
        return
    outcome = await reconcile(message, retried=(msg.dequeue_count or 1) > 1)  # type: ignore[arg-type]
    log.info("reconcile %s: %s", message["mailbox"], outcome,
             extra={"mailbox": message["mailbox"], "correlationId": message.get("correlationId", "")})
