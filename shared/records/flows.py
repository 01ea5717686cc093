"""The ``quota`` and ``flow:<webhookId>`` rows of the mailbox partition: the flows registered on each
mailbox, the per-mailbox flow limit, and the flows as the delivery worker last read them. Each flow's
delivery health (columns of its row, written behind the deliveries) is ``shared.records.flow_health``.

The HTTP rules (who may register, which URLs) live in ``shared.endpoints.flow_webhooks``, which also turns
this module's refusals (``FlowLimitReached``, ``TooManyConcurrentChanges``) into answers. The quota row
holds ``FlowCount``; every registration and deletion changes it in the *same* transaction as the flow
row, guarded by its ETag.

Why the quota row: "at most N flows per mailbox" must hold when 50 registrations arrive at once.
Counting flow rows and then inserting is a race (all 50 count 4, all 50 insert). Instead each
registration reads the quota row, and commits ``FlowCount + 1`` *with an ETag match* together with the
new flow row in one entity-group transaction. Exactly one of the concurrent writers of the same
ETag wins; the others get 412 (or 409 when the row did not exist yet), re-read and try again with
backoff, and see the limit once it is reached. No read-then-write without an ETag anywhere.
Transactions here hold two operations; Azurite fails on transactions over 100, which we never build.

Within one process, changes to the same mailbox also queue on an in-process lock first. That is only
an optimisation (50 callers on one instance then cost about 50 storage round trips, not 50 × 50
colliding ones); correctness across instances comes from the ETags alone, and the tests check the ETag
path with the lock switched off (``serialize_locally=False``), as if every caller were another instance.

Which mailboxes have flows (the resync and the renewal sweep ask) is the ``~index:flows`` partition
(``shared.records.mailbox``, index rows): one row per mailbox, written before a registration commits and
again after it, deleted after the last flow's removal only if the quota row still says 0 once it is gone
(and written back if a registration slipped in), and dropped by ``drop_index_if_unused`` when a sweep
finds a mailbox without flows. ``backfill_index`` builds it from the quota rows (once, for deployments
older than it).

The callback URL is a secret (its query string is the flow's signature). It is stored because
delivery needs it, and leaves this module only through ``Flow.callback_url``; listings, logs and
``repr`` show ``redact_url`` of it (host and path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient
from cachetools import TTLCache

from shared.adapters.logs import redact_url
from shared.adapters.monitoring import track_event
from shared.adapters.per_loop import LocksByKey
from shared.adapters.settings import get_settings
from shared.contracts import events
from shared.records.mailbox import (
    delete_index_unchanged,
    get_index,
    index_mailbox,
    index_rows,
    iso,
    mailbox_table,
    put_index,
    row,
    rows_with_prefix,
    utc,
)

log = logging.getLogger(__name__)

# Route name of each trigger -> the change type Power Automate's connector sends for it.
TRIGGERS: dict[str, str] = {
    "AppointmentCreated": "Created",
    "AppointmentUpdated": "Updated",
    "AppointmentDeleted": "Deleted",
    # The time-relative triggers (shared.services.reminders): each flow carries its offset in minutes.
    "AppointmentStarting": "Starting",
    "AppointmentEnded": "Ended",
}
# Offset range (minutes) of each time-relative trigger: 5 minutes to 7 days before the start; 0 to 7 days after
# the end.
OFFSET_RANGES: dict[str, tuple[int, int]] = {"AppointmentStarting": (5, 10_080), "AppointmentEnded": (0, 10_080)}

# What a flow maker calls each trigger (the connector's summaries), for the flows' listing.
TRIGGER_TITLES = {"AppointmentCreated": "When an appointment is created",
                  "AppointmentUpdated": "When an appointment is updated",
                  "AppointmentDeleted": "When an appointment is cancelled",
                  "AppointmentStarting": "When an appointment is about to start",
                  "AppointmentEnded": "When an appointment has ended"}

QUOTA_ROW = "quota"
FLOW_PREFIX = "flow:"
INDEX = "flows"

# Keep retrying optimistic-concurrency conflicts this long. Power Automate waits far longer for a
# registration; the bound only stops a pathological storm from holding an invocation forever.
CONFLICT_RETRY_SECONDS = 15.0
_BACKOFF_BASE_SECONDS = 0.01
_BACKOFF_CAP_SECONDS = 0.25


class FlowListing(TypedDict):
    """A flow as shown to the mailbox's administrators: no callback query string, ever."""

    webhookId: str
    trigger: str
    callbackHostPath: str
    createdByUpn: str
    createdByOid: str
    createdDateTime: str
    deliveredCount: int
    failedCount: int
    consecutiveFailures: int
    lastDeliveryStatus: str
    lastDeliveryDateTime: str | None
    serviceIds: list[str]
    staffMemberIds: list[str]
    displayName: str
    offsetMinutes: int | None  # the time-relative triggers' offset; None for the others


@dataclass(frozen=True)
class Flow:
    mailbox: str  # lower-cased SMTP address = PartitionKey
    webhook_id: str
    trigger: str
    callback_url: str = field(repr=False)  # secret-bearing: never log or return it
    created_by_oid: str
    created_by_upn: str
    created: datetime
    # Delivery health, written by the delivery worker after each attempt; zero / empty until the first.
    delivered_count: int = 0
    failed_count: int = 0
    consecutive_failures: int = 0
    last_delivery_status: str = ""
    last_delivery: datetime | None = None
    # The trigger's optional filters: only events of these services / staff members reach it (empty: all).
    service_ids: tuple[str, ...] = ()
    staff_member_ids: tuple[str, ...] = ()
    # A time-relative trigger's offset (minutes before the start, or after the end); None for the others.
    offset_minutes: int | None = None

    @property
    def row_key(self) -> str:
        return flow_row_key(self.webhook_id)

    @property
    def filtered(self) -> bool:
        return bool(self.service_ids or self.staff_member_ids)

    def matches(self, service_ids: frozenset[str], staff_member_ids: frozenset[str]) -> bool:
        """Whether an event of these services and staff members (``outbox.filter_keys``) is for this flow:
        each filter set must share an id with the event's."""
        return (not self.service_ids or bool(service_ids & set(self.service_ids))) and \
            (not self.staff_member_ids or bool(staff_member_ids & set(self.staff_member_ids)))

    def listing(self) -> FlowListing:
        return {
            "webhookId": self.webhook_id, "trigger": self.trigger, "callbackHostPath": redact_url(self.callback_url),
            "createdByUpn": self.created_by_upn, "createdByOid": self.created_by_oid,
            "createdDateTime": iso(self.created), "deliveredCount": self.delivered_count,
            "failedCount": self.failed_count, "consecutiveFailures": self.consecutive_failures,
            "lastDeliveryStatus": self.last_delivery_status,
            "lastDeliveryDateTime": iso(self.last_delivery) if self.last_delivery else None,
            "serviceIds": list(self.service_ids), "staffMemberIds": list(self.staff_member_ids),
            "displayName": f"{TRIGGER_TITLES.get(self.trigger, self.trigger)} · {self.created_by_upn} · "
                           f"{iso(self.created)[:16].replace('T', ' ')}",
            "offsetMinutes": self.offset_minutes,
        }

    def entity(self) -> dict[str, Any]:
        entity = row(
            self.mailbox, self.row_key, Kind="flow", WebhookId=self.webhook_id, Trigger=self.trigger,
            CallbackUrl=self.callback_url, CreatedByOid=self.created_by_oid, CreatedByUpn=self.created_by_upn,
            CreatedDateTime=self.created, DeliveredCount=self.delivered_count, FailedCount=self.failed_count,
            ConsecutiveFailures=self.consecutive_failures, LastDeliveryStatus=self.last_delivery_status)
        if self.last_delivery is not None:
            entity["LastDeliveryDateTime"] = self.last_delivery
        if self.service_ids:
            entity["ServiceFilter"] = ",".join(self.service_ids)
        if self.staff_member_ids:
            entity["StaffFilter"] = ",".join(self.staff_member_ids)
        if self.offset_minutes is not None:
            entity["OffsetMinutes"] = self.offset_minutes
        return entity

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> Flow:
        return cls(
            mailbox=entity["PartitionKey"], webhook_id=entity["WebhookId"], trigger=entity["Trigger"],
            callback_url=entity["CallbackUrl"], created_by_oid=entity.get("CreatedByOid", ""),
            created_by_upn=entity.get("CreatedByUpn", ""), created=utc(entity["CreatedDateTime"]) or datetime.now(UTC),
            delivered_count=int(entity.get("DeliveredCount", 0)), failed_count=int(entity.get("FailedCount", 0)),
            consecutive_failures=int(entity.get("ConsecutiveFailures", 0)),
            last_delivery_status=entity.get("LastDeliveryStatus", ""),
            last_delivery=utc(entity.get("LastDeliveryDateTime")),
            service_ids=tuple(i for i in str(entity.get("ServiceFilter") or "").split(",") if i),
            staff_member_ids=tuple(i for i in str(entity.get("StaffFilter") or "").split(",") if i),
            offset_minutes=int(entity["OffsetMinutes"]) if entity.get("OffsetMinutes") is not None else None,
        )


@dataclass(frozen=True)
class Unregistered:
    removed: bool  # False: it was already gone (deleting again is not an error)
    remaining: int  # flows the mailbox has now

    @property
    def mailbox_now_empty(self) -> bool:
        return self.remaining == 0


class FlowLimitReached(Exception):
    """The mailbox already has ``limit`` flows: a registration is refused (nothing was written)."""

    def __init__(self, mailbox: str, count: int, limit: int) -> None:
        super().__init__(f"{mailbox} has {count} flows, the most allowed ({limit})")
        self.mailbox, self.count, self.limit = mailbox, count, limit


class TooManyConcurrentChanges(Exception):
    """The mailbox's flows kept changing under a registration or removal for ``conflict_retry_seconds``:
    it gave up (nothing was written) and may be tried again."""

    def __init__(self, mailbox: str) -> None:
        super().__init__(f"the flows of {mailbox} are changing too often to commit")
        self.mailbox = mailbox


def flow_row_key(webhook_id: str) -> str:
    return f"{FLOW_PREFIX}{webhook_id}"


def _conflict(error: TableTransactionError) -> bool:
    # 412: someone changed the quota/flow row since we read it. 409: someone created the quota row
    # first. 404: the row we meant to change was deleted meanwhile. All three: re-read and retry.
    return error.status_code in (404, 409, 412)


# In-process queue per mailbox, per event loop (a lock belongs to one); entries vanish when no caller holds
# the lock.
_local_locks = LocksByKey()



async def _backoff(attempt: int) -> None:
    # Full jitter: concurrent losers spread out instead of colliding again in lock-step.
    await asyncio.sleep(random.uniform(0, min(_BACKOFF_CAP_SECONDS, _BACKOFF_BASE_SECONDS * 2**attempt)))  # noqa: S311


class FlowRegistry:
    """Registered flows of every mailbox, over one table client."""

    def __init__(self, table: TableClient, max_flows_per_mailbox: int,
                 conflict_retry_seconds: float = CONFLICT_RETRY_SECONDS, serialize_locally: bool = True) -> None:
        self.table = table
        self.max_flows = max_flows_per_mailbox
        self.conflict_retry_seconds = conflict_retry_seconds
        self.serialize_locally = serialize_locally
        self.conflicts = 0  # optimistic-concurrency retries so far; benchmarks and tests read it

    @classmethod
    def default(cls) -> FlowRegistry:
        """The registry over the running loop's store, with the configured flow limit."""
        return cls(mailbox_table(), get_settings().max_flows_per_mailbox)

    def _queue(self, mailbox: str) -> contextlib.AbstractAsyncContextManager[Any]:
        return _local_locks.lock(mailbox) if self.serialize_locally else contextlib.nullcontext()

    async def _get(self, mailbox: str, row_key: str) -> Any:
        try:
            return await self.table.get_entity(mailbox, row_key)
        except ResourceNotFoundError:
            return None

    async def register(self, mailbox: str, trigger: str, callback_url: str, *, created_by_oid: str,
                       created_by_upn: str, service_ids: tuple[str, ...] = (),
                       staff_member_ids: tuple[str, ...] = (), offset_minutes: int | None = None) -> Flow:
        """Add a flow, atomically with the mailbox's count. ``FlowLimitReached`` at the limit. A time-relative
        trigger (``OFFSET_RANGES``) needs its offset; the others take none."""
        if trigger not in TRIGGERS:
            raise ValueError(f"unknown trigger {trigger!r}")
        low, high = OFFSET_RANGES.get(trigger, (None, None))
        if (offset_minutes is None) != (low is None) or (low is not None and not low <= offset_minutes <= high):
            raise ValueError(f"offset {offset_minutes!r} does not fit trigger {trigger}")
        flow = Flow(mailbox=mailbox, webhook_id=str(uuid.uuid4()), trigger=trigger, callback_url=callback_url,
                    created_by_oid=created_by_oid, created_by_upn=created_by_upn,
                    created=datetime.now(UTC), service_ids=service_ids, staff_member_ids=staff_member_ids,
                    offset_minutes=offset_minutes)
        async with self._queue(mailbox):
            await self._index(mailbox)  # before the flow row: the index is a superset
            registered = await self._register(flow)
            await self._index(mailbox)  # again: a last flow's removal racing with this may have deleted it
            return registered

    async def _index(self, mailbox: str) -> None:
        await put_index(INDEX, mailbox, {"Kind": "flows"}, table=self.table)

    async def _register(self, flow: Flow) -> Flow:
        mailbox, trigger = flow.mailbox, flow.trigger
        deadline = time.monotonic() + self.conflict_retry_seconds
        attempt = 0
        while True:
            quota = await self._get(mailbox, QUOTA_ROW)
            count = int(quota["FlowCount"]) if quota is not None else 0
            if count >= self.max_flows:
                raise FlowLimitReached(mailbox, count, self.max_flows)
            quota_row = row(mailbox, QUOTA_ROW, Kind="quota", FlowCount=count + 1)
            quota_op: tuple[Any, ...] = (
                ("create", quota_row) if quota is None else
                ("update", quota_row, {"mode": UpdateMode.MERGE, "etag": quota.metadata["etag"],
                                       "match_condition": MatchConditions.IfNotModified})
            )
            if not await self._commit(mailbox, [quota_op, ("create", flow.entity())], deadline, attempt):
                attempt += 1
                continue
            # The event is the registration's log line too (flows-per-mailbox reads its flowCount).
            track_event(events.FLOW_REGISTERED, mailbox=mailbox, flowId=flow.webhook_id, trigger=trigger,
                        flowCount=count + 1, maxFlows=self.max_flows)
            return flow

    async def _commit(self, mailbox: str, ops: list[Any], deadline: float, attempt: int) -> bool:
        """Submit one transaction. False: another writer changed the rows first — re-read and try again."""
        try:
            await self.table.submit_transaction(ops)
        except TableTransactionError as error:
            if not _conflict(error):
                raise
            if time.monotonic() > deadline:
                raise TooManyConcurrentChanges(mailbox) from None
            self.conflicts += 1
            await _backoff(attempt)
            return False
        return True

    async def restore(self, flow: Flow) -> bool:
        """Put back a flow an export holds (``shared.services.backup``), with its own webhook id (Power Automate
        deletes it by that id) and creation time, as ``register`` adds one: the index first, the quota and the flow
        row in one transaction, the index again. False when the flow row is there already (nothing written), so
        restoring twice is restoring once. ``FlowLimitReached`` when the mailbox is full."""
        async with self._queue(flow.mailbox):
            if await self._get(flow.mailbox, flow.row_key) is not None:
                return False
            await self._index(flow.mailbox)
            try:
                await self._register(flow)
            except TooManyConcurrentChanges:
                if await self._get(flow.mailbox, flow.row_key) is not None:
                    return False  # another restore of the same export wrote it first
                raise
            await self._index(flow.mailbox)
            return True

    async def unregister(self, mailbox: str, webhook_id: str) -> Unregistered:
        """Remove a flow and decrement the count in one transaction. Idempotent: gone already is fine."""
        async with self._queue(mailbox):
            return await self._unregister(mailbox, webhook_id)

    async def _unregister(self, mailbox: str, webhook_id: str) -> Unregistered:
        deadline = time.monotonic() + self.conflict_retry_seconds
        attempt = 0
        while True:
            entity = await self._get(mailbox, flow_row_key(webhook_id))
            quota = await self._get(mailbox, QUOTA_ROW)
            count = int(quota["FlowCount"]) if quota is not None else 0
            if entity is None:
                forget_flow(mailbox, webhook_id)
                return Unregistered(removed=False, remaining=count)
            ops: list[tuple[Any, ...]] = [
                ("delete", row(mailbox, entity["RowKey"]),
                 {"etag": entity.metadata["etag"], "match_condition": MatchConditions.IfNotModified}),
            ]
            if quota is not None:
                ops.append(("update", row(mailbox, QUOTA_ROW, Kind="quota", FlowCount=max(count - 1, 0)),
                            {"mode": UpdateMode.MERGE, "etag": quota.metadata["etag"],
                             "match_condition": MatchConditions.IfNotModified}))
            else:
                # Should not happen (every flow row was written with the quota row); heal by deleting.
                log.warning("flow %s on %s has no quota row", webhook_id, mailbox)
            if not await self._commit(mailbox, ops, deadline, attempt):
                attempt += 1
                continue
            forget_flow(mailbox, webhook_id)
            remaining = max(count - 1, 0) if quota is not None else len(await self.list_flows(mailbox))
            log.info("flow %s removed from %s (%d left)", webhook_id, mailbox, remaining,
                     extra={"mailbox": mailbox, "flowId": webhook_id})
            if remaining == 0:
                await self.drop_index_if_unused(mailbox)
            return Unregistered(removed=True, remaining=remaining)

    async def get_flow(self, mailbox: str, webhook_id: str) -> Flow | None:
        entity = await self._get(mailbox, flow_row_key(webhook_id))
        return Flow.from_entity(entity) if entity is not None else None

    async def list_flows(self, mailbox: str) -> list[Flow]:
        flows = [Flow.from_entity(entity) for entity in await rows_with_prefix(mailbox, FLOW_PREFIX, table=self.table)]
        return sorted(flows, key=lambda f: (f.created, f.webhook_id))

    async def flow_count(self, mailbox: str) -> int:
        quota = await self._get(mailbox, QUOTA_ROW)
        return int(quota["FlowCount"]) if quota is not None else 0

    async def drop_index_if_unused(self, mailbox: str) -> bool:
        """Delete the mailbox's index row if it has no flows. The quota is read again after the delete, and
        a registration that committed meanwhile gets its index row back (it also writes it itself after its
        commit). True when the row went."""
        entity = await get_index(INDEX, mailbox, table=self.table)
        if entity is None or await self.flow_count(mailbox) > 0:
            return False
        if not await delete_index_unchanged(entity, table=self.table):
            return False  # a registration touched it meanwhile
        if await self.flow_count(mailbox) > 0:
            await self._index(mailbox)
            return False
        return True


async def mailboxes_with_flows() -> list[str]:
    """Every mailbox that may have flows: the ``~index:flows`` partition (a superset: a sweep that finds one
    without flows drops it with ``drop_index_if_unused``)."""
    return [index_mailbox(e) for e in await index_rows(INDEX, select=["RowKey"])]


async def all_flows(concurrency: int = 16) -> list[Flow]:
    """Every registered flow (the export reads them): the ``~index:flows`` partition, then one query per
    mailbox of its ``flow:`` rows. Callback URLs included: the caller holds secrets."""
    registry = FlowRegistry.default()
    limit = asyncio.Semaphore(concurrency)

    async def of(mailbox: str) -> list[Flow]:
        async with limit:
            return await registry.list_flows(mailbox)

    per_mailbox = await asyncio.gather(*(of(m) for m in sorted(await mailboxes_with_flows())))
    return [flow for flows in per_mailbox for flow in flows]


async def restore_index(mailbox: str) -> None:
    """Put the mailbox's ``~index:flows`` row back: a repair found flows the index does not list (a
    registration that died between its commit and its second index write, while the last flow's removal
    deleted the row), which the renewal sweep would otherwise never renew."""
    await put_index(INDEX, mailbox, {"Kind": "flows"})


async def drop_index_if_unused(mailbox: str) -> bool:
    """``FlowRegistry.drop_index_if_unused`` over the running loop's store."""
    return await FlowRegistry.default().drop_index_if_unused(mailbox)


async def backfill_index() -> int:
    """Index every mailbox whose quota row counts flows (a scan of the whole table: once, for mailboxes
    registered before the index existed). Returns how many."""
    query = f"RowKey eq '{QUOTA_ROW}' and FlowCount gt 0"
    mailboxes = [e["PartitionKey"] async for e in mailbox_table().query_entities(query, select=["PartitionKey"])]
    for mailbox in mailboxes:
        await put_index(INDEX, mailbox, {"Kind": "flows"})
    return len(mailboxes)


async def flow_count(mailbox: str) -> int:
    return await FlowRegistry.default().flow_count(mailbox)


# --- what the delivery worker reads: the flow as recently read (its health: shared.records.flow_health) ------

# A delivery needs the flow's callback URL. Reading the row for each of a burst of events to one flow is most
# of a delivery's storage work, so rows are kept this long per process. A flow removed on another instance
# can then still be called for this long (the race between a removal and a delivery already in flight,
# widened from milliseconds to seconds); a removal on this instance forgets the row at once, and the worker
# reads the row again before it acts on a failed attempt (``fresh=True``), so a removed flow is never
# retried or dead-lettered. Bounded: the least recently used rows make room.
FLOW_CACHE_SECONDS = 15.0
FLOW_CACHE_SIZE = 10_000
_flow_cache: TTLCache[tuple[str, str], Flow] = TTLCache(FLOW_CACHE_SIZE, FLOW_CACHE_SECONDS)


async def flow_for_delivery(mailbox: str, webhook_id: str, *, fresh: bool = False) -> Flow | None:
    """The flow as read at most ``FLOW_CACHE_SECONDS`` ago (now, with ``fresh``), or None when it was removed."""
    key = (mailbox, webhook_id)
    hit = None if fresh else _flow_cache.get(key)
    if hit is not None:
        return hit
    try:
        entity = await mailbox_table().get_entity(mailbox, flow_row_key(webhook_id))
    except ResourceNotFoundError:
        _flow_cache.pop(key, None)
        return None
    flow = _flow_cache[key] = Flow.from_entity(entity)
    return flow


def forget_flow(mailbox: str, webhook_id: str) -> None:
    _flow_cache.pop((mailbox, webhook_id), None)
