"""One Microsoft Graph subscription per Bookings mailbox: created with its first flow, deleted with its last.

Graph has no change notifications for Bookings; a business is a mailbox, so we subscribe to its
calendar (``/users/{smtp}/events``, created/updated/deleted) and treat each notification as a hint
(DESIGN §3-4).

Storage
-------
In the mailbox's partition of ``MAILBOX_TABLE`` (beside the flows and the quota of ``registrations``):

=================  =================================================================================
RowKey             row
=================  =================================================================================
``subscription``   ``State`` (``creating`` | ``active`` | ``deleting``), ``LeaseUntil`` (how long the
                   writer that set ``creating``/``deleting`` owns the row), ``SubscriptionId``,
                   ``ClientState`` (random, per subscription), ``ExpirationDateTime``, ``Failures``,
                   ``LastError``
=================  =================================================================================

and an index in ``SUBSCRIPTION_TABLE`` (PartitionKey = Graph subscription id, RowKey ``""``) holding
``Mailbox`` and ``ClientState``: notifications name the subscription, never the SMTP address (their
``resource`` holds the user's object id), so the notification path finds the mailbox and the expected
clientState with one point read.

Exactly one subscription per mailbox
------------------------------------
Racing first registrations all try to *insert* the ``subscription`` row in state ``creating``; the
table lets exactly one insert win. The winner owns a lease (``LeaseUntil``, longer than Graph's 10 s
validation handshake), creates the Graph subscription, writes the index row, then flips the row to
``active`` with an ETag match. The others wait for ``active``. If the winner fails, it deletes its row
and the error names the cause (validation failed, permission missing, throttled); a waiter then tries
in its turn. If the winner dies, its lease runs out and a waiter takes the row over (ETag match), so a
crash cannot wedge a mailbox. If the winner finds it lost the row while it was creating (lease run out),
it deletes what it created in Graph: no orphan.

Renewal, re-creation and repair are driven by ``shared.renewal``; the notification endpoint's use of
the index is in ``shared.notifications``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared import events
from shared.errors import ApiError
from shared.graph import Graph, GraphError, get_graph
from shared.monitoring import track_event
from shared.settings import get_settings
from shared.single_flight import SingleFlight
from shared.store import MAILBOX_TABLE, SUBSCRIPTION_TABLE, get_store

log = logging.getLogger(__name__)

SUBSCRIPTION_ROW = "subscription"
CHANGE_TYPES = "created,updated,deleted"
MAX_EVENT_SUBSCRIPTION_MINUTES = 4230  # Graph's limit for Outlook event subscriptions
# Ask a little less than the limit: clocks differ, and Graph refuses an expiration past its maximum.
EXPIRATION_MARGIN_MINUTES = 15
# The owner of a 'creating'/'deleting' row keeps it this long: Graph's validation handshake alone may
# take 10 s, and Graph itself may be slow to answer.
LEASE_SECONDS = 45
# A registration waits this long for another registration's subscription creation to finish.
WAIT_FOR_OTHERS_SECONDS = 60.0


@dataclass(frozen=True)
class SubscriptionRecord:
    mailbox: str
    state: str
    subscription_id: str
    client_state: str
    expiration: datetime | None
    lease_until: datetime | None
    etag: str
    failures: int = 0

    @classmethod
    def from_entity(cls, entity: Any) -> SubscriptionRecord:
        return cls(mailbox=entity["PartitionKey"], state=entity.get("State", ""),
                   subscription_id=entity.get("SubscriptionId", ""), client_state=entity.get("ClientState", ""),
                   expiration=entity.get("ExpirationDateTime"), lease_until=entity.get("LeaseUntil"),
                   etag=entity.metadata["etag"], failures=int(entity.get("Failures", 0)))

    def lease_held(self, now: datetime) -> bool:
        return self.lease_until is not None and self.lease_until > now


INDEX_CACHE_SECONDS = 300
INDEX_CACHE_SIZE = 20_000
_index_cache: dict[str, tuple[IndexEntry, float]] = {}
# A burst right after start-up names the same few subscriptions in every request, and all of them would
# miss the cache at once: concurrent lookups of one id share one read.
_index_reads: SingleFlight[IndexEntry | None] = SingleFlight()


def forget_cached(subscription_id: str) -> None:
    _index_cache.pop(subscription_id, None)


@dataclass(frozen=True)
class IndexEntry:
    subscription_id: str
    mailbox: str
    client_state: str


def notification_urls() -> tuple[str, str]:
    base = get_settings().public_base_url
    return f"{base}/api/graph/notifications", f"{base}/api/graph/lifecycle"


def resource_for(mailbox: str) -> str:
    return f"/users/{mailbox}/events"


def new_expiration(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now + timedelta(minutes=MAX_EVENT_SUBSCRIPTION_MINUTES - EXPIRATION_MARGIN_MINUTES)


def graph_failure(error: GraphError, mailbox: str) -> ApiError:
    """The registration's answer when Graph would not create the subscription: the remedy says why."""
    if error.status == 400 and "valid" in f"{error.code} {error.message}".lower():
        return ApiError("SubscriptionValidationFailed", business=mailbox)
    if error.status in (401, 403):
        return ApiError("GraphPermissionMissing", business=mailbox, graph_code=error.code)
    if error.throttled:
        wait = int(error.retry_after or 30)
        return ApiError("GraphThrottled", headers={"Retry-After": str(wait)}, seconds=wait)
    if error.status == 404:
        return ApiError("BookingBusinessNotFound", business=mailbox)
    return ApiError("DependencyUnavailable", dependency=f"Microsoft Graph ({error.status} {error.code})")


class Subscriptions:
    """Subscription rows of every mailbox and the Graph calls that go with them."""

    def __init__(self, graph: Graph | None = None) -> None:
        store = get_store()
        self.table = store.table(MAILBOX_TABLE)
        self.index = store.table(SUBSCRIPTION_TABLE)
        self._graph = graph

    @property
    def graph(self) -> Graph:
        return self._graph or get_graph()

    async def get(self, mailbox: str) -> SubscriptionRecord | None:
        try:
            return SubscriptionRecord.from_entity(await self.table.get_entity(mailbox, SUBSCRIPTION_ROW))
        except ResourceNotFoundError:
            return None

    @staticmethod
    def cached(subscription_id: str) -> IndexEntry | None:
        """The index entry if it is in memory and fresh, without touching storage."""
        cached = _index_cache.get(subscription_id)
        return cached[0] if cached is not None and cached[1] > time.monotonic() else None

    async def lookup(self, subscription_id: str) -> IndexEntry | None:
        """The notification path's one read: which mailbox, which clientState. Storage errors propagate.

        Found entries are kept in memory for a few minutes: a subscription's mailbox and clientState never
        change, and bursts name the same few subscriptions over and over. Absences are not kept (a new
        subscription's first notification may race its index row)."""
        cached = self.cached(subscription_id)
        if cached is not None:
            return cached
        return await _index_reads.run(subscription_id, lambda: self._read_index(subscription_id))

    async def _read_index(self, subscription_id: str) -> IndexEntry | None:
        try:
            entity = await self.index.get_entity(subscription_id, "")
        except ResourceNotFoundError:
            return None
        entry = IndexEntry(subscription_id, entity["Mailbox"], entity["ClientState"])
        if len(_index_cache) >= INDEX_CACHE_SIZE:
            _index_cache.clear()  # crude, but bounded; refilled by the next reads
        _index_cache[subscription_id] = (entry, time.monotonic() + INDEX_CACHE_SECONDS)
        return entry

    # ---- ensure (first flow) -----------------------------------------------------------------------

    async def ensure(self, mailbox: str) -> SubscriptionRecord:
        """Make sure the mailbox has an active subscription; create it if this caller wins the race."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_FOR_OTHERS_SECONDS
        delay = 0.05
        while True:
            now = datetime.now(UTC)
            record = await self.get(mailbox)
            if record is not None and record.state == "active":
                return record
            if record is None or not record.lease_held(now):
                claimed = await self._claim(mailbox, record, now)
                if claimed is not None:
                    return await self._create(mailbox, claimed, stale=record)
            if loop.time() > deadline:
                raise ApiError("DependencyUnavailable",
                               dependency="Microsoft Graph (another registration is still creating the subscription)")
            await asyncio.sleep(delay + random.uniform(0, delay))  # noqa: S311 - jitter only
            delay = min(delay * 2, 1.0)

    async def _claim(self, mailbox: str, previous: SubscriptionRecord | None, now: datetime) -> str | None:
        """Take the row in state 'creating'. Returns its ETag, or None when another writer got there first."""
        entity = {"PartitionKey": mailbox, "RowKey": SUBSCRIPTION_ROW, "State": "creating",
                  "LeaseUntil": now + timedelta(seconds=LEASE_SECONDS), "SubscriptionId": "", "ClientState": "",
                  "Failures": previous.failures if previous else 0}
        try:
            if previous is None:
                result = await self.table.create_entity(entity)
            else:  # a stale 'creating' or 'deleting' whose owner died: take it over
                result = await self.table.update_entity(entity, mode=UpdateMode.REPLACE, etag=previous.etag,
                                                        match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceNotFoundError):
            return None
        except HttpResponseError as error:
            if error.status_code == 412:
                return None
            raise
        return result["etag"]

    async def _create(self, mailbox: str, etag: str, stale: SubscriptionRecord | None) -> SubscriptionRecord:
        if stale is not None and stale.subscription_id:
            # The previous owner died after Graph created (or before it deleted) this one.
            await self._forget_in_graph(stale.subscription_id, mailbox)
        await self._start_baseline(mailbox)
        client_state = secrets.token_urlsafe(48)  # 64 characters; Graph allows 128
        notification_url, lifecycle_url = notification_urls()
        expiration = new_expiration()
        try:
            created = await self.graph.create_subscription(
                resource=resource_for(mailbox), change_type=CHANGE_TYPES, notification_url=notification_url,
                lifecycle_url=lifecycle_url, client_state=client_state, expiration=expiration)
        except GraphError as error:
            log.warning("Graph refused a subscription for %s: %s %s", mailbox, error.status, error.code,
                        extra={"mailbox": mailbox})
            await self._release_claim(mailbox, etag)
            raise graph_failure(error, mailbox) from None
        subscription_id = created["id"]
        expires = _parse_time(created.get("expirationDateTime")) or expiration
        try:
            await self.index.upsert_entity({"PartitionKey": subscription_id, "RowKey": "", "Mailbox": mailbox,
                                            "ClientState": client_state, "ExpirationDateTime": expires})
            result = await self.table.update_entity(
                {"PartitionKey": mailbox, "RowKey": SUBSCRIPTION_ROW, "State": "active", "LeaseUntil": None,
                 "SubscriptionId": subscription_id, "ClientState": client_state, "ExpirationDateTime": expires,
                 "Failures": 0, "LastError": ""},
                mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified)
        except Exception:
            # We lost the row (lease ran out and someone took over) or storage failed: undo in Graph.
            log.warning("could not record subscription for %s; deleting it from Graph", mailbox,
                        extra={"mailbox": mailbox, "subscriptionId": subscription_id})
            await self._forget_in_graph(subscription_id, mailbox)
            raise
        log.info("subscription %s created for %s, expires %s", subscription_id, mailbox, expires.isoformat(),
                 extra={"mailbox": mailbox, "subscriptionId": subscription_id})
        track_event(events.SUBSCRIPTION_CREATED, mailbox=mailbox, subscriptionId=subscription_id,
                    expiresAt=expires.isoformat())
        await self._enqueue_baseline(mailbox, subscription_id)
        return SubscriptionRecord(mailbox, "active", subscription_id, client_state, expires, None, result["etag"])

    async def _start_baseline(self, mailbox: str) -> None:
        """Before the first subscription of a mailbox exists, mark when watching began: the reconcile's
        baseline then records older appointments silently and announces anything created after this."""
        from shared.reconcile import SYNC_ROW  # the reconcile owns the sync row; we only start it

        try:
            await self.table.create_entity({"PartitionKey": mailbox, "RowKey": SYNC_ROW, "BaselineDone": False,
                                            "BaselineAt": datetime.now(UTC)})
        except ResourceExistsError:
            pass  # a re-created subscription: the snapshot is still good, the resync diffs against it

    async def _enqueue_baseline(self, mailbox: str, subscription_id: str) -> None:
        from shared.notifications import change_message, enqueue_change

        try:
            await enqueue_change(change_message(mailbox, subscription_id=subscription_id, full_resync=True,
                                                baseline=True, reason="created", correlation_id=""))
        except Exception as error:  # the first notification or the periodic resync will do it instead
            log.warning("could not enqueue the baseline of %s (%s)", mailbox, type(error).__name__)

    async def _release_claim(self, mailbox: str, etag: str) -> None:
        try:
            await self.table.delete_entity(mailbox, SUBSCRIPTION_ROW, etag=etag,
                                           match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, HttpResponseError):
            pass  # someone else owns it now, or it is gone: either way not ours to remove

    async def _forget_in_graph(self, subscription_id: str, mailbox: str) -> None:
        try:
            await self.graph.delete_subscription(subscription_id)
        except GraphError as error:
            log.error("could not delete Graph subscription %s of %s (%s); the renewal sweep will retry",
                      subscription_id, mailbox, error.code,
                      extra={"mailbox": mailbox, "subscriptionId": subscription_id})
        forget_cached(subscription_id)
        try:
            await self.index.delete_entity(subscription_id, "")
        except ResourceNotFoundError:
            pass

    # ---- release (last flow gone) ------------------------------------------------------------------

    async def release(self, mailbox: str, flows_left: Any) -> None:
        """Delete the mailbox's subscription, unless a flow was registered meanwhile.

        ``flows_left`` is an async callable returning the mailbox's current flow count; it is asked after
        the row is marked 'deleting', so a registration racing with this release either sees 'deleting'
        (and waits, then creates a fresh subscription) or is counted here (and the release backs off).
        """
        record = await self.get(mailbox)
        if record is None or record.state != "active":
            return
        now = datetime.now(UTC)
        try:
            marked = await self.table.update_entity(
                {"PartitionKey": mailbox, "RowKey": SUBSCRIPTION_ROW, "State": "deleting",
                 "LeaseUntil": now + timedelta(seconds=LEASE_SECONDS)},
                mode=UpdateMode.MERGE, etag=record.etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, HttpResponseError):
            return  # changed under us: whoever changed it decides
        if await flows_left() > 0:
            await self.table.update_entity(
                {"PartitionKey": mailbox, "RowKey": SUBSCRIPTION_ROW, "State": "active", "LeaseUntil": None},
                mode=UpdateMode.MERGE, etag=marked["etag"], match_condition=MatchConditions.IfNotModified)
            return
        try:
            await self.graph.delete_subscription(record.subscription_id)
        except GraphError as error:
            # Left in 'deleting'; when the lease runs out the renewal sweep (or a new flow) takes it over.
            log.error("could not delete subscription %s of %s: %s %s", record.subscription_id, mailbox,
                      error.status, error.code, extra={"mailbox": mailbox,
                                                       "subscriptionId": record.subscription_id})
            return
        forget_cached(record.subscription_id)
        try:
            await self.index.delete_entity(record.subscription_id, "")
        except ResourceNotFoundError:
            pass
        await self._release_claim(mailbox, marked["etag"])
        log.info("subscription %s of %s deleted with the last flow", record.subscription_id, mailbox,
                 extra={"mailbox": mailbox, "subscriptionId": record.subscription_id})
        track_event(events.SUBSCRIPTION_DELETED, mailbox=mailbox, subscriptionId=record.subscription_id,
                    reason="lastFlowRemoved")


    # ---- renewal and repair (driven by shared.renewal) -------------------------------------------------

    async def renew(self, record: SubscriptionRecord) -> datetime:
        """Extend the subscription to the longest allowed life. GraphError propagates (404: it is gone)."""
        expiration = new_expiration()
        answer = await self.graph.renew_subscription(record.subscription_id, expiration) or {}
        expires = _parse_time(answer.get("expirationDateTime")) or expiration
        await self._record_expiration(record, expires)
        return expires

    async def _record_expiration(self, record: SubscriptionRecord, expires: datetime) -> None:
        await self.table.update_entity(
            {"PartitionKey": record.mailbox, "RowKey": SUBSCRIPTION_ROW, "ExpirationDateTime": expires,
             "Failures": 0, "LastError": ""}, mode=UpdateMode.MERGE)
        await self.index.update_entity(
            {"PartitionKey": record.subscription_id, "RowKey": "", "ExpirationDateTime": expires},
            mode=UpdateMode.MERGE)

    async def record_failure(self, record: SubscriptionRecord, error: str) -> int:
        """Count a failed renewal; returns how many in a row."""
        failures = record.failures + 1
        try:
            await self.table.update_entity(
                {"PartitionKey": record.mailbox, "RowKey": SUBSCRIPTION_ROW, "Failures": failures,
                 "LastError": error[:500]}, mode=UpdateMode.MERGE)
        except ResourceNotFoundError:
            pass
        return failures

    async def forget(self, record: SubscriptionRecord) -> None:
        """Drop our rows of a subscription Graph no longer has (404, subscriptionRemoved)."""
        forget_cached(record.subscription_id)
        try:
            await self.index.delete_entity(record.subscription_id, "")
        except ResourceNotFoundError:
            pass
        try:
            await self.table.delete_entity(record.mailbox, SUBSCRIPTION_ROW, etag=record.etag,
                                           match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, HttpResponseError):
            pass  # already replaced by a newer one: leave it

    async def all_index_entries(self) -> Any:
        """Every subscription we know (pages through the index table)."""
        async for entity in self.index.list_entities(select=["PartitionKey", "Mailbox", "ExpirationDateTime"]):
            yield entity


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    text = str(value).replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
