"""One Microsoft Graph subscription per Bookings mailbox: created with its first flow, deleted with its last.

Graph has no change notifications for Bookings; a business is a mailbox, so we subscribe to its
calendar (``/users/{smtp}/events``, created/updated/deleted) and treat each notification as a hint
(docs/architecture.md).

The rows it keeps are the mailbox's ``subscription`` row (``shared.records.subscription_rows``) and the
subscription index (``shared.records.subscription_index``), which the notification endpoint reads.

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

The rest of the lifecycle is here too, driven by the renewal worker (``shared.workers.renewal``), which plans
the sweep and paces the Graph writes: renew (and reauthorize) a subscription, re-create one Graph dropped, repair
a mailbox whose rows disagree with its flows, delete the orphans Graph has but no mailbox row knows, and name the
subscriptions the rows know but Graph no longer lists (``audit``). Graph's
refusals reach the worker as ``GraphFailure`` (``shared.services.graph_failures``), which keeps Graph's status.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.adapters.graph import Graph, GraphError, get_graph
from shared.adapters.monitoring import track_event
from shared.adapters.settings import get_settings
from shared.contracts import events
from shared.contracts.errors import ApiError
from shared.messages import mailbox_changes
from shared.records import flows, reconcile_state, subscription_index, subscription_rows
from shared.records.flows import flow_count
from shared.records.subscription_rows import SubscriptionRecord
from shared.services.graph_failures import GraphFailure

log = logging.getLogger(__name__)

CHANGE_TYPES = "created,updated,deleted"
MAX_EVENT_SUBSCRIPTION_MINUTES = 4230  # Graph's limit for Outlook event subscriptions
# Ask a little less than the limit: clocks differ, and Graph refuses an expiration past its maximum.
EXPIRATION_MARGIN_MINUTES = 15
# The owner of a 'creating'/'deleting' row keeps it this long: Graph's validation handshake alone may
# take 10 s, and Graph itself may be slow to answer.
LEASE = timedelta(seconds=45)
# A registration waits this long for another registration's subscription creation to finish.
WAIT_FOR_OTHERS_SECONDS = 60.0


def notification_urls() -> tuple[str, str]:
    base = get_settings().public_base_url
    return f"{base}/api/graph/notifications", f"{base}/api/graph/lifecycle"


def resource_for(mailbox: str) -> str:
    return f"/users/{mailbox}/events"


def new_expiration(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now + timedelta(minutes=MAX_EVENT_SUBSCRIPTION_MINUTES - EXPIRATION_MARGIN_MINUTES)


def graph_failure(error: GraphError, mailbox: str) -> GraphFailure:
    """The answer when Graph would not do what the lifecycle asked (a registration's remedy says why)."""
    if error.status == 400 and "valid" in f"{error.code} {error.message}".lower():
        return GraphFailure(error, "SubscriptionValidationFailed", business=mailbox)
    if error.status in (401, 403):
        return GraphFailure(error, "GraphPermissionMissing", business=mailbox, graph_code=error.code)
    if error.throttled:
        wait = int(error.retry_after or 30)
        return GraphFailure(error, "GraphThrottled", headers={"Retry-After": str(wait)}, seconds=wait)
    if error.status == 404:
        return GraphFailure(error, "BookingBusinessNotFound", business=mailbox)
    return GraphFailure(error, "DependencyUnavailable", dependency=f"Microsoft Graph ({error.status} {error.code})")


@dataclass
class GraphAudit:
    """What comparing Graph's subscriptions with the rows found."""

    orphans_deleted: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)  # (mailbox, subscription id) Graph lacks


class Subscriptions:
    """The Graph subscription of every mailbox: its rows and the Graph calls that go with them."""

    def __init__(self, graph: Graph | None = None) -> None:
        self._graph = graph

    @property
    def graph(self) -> Graph:
        return self._graph or get_graph()

    @staticmethod
    async def get(mailbox: str) -> SubscriptionRecord | None:
        return await subscription_rows.get(mailbox)

    # ---- ensure (first flow) -----------------------------------------------------------------------

    async def ensure(self, mailbox: str) -> SubscriptionRecord:
        """Make sure the mailbox has an active subscription; create it if this caller wins the race."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_FOR_OTHERS_SECONDS
        delay = 0.05
        while True:
            now = datetime.now(UTC)
            record = await subscription_rows.get(mailbox)
            if record is not None and record.state == "active":
                return record
            if record is None or not record.lease_held(now):
                claimed = await subscription_rows.claim(mailbox, record, now, LEASE)
                if claimed is not None:
                    return await self._create(mailbox, claimed, stale=record)
            if loop.time() > deadline:
                raise ApiError("DependencyUnavailable",
                               dependency="Microsoft Graph (another registration is still creating the subscription)")
            await asyncio.sleep(delay + random.uniform(0, delay))  # noqa: S311 - jitter only
            delay = min(delay * 2, 1.0)

    async def _create(self, mailbox: str, etag: str, stale: SubscriptionRecord | None) -> SubscriptionRecord:
        if stale is not None and stale.subscription_id:
            # The previous owner died after Graph created (or before it deleted) this one.
            await self._forget_in_graph(stale.subscription_id, mailbox)
        await reconcile_state.start_watching(mailbox)
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
            await subscription_rows.delete_claimed(mailbox, etag)
            raise graph_failure(error, mailbox) from None
        subscription_id = created["id"]
        expires = _parse_time(created.get("expirationDateTime")) or expiration
        try:
            await subscription_index.put(subscription_id, mailbox, client_state, expires)
            new_etag = await subscription_rows.activate(mailbox, etag, subscription_id, client_state, expires)
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
        return SubscriptionRecord(mailbox, "active", subscription_id, client_state, expires, None, new_etag)

    @staticmethod
    async def _enqueue_baseline(mailbox: str, subscription_id: str) -> None:
        message = mailbox_changes.change_message(mailbox, subscription_id=subscription_id, full_resync=True,
                                                 baseline=True, reason="created")
        try:
            await mailbox_changes.enqueue(message)
        except Exception as error:  # the first notification or the periodic resync will do it instead
            log.warning("could not enqueue the baseline of %s (%s)", mailbox, type(error).__name__)

    async def _forget_in_graph(self, subscription_id: str, mailbox: str) -> None:
        try:
            await self.graph.delete_subscription(subscription_id)
        except GraphError as error:
            log.error("could not delete Graph subscription %s of %s (%s); the renewal sweep will retry",
                      subscription_id, mailbox, error.code,
                      extra={"mailbox": mailbox, "subscriptionId": subscription_id})
        await subscription_index.delete(subscription_id)

    # ---- release (last flow gone) ------------------------------------------------------------------

    async def release(self, mailbox: str, flows_left: Callable[[], Awaitable[int]] | None = None) -> None:
        """Delete the mailbox's subscription, unless a flow was registered meanwhile.

        ``flows_left`` (default: the mailbox's flow count) is asked after the row is marked 'deleting', so
        a registration racing with this release either sees 'deleting' (and waits, then creates a fresh
        subscription) or is counted here (and the release backs off).
        """
        record = await subscription_rows.get(mailbox)
        now = datetime.now(UTC)
        if record is None or (record.state != "active" and record.lease_held(now)):
            return  # nothing to release, or its owner is at work on it
        # An active row, or a 'creating'/'deleting' one whose owner died (lease run out): ours to finish.
        marked = await subscription_rows.mark_deleting(record, now, LEASE)
        if marked is None:
            return  # changed under us: whoever changed it decides
        if await (flows_left() if flows_left else flow_count(mailbox)) > 0:
            if record.state == "active":
                await subscription_rows.reactivate(mailbox, marked)
            else:
                await subscription_rows.delete_claimed(mailbox, marked)  # a new flow's ensure() starts afresh
            return
        try:
            if record.subscription_id:
                await self.graph.delete_subscription(record.subscription_id)
        except GraphError as error:
            # Left in 'deleting'; when the lease runs out the renewal sweep (or a new flow) takes it over.
            log.error("could not delete subscription %s of %s: %s %s", record.subscription_id, mailbox,
                      error.status, error.code, extra={"mailbox": mailbox,
                                                       "subscriptionId": record.subscription_id})
            return
        if record.subscription_id:
            await subscription_index.delete(record.subscription_id)
        # Before the row goes (a crash here leaves it 'deleting', and the renewal sweep's repair comes back).
        forgotten = await reconcile_state.forget_mailbox(mailbox)
        await subscription_rows.delete_claimed(mailbox, marked)
        log.info("subscription %s of %s deleted with the last flow; %d rows of appointment data deleted",
                 record.subscription_id, mailbox, forgotten,
                 extra={"mailbox": mailbox, "subscriptionId": record.subscription_id})
        track_event(events.SUBSCRIPTION_DELETED, mailbox=mailbox, subscriptionId=record.subscription_id,
                    reason="lastFlowRemoved")

    # ---- renewal, re-creation and repair (driven by shared.workers.renewal) ------------------------------

    async def renew(self, record: SubscriptionRecord) -> datetime:
        """Extend the subscription to the longest allowed life. ``GraphFailure`` when Graph refuses (its
        ``graph_status`` 404: the subscription is gone)."""
        expiration = new_expiration()
        try:
            answer = await self.graph.renew_subscription(record.subscription_id, expiration) or {}
        except GraphError as error:
            raise graph_failure(error, record.mailbox) from None
        expires = _parse_time(answer.get("expirationDateTime")) or expiration
        await subscription_rows.record_expiration(record, expires)
        await subscription_index.set_expiration(record.subscription_id, expires)
        return expires

    async def reauthorize(self, record: SubscriptionRecord) -> datetime:
        """Reauthorize the subscription (Graph asked for it), then renew it: reauthorizing keeps the expiration.
        Any other refusal of the reauthorization than 404 or throttling is left to the renewal to show."""
        try:
            await self.graph.reauthorize_subscription(record.subscription_id)
        except GraphError as error:
            if error.status == 404 or error.throttled:
                raise graph_failure(error, record.mailbox) from None
        return await self.renew(record)

    async def recreate(self, mailbox: str, record: SubscriptionRecord | None, reason: str) -> None:
        """Forget ``record``'s subscription (gone from Graph, or replaced) and, while the mailbox has flows, create
        a new one and resync the mailbox in full: changes in between were not notified."""
        if record is not None:
            await self.forget(record)
            try:
                await self.graph.delete_subscription(record.subscription_id)  # in case Graph still has it
            except GraphError:
                pass
        if await flow_count(mailbox) == 0:
            return
        created = await self.ensure(mailbox)
        await mailbox_changes.enqueue(mailbox_changes.full_resync(mailbox, reason, created.subscription_id))

    async def repair_rows(self, mailbox: str, record: SubscriptionRecord | None, reason: str) -> str | None:
        """Bring the mailbox's rows in line with its flows where no new subscription is needed, and say what was
        done; None when the mailbox has flows but no working subscription (``recreate`` it)."""
        if await flow_count(mailbox) == 0:
            if record is not None:
                await self.release(mailbox)  # also a stuck 'creating'/'deleting' row whose owner died
                return "released"
            # The sweep saw this mailbox in an index it no longer belongs in: drop what is left of it there.
            await flows.drop_index_if_unused(mailbox)
            await subscription_rows.refresh_index(mailbox, None)
            return "nothing to do"
        if reason == "no flows left":  # but there are: the flows index lost the mailbox's row
            await flows.restore_index(mailbox)
        if record is not None and record.state == "active":
            await subscription_rows.refresh_index(mailbox, record)  # the sweep's copy said otherwise
            return "already active"
        return None

    @staticmethod
    async def refresh_index(mailbox: str, record: SubscriptionRecord | None) -> None:
        """Write the renewal sweep's copy of the mailbox's row again (the sweep planned on an outdated one)."""
        await subscription_rows.refresh_index(mailbox, record)

    @staticmethod
    async def record_failure(record: SubscriptionRecord, error: str) -> int:
        """Count a failed renewal; returns how many in a row."""
        return await subscription_rows.record_failure(record, error)

    @staticmethod
    async def forget(record: SubscriptionRecord) -> None:
        """Drop our rows of a subscription Graph no longer has (404, subscriptionRemoved)."""
        await subscription_index.delete(record.subscription_id)
        await subscription_rows.delete(record)

    async def delete_orphans(self, now: datetime | None = None, known_ids: set[str] | None = None) -> int:
        """Delete Graph subscriptions that point at this app but that no mailbox row knows; returns how many
        (``audit`` without the watched subscriptions)."""
        return (await self.audit(now, known_ids or set(), {})).orphans_deleted

    async def audit(self, now: datetime | None, known_ids: set[str], watched: dict[str, str]) -> GraphAudit:
        """Compare Graph's list of the app's subscriptions with the rows: delete the orphans, name the missing.

        One paged ``GET /subscriptions``: called app-only it lists the subscriptions this app created for any
        user of the tenant (https://learn.microsoft.com/en-us/graph/api/subscription-list, "Permissions").
        Orphans (Graph has them, no mailbox row knows them) appear when an instance dies between Graph creating a
        subscription and the app recording it; one still being created (its row 'creating' under a live lease)
        is left alone. ``known_ids`` (what the sweep's mailbox rows name) spares a storage read per subscription;
        the others are checked one by one against the index and the mailbox row. Missing: ``watched`` (id →
        mailbox: active rows of mailboxes with flows) that Graph does not list, removed without a word (a lost
        ``subscriptionRemoved``); the caller has them renewed, and a renewal answered 404 re-creates them.
        ``GraphFailure`` when Graph would not list or delete them.
        """
        now = now or datetime.now(UTC)
        ours = notification_urls()[0]
        result = GraphAudit()
        try:
            listed = await self.graph.list_subscriptions()
        except GraphError as error:
            raise graph_failure(error, "") from None
        listed_ids = {graph_sub.get("id") for graph_sub in listed}
        result.missing = sorted((mailbox, sub_id) for sub_id, mailbox in watched.items() if sub_id not in listed_ids)
        for graph_sub in listed:
            if graph_sub.get("notificationUrl") != ours or graph_sub.get("id") in known_ids:
                continue
            mailbox = _mailbox_of(graph_sub.get("resource", ""))
            if await self._still_wanted(graph_sub.get("id", ""), mailbox, now):
                continue
            try:
                await self.graph.delete_subscription(graph_sub["id"])
            except GraphError as error:
                raise graph_failure(error, mailbox) from None
            result.orphans_deleted += 1
            log.warning("deleted orphaned Graph subscription %s (%s)", graph_sub["id"], mailbox or "unknown mailbox",
                        extra={"subscriptionId": graph_sub["id"], "mailbox": mailbox})
        return result

    async def _still_wanted(self, subscription_id: str, mailbox: str, now: datetime) -> bool:
        """Whether a Graph subscription no sweep row names is known after all, or is being created."""
        if await subscription_index.lookup(subscription_id) is not None:
            return True
        record = await self.get(mailbox) if mailbox else None
        return record is not None and (record.subscription_id == subscription_id
                                       or (record.state == "creating" and record.lease_held(now)))


async def ensure(mailbox: str) -> SubscriptionRecord:
    """The mailbox's active subscription, created with its first flow."""
    return await Subscriptions().ensure(mailbox)


async def release_if_no_flows(mailbox: str) -> None:
    """After a mailbox lost its last flow: delete its subscription (unless a flow came back meanwhile)."""
    await Subscriptions().release(mailbox)


def _mailbox_of(resource: str) -> str:
    """``/users/{smtp}/events`` → smtp (what we subscribe to; Graph may echo it with other casing)."""
    parts = [p for p in resource.split("/") if p]
    return parts[1].lower() if len(parts) >= 3 and parts[0].lower() == "users" else ""


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
