"""The reconcile worker: from "something changed in this mailbox" to exact Created/Updated/Cancelled events.

A message on ``mailbox-changes`` (contract in ``shared.notifications``) is only a hint. The worker
re-reads the appointments from Graph, compares them with the mailbox's **snapshot** and derives events:

- an appointment not in the snapshot → ``Created``;
- one whose content changed in a way a flow maker cares about (``appointment_data.content_fingerprint``:
  time, staff, customers, answers, service, notes, location, online link) → ``Updated``;
- one in the snapshot that Graph no longer has (cancelled or deleted) → ``Cancelled``, carrying the
  snapshot's full last data and the cancel reason when we know one.

Snapshot changes and the outbox rows of the events they cause commit together, in Table transactions
of the mailbox partition, each also updating the mailbox's ``sync`` row under its ETag. So an event
exists exactly when the snapshot moved, and two workers can never both emit it: the second one's
transaction fails on the ETag and it starts over from the snapshot the first one wrote.

Rows (mailbox partition of ``MAILBOX_TABLE``)
---------------------------------------------
=====================  ================================================================================
``sync``               ``LeaseUntil`` (one reconcile per mailbox at a time), ``CoveredUpTo`` (start time
                       of the last completed whole-horizon reconcile: hints received before it are
                       already covered), ``BaselineAt`` / ``BaselineDone``
``snap:<apptId>``      ``Fingerprint``, ``LastUpdated``, ``ListFingerprint``, ``Start``/``End``, ``Payload``
                       (AppointmentData JSON, chunked under the 64 KiB property limit)
``cancelreason:<id>``  a reason given through our cancel API, until the Cancelled event carries it
``outbox:<eventId>``   see ``shared.outbox``
=====================  ================================================================================

Cost: a hint for one event reads a narrow window around it. Hints received while a reconcile of the same
mailbox runs are deferred and come back as one full reconcile, which covers them all, so a burst of
notifications costs a couple of Graph listings, not one per hint.
A first reconcile after a subscription is created is a *baseline*: it records what exists without
emitting events, except for appointments created or changed after the subscription was made.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode

from shared import delivery, events
from shared.appointment_data import content_fingerprint, to_appointment_data
from shared.appointment_data import parse_graph_datetime as graph_time
from shared.graph import Graph, GraphError, get_graph
from shared.monitoring import track_event
from shared.notifications import MailboxChangeMessage, change_message, enqueue_change, is_bundle, split_bundle
from shared.outbox import TRIGGER_OF_CHANGE, event_id, outbox_row_key, payload_properties, read_payload
from shared.registrations import QUOTA_ROW
from shared.settings import get_settings
from shared.store import MAILBOX_CHANGES_QUEUE, MAILBOX_TABLE, get_store

log = logging.getLogger(__name__)

SYNC_ROW = "sync"
SNAPSHOT_PREFIX = "snap:"
SNAPSHOT_PREFIX_END = "snap;"
CANCEL_REASON_PREFIX = "cancelreason:"
# One reconcile per mailbox at a time. Longer than a reconcile normally takes; if one takes longer, another
# worker may take over and the first one's commit fails on the ETag (no duplicates, just wasted work).
LEASE_SECONDS = 60
MAILBOX_CONCURRENCY = 4  # Graph (Outlook) serves at most 4 concurrent requests per app and mailbox
NO_LEASE = datetime(1970, 1, 1, tzinfo=UTC)
RELEASE_RETRY_DELAYS = (0.5, 1, 2, 4, 8)  # a merge cannot remove a property; an expired lease is no lease
# Graph may take a moment to show a change it has already notified: hints this close to a reconcile's
# start are not treated as covered by it.
COVERAGE_MARGIN_SECONDS = 2.0
MAX_OPERATIONS_PER_TRANSACTION = 99  # + the sync row = 100, Table storage's limit (Azurite crashes above it)


LOOKUP_CACHE_SECONDS = 60
_lookup_cache: dict[str, tuple[dict[str, Any], float]] = {}


class LeaseLost(Exception):
    """Another worker took the mailbox over (our lease ran out); our uncommitted work is void."""


@dataclass
class Snapshot:
    appointment_id: str
    fingerprint: str
    last_updated: str
    list_fingerprint: str
    start: datetime | None
    end: datetime | None
    payload: dict[str, Any]

    @classmethod
    def from_entity(cls, entity: Any) -> Snapshot:
        return cls(entity["AppointmentId"], entity.get("Fingerprint", ""), entity.get("LastUpdated", ""),
                   entity.get("ListFingerprint", ""), entity.get("Start"), entity.get("End"), read_payload(entity))


@dataclass
class Plan:
    """What one reconcile will write: table operations and the events they carry."""

    operations: list[tuple[Any, ...]] = field(default_factory=list)  # Table transaction operations
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (event id, change type, appointment id)
    graph_calls: int = 0
    whole: bool = False  # compared the whole horizon (not a narrow window around the hinted events)


def _list_fingerprint(item: dict[str, Any]) -> str:
    """What the listing shows of an appointment, minus volatile fields: changes here mean 'look closer'."""
    import hashlib

    kept = {k: v for k, v in item.items() if not k.startswith("@") and k not in ("lastUpdatedDateTime",)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:32]


class Reconciler:
    def __init__(self, mailbox: str, graph: Graph | None = None) -> None:
        self.mailbox = mailbox
        self.table = get_store().table(MAILBOX_TABLE)
        self.graph = graph or get_graph()
        self.settings = get_settings()
        self._lookups: dict[str, Any] | None = None
        self._concurrency = asyncio.Semaphore(MAILBOX_CONCURRENCY)
        self.etag: str | None = None  # of the sync row, after our last committed batch
        self.graph_calls = 0

    # ---- the sync row: lease and coverage ------------------------------------------------------

    async def _sync_row(self) -> Any:
        try:
            return await self.table.get_entity(self.mailbox, SYNC_ROW)
        except ResourceNotFoundError:
            try:
                await self.table.create_entity({"PartitionKey": self.mailbox, "RowKey": SYNC_ROW,
                                                "BaselineDone": False, "BaselineAt": datetime.now(UTC)})
            except ResourceExistsError:
                pass
            return await self.table.get_entity(self.mailbox, SYNC_ROW)

    async def _take_lease(self, row: Any, now: datetime) -> str | None:
        try:
            result = await self.table.update_entity(
                {"PartitionKey": self.mailbox, "RowKey": SYNC_ROW, "LeaseUntil": now + timedelta(seconds=LEASE_SECONDS),
                 "StartedAt": now},
                mode=UpdateMode.MERGE, etag=row.metadata["etag"], match_condition=MatchConditions.IfNotModified)
        except HttpResponseError as error:
            if error.status_code == 412:
                return None
            raise
        return result["etag"]

    async def release_lease(self, etag: str) -> None:
        """Best effort, retried briefly: storage that just failed us is often back within seconds."""
        for delay in RELEASE_RETRY_DELAYS:
            try:
                await self.table.update_entity(
                    {"PartitionKey": self.mailbox, "RowKey": SYNC_ROW, "LeaseUntil": NO_LEASE},
                    mode=UpdateMode.MERGE, etag=etag, match_condition=MatchConditions.IfNotModified)
                return
            except HttpResponseError as error:
                if error.status_code in (404, 412):
                    return  # gone, or someone else's lease now
                last = error
            except Exception as error:
                last = error
            await asyncio.sleep(delay)
        # Still down: the lease expires by itself after LEASE_SECONDS; hints wait (deferred), none are lost.
        log.warning("could not release the reconcile lease of %s (%s)", self.mailbox, type(last).__name__)

    # ---- Graph reads -------------------------------------------------------------------------------

    async def _window(self, message: MailboxChangeMessage, full: bool) -> tuple[datetime, datetime, bool]:
        """The time window to compare, and whether it is the full horizon."""
        now = datetime.now(UTC)
        horizon = (now - timedelta(days=self.settings.resync_past_days),
                   now + timedelta(days=self.settings.resync_horizon_days))
        changes = message.get("changes") or []
        if full or not changes or any(c.get("changeType") == "deleted" for c in changes):
            return horizon[0], horizon[1], True  # a deleted event cannot tell us where it was
        starts, ends = [], []
        for change in changes:
            try:
                self.graph_calls += 1
                calendar_event = await self.graph.get_event(self.mailbox, change.get("eventId", ""))
            except GraphError as error:
                if error.status == 404:
                    return horizon[0], horizon[1], True  # gone already: look everywhere
                raise
            start, end = graph_time(calendar_event.get("start")), graph_time(calendar_event.get("end"))
            if start is None or end is None:
                return horizon[0], horizon[1], True
            starts.append(start)
            ends.append(end)
        return min(starts) - timedelta(minutes=1), max(ends) + timedelta(minutes=1), False

    async def _lookups_for_mapping(self) -> dict[str, Any]:
        """Services, staff and custom questions of the business, which payloads name. They change rarely,
        so a worker keeps them for ``LOOKUP_CACHE_SECONDS``: a busy mailbox costs 3 Graph listings a minute
        for them, not 3 per change."""
        if self._lookups is None:
            cached = _lookup_cache.get(self.mailbox)
            if cached is not None and cached[1] > time.monotonic():
                self._lookups = cached[0]
            else:
                self.graph_calls += 3
                services, staff, questions = await asyncio.gather(
                    self.graph.list_services(self.mailbox), self.graph.list_staff(self.mailbox),
                    self.graph.list_custom_questions(self.mailbox))
                self._lookups = {"services": services, "staff": staff, "questions": questions}
                _lookup_cache[self.mailbox] = (self._lookups, time.monotonic() + LOOKUP_CACHE_SECONDS)
        return self._lookups

    async def _get_appointment(self, appointment_id: str) -> dict[str, Any] | None:
        """GET by id, at most ``MAILBOX_CONCURRENCY`` at a time (Outlook's limit per app and mailbox)."""
        async with self._concurrency:
            self.graph_calls += 1
            try:
                return await self.graph.get_appointment(self.mailbox, appointment_id)
            except GraphError as error:
                if error.status == 404:
                    return None
                raise

    async def _payload(self, appointment: dict[str, Any], cancel_reason: str = "") -> dict[str, Any]:
        lookups = await self._lookups_for_mapping()
        return dict(to_appointment_data(appointment, services=lookups["services"], staff=lookups["staff"],
                                        questions=lookups["questions"], cancel_reason=cancel_reason))

    # ---- the diff ---------------------------------------------------------------------------------

    async def _snapshots(self) -> dict[str, Snapshot]:
        query = f"PartitionKey eq @pk and RowKey ge '{SNAPSHOT_PREFIX}' and RowKey lt '{SNAPSHOT_PREFIX_END}'"
        return {e["AppointmentId"]: Snapshot.from_entity(e) async for e in
                self.table.query_entities(query, parameters={"pk": self.mailbox})}

    async def _cancel_reason(self, appointment_id: str) -> str:
        try:
            row = await self.table.get_entity(self.mailbox, f"{CANCEL_REASON_PREFIX}{appointment_id}")
        except ResourceNotFoundError:
            return ""
        return str(row.get("Reason", ""))

    def _snapshot_ops(self, appointment: dict[str, Any], fingerprint: str, list_fp: str, payload: dict[str, Any]
                      ) -> tuple[Any, ...]:
        entity = {"PartitionKey": self.mailbox, "RowKey": f"{SNAPSHOT_PREFIX}{appointment['id']}",
                  "AppointmentId": appointment["id"], "Fingerprint": fingerprint,
                  "LastUpdated": str(appointment.get("lastUpdatedDateTime") or ""), "ListFingerprint": list_fp,
                  "Start": graph_time(appointment.get("startDateTime")),
                  "End": graph_time(appointment.get("endDateTime")),
                  **payload_properties(payload)}
        return ("upsert", {k: v for k, v in entity.items() if v is not None}, {"mode": UpdateMode.REPLACE})

    def _event_ops(self, plan: Plan, change_type: str, appointment_id: str, payload: dict[str, Any],
                   version: str, detected_at: datetime) -> None:
        eid = event_id(self.mailbox, appointment_id, change_type, version)
        plan.operations.append(("upsert", {
            "PartitionKey": self.mailbox, "RowKey": outbox_row_key(eid), "EventId": eid,
            "Trigger": TRIGGER_OF_CHANGE[change_type], "ChangeType": change_type, "AppointmentId": appointment_id,
            "DetectedAt": detected_at, "State": "pending", **payload_properties(payload)},
            {"mode": UpdateMode.REPLACE}))
        plan.events.append((eid, change_type, appointment_id))

    async def diff(self, message: MailboxChangeMessage, baseline_at: datetime | None) -> Plan:
        """Read Graph, compare with the snapshot, and return what to write. No writes here."""
        full = bool(message.get("fullResync")) or baseline_at is not None
        start, end, whole = await self._window(message, full)
        snapshots = await self._snapshots()
        self.graph_calls += 1
        listing = await self.graph.calendar_view(self.mailbox, start, end)
        plan = Plan()
        now = datetime.now(UTC)
        seen: set[str] = set()
        candidates: list[tuple[dict[str, Any], str, Snapshot | None]] = []
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
            candidates.append((item, list_fp, old))
        # The listing omits customers and notes: read new or changed appointments in full.
        fulls = await asyncio.gather(*(self._get_appointment(item["id"]) for item, _, _ in candidates))
        for (item, list_fp, old), full_item in zip(candidates, fulls, strict=True):
            appointment_id = item["id"]
            if full_item is None:
                continue  # vanished between the listing and now: the next reconcile sees it gone
            fingerprint = content_fingerprint(full_item)
            if old is not None and old.fingerprint == fingerprint:
                plan.operations.append(self._snapshot_ops(full_item, fingerprint, list_fp, old.payload))
                continue  # touched, but nothing a flow maker would see
            payload = await self._payload(full_item)
            plan.operations.append(self._snapshot_ops(full_item, fingerprint, list_fp, payload))
            change_type = "Created" if old is None else "Updated"
            if baseline_at is not None and old is None:
                created = graph_time(full_item.get("createdDateTime"))
                updated = graph_time(full_item.get("lastUpdatedDateTime"))
                if created is not None and created > baseline_at:
                    change_type = "Created"
                elif updated is not None and updated > baseline_at:
                    change_type = "Updated"
                else:
                    continue  # existed before the flows did: recorded, not announced
            # The version names this exact state: A→B→A yields two distinct Updated events, not one.
            version = f"{fingerprint}@{full_item.get('lastUpdatedDateTime') or ''}"
            self._event_ops(plan, change_type, appointment_id, payload, version, now)
        missing: list[Snapshot] = []
        for appointment_id, old in snapshots.items():
            if appointment_id in seen:
                continue
            in_window = old.start is None or ((old.end or old.start) >= start and old.start <= end)
            if not in_window:
                if whole and (old.end or old.start or now) < start:
                    plan.operations.append(("delete", {"PartitionKey": self.mailbox,
                                                       "RowKey": f"{SNAPSHOT_PREFIX}{appointment_id}"}))
                continue  # outside a narrow window: not evidence of anything
            missing.append(old)
        # Not listed any more: cancelled or deleted (404), or moved out of the window (still there).
        stills = await asyncio.gather(*(self._get_appointment(old.appointment_id) for old in missing))
        for old, still in zip(missing, stills, strict=True):
            appointment_id = old.appointment_id
            if still is not None:
                continue  # moved out of the window; a later reconcile with the right window will see it
            reason = await self._cancel_reason(appointment_id)
            payload = dict(old.payload)
            if reason:
                payload["CancelReason"] = reason
                plan.operations.append(("delete", {"PartitionKey": self.mailbox,
                                                   "RowKey": f"{CANCEL_REASON_PREFIX}{appointment_id}"}))
            plan.operations.append(("delete", {"PartitionKey": self.mailbox,
                                               "RowKey": f"{SNAPSHOT_PREFIX}{appointment_id}"}))
            self._event_ops(plan, "Cancelled", appointment_id, payload, f"{old.fingerprint}@{old.last_updated}", now)
        plan.graph_calls = self.graph_calls
        plan.whole = whole
        return plan

    # ---- commit -----------------------------------------------------------------------------------

    async def commit(self, plan: Plan, etag: str, final: dict[str, Any]) -> str:
        """Write the plan in transactions of ≤ 100 operations, each moving the sync row under its ETag."""
        operations = plan.operations
        batches = [operations[i:i + MAX_OPERATIONS_PER_TRANSACTION]
                   for i in range(0, len(operations), MAX_OPERATIONS_PER_TRANSACTION)] or [[]]
        for index, batch in enumerate(batches):
            sync = {"PartitionKey": self.mailbox, "RowKey": SYNC_ROW,
                    "CommittedAt": datetime.now(UTC), **(final if index == len(batches) - 1 else {})}
            ops: list[Any] = list(batch)
            ops.append(("update", sync, {"mode": UpdateMode.MERGE, "etag": etag,
                                         "match_condition": MatchConditions.IfNotModified}))
            try:
                results = await self.table.submit_transaction(ops)
            except TableTransactionError as error:
                if error.status_code == 412 or "UpdateConditionNotSatisfied" in str(error):
                    raise LeaseLost(self.mailbox) from None
                raise
            etag = results[-1]["etag"]
            self.etag = etag
        return etag


async def _defer(message: MailboxChangeMessage, seconds: float) -> None:
    """Come back later — as a full reconcile: it then covers every hint that waited with this one, so a
    burst costs one narrow and one full reconcile instead of one per hint."""
    later = {**message, "fullResync": True}
    await get_store().queue(MAILBOX_CHANGES_QUEUE).send_message(
        json.dumps(later), visibility_timeout=max(1, int(seconds)))


def _received(message: MailboxChangeMessage) -> datetime:
    try:
        return datetime.fromisoformat(message["receivedAt"])
    except (KeyError, ValueError, TypeError):
        return datetime.now(UTC)


async def reconcile(message: MailboxChangeMessage) -> str:
    """Handle one hint. Returns what happened: covered | deferred | reconciled (for logs and tests)."""
    mailbox = message["mailbox"].lower()
    started_clock = time.perf_counter()
    worker = Reconciler(mailbox)
    received = _received(message)
    full = bool(message.get("fullResync"))
    while True:
        row = await worker._sync_row()
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
        etag = await worker._take_lease(row, now)
        if etag is not None:
            break
    baseline_at = None if row.get("BaselineDone") else (row.get("BaselineAt") or now)
    try:
        plan = await worker.diff(message, baseline_at)
        final: dict[str, Any] = {"LeaseUntil": NO_LEASE, "BaselineDone": True}
        if plan.whole:
            # Only a look at the whole horizon covers hints about other events; a narrow one covers its own.
            final["CoveredUpTo"] = now
        await worker.commit(plan, etag, final)
    except LeaseLost:
        log.warning("reconcile of %s lost its lease; the other worker's result stands", mailbox,
                    extra={"mailbox": mailbox})
        return "lease lost"
    except BaseException:
        # Graph or storage failed: free the mailbox for the retry of this message (the runtime retries it)
        # instead of making every hint wait out the lease.
        await worker.release_lease(worker.etag or etag)
        raise
    counts = {kind: sum(1 for _, change, _ in plan.events if change == kind)
              for kind in ("Created", "Updated", "Cancelled")}
    track_event(events.MAILBOX_RECONCILED, mailbox=mailbox, createdCount=counts["Created"],
                updatedCount=counts["Updated"], cancelledCount=counts["Cancelled"], graphCalls=plan.graph_calls,
                durationMs=round((time.perf_counter() - started_clock) * 1000), fullResync=full,
                correlationId=message.get("correlationId", ""))
    if plan.events:  # one delivery message per matching flow
        await delivery.fan_out(mailbox, [eid for eid, _, _ in plan.events], message.get("correlationId", ""))
    return "reconciled"


async def handle_message(msg: Any) -> None:
    """Queue trigger entry for ``mailbox-changes``: a bundle is split first, a message is reconciled."""
    try:
        message = json.loads(msg.get_body())
        if not is_bundle(message) and not (isinstance(message, dict) and isinstance(message.get("mailbox"), str)):
            raise ValueError("no mailbox")
    except (ValueError, UnicodeDecodeError) as error:
        log.error("dropped a malformed mailbox-change message: %s", error)
        return
    if is_bundle(message):
        count = await split_bundle(message)
        log.info("split a bundle of change hints into %d mailbox messages", count)
        return
    outcome = await reconcile(message)  # type: ignore[arg-type]
    log.info("reconcile %s: %s", message["mailbox"], outcome,
             extra={"mailbox": message["mailbox"], "correlationId": message.get("correlationId", "")})


async def resync_all(correlation_id: str) -> int:
    """The periodic resync: a full-resync hint for every mailbox with flows (catches what Graph never sent)."""
    table = get_store().table(MAILBOX_TABLE)
    mailboxes = [e["PartitionKey"] async for e in
                 table.query_entities(f"RowKey eq '{QUOTA_ROW}' and FlowCount gt 0", select=["PartitionKey"])]
    await asyncio.gather(*(enqueue_change(change_message(m, full_resync=True, reason="timer",
                                                         correlation_id=correlation_id)) for m in mailboxes))
    log.info("periodic resync: %d mailboxes", len(mailboxes), extra={"correlationId": correlation_id})
    return len(mailboxes)
