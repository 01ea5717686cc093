"""Keeping every mailbox's subscription alive: the renewal sweep (timer) and the task worker (queue).

The subscription lifecycle itself (renew, reauthorize, re-create, repair, delete orphans) is
``shared.services.subscriptions``; this module plans the sweep and paces the work.

The sweep (``RENEWAL_SCHEDULE``, default every 30 minutes) does no renewals itself. It pages
through what we know and puts one task per piece of work on ``subscription-tasks``:

- ``renew`` for every subscription expiring within ``RENEWAL_WINDOW_MINUTES``;
- (itself) lists Graph's subscriptions once (``Subscriptions.audit``) and deletes those that point at this app
  but that no mailbox knows (orphans of a crash);
- ``renew`` for every active subscription of a mailbox with flows that Graph's listing lacks: Graph removed it
  and its ``subscriptionRemoved`` lifecycle notification was lost. The renewal answers 404 and the worker
  re-creates it at once (below), so such a mailbox is watched again within one sweep period plus its pacing
  (30 minutes on the default schedule; its changes meanwhile are found by the delta check or the resync);
  a subscription Graph merely listed late is renewed early, which is harmless;
- ``repair`` for every mailbox that has flows but no working subscription (a crash between steps, a
  manual deletion, a stuck 'creating'/'deleting' row whose owner died), and for every subscription row
  left behind by a mailbox that no longer has flows.

The tasks travel in queue messages of up to ``TASKS_PER_MESSAGE`` and are spread out in time with the
queue's visibility delay — the message starting with task *i* becomes visible after
*i / SUBSCRIPTION_WRITES_PER_SECOND* seconds, and the worker paces the writes within it at the same
rate — so the workers stay under Graph's 500 subscription writes per 20 s per app, and no invocation
holds more than a few seconds of work however many subscriptions there are (the Functions time limit).
A task that is throttled anyway goes back on the queue on its own, with the delay Graph's
``Retry-After`` asks for (no dequeue count is spent on throttling).

Why several tasks per message: 10,000 subscriptions as 10,000 messages waiting out their delays make
every queue operation slower on Azurite (it scans all messages: 83 ms per receive+delete at 10,000
against 4 ms on an empty queue) and cost a queue transaction per renewal on Azure; 50 per message make
it 200 messages (format: ``shared.messages.subscription_tasks``).

Every sweep ends with its heartbeat, ``RenewalSweepCompleted``: how many renewals and repairs it enqueued,
the orphans it deleted, and the soonest expiry among the live subscriptions it saw (with that mailbox and
subscription id). The renewal-heartbeat alert fires when no sweep reported for 2 hours (the timer stopped,
the app is down, or the sweep fails before its end) or when that expiry is under 6 hours away (renewals are
enqueued from 24 hours before it, so every one of them failed). Alerting on the last renewal instead cannot
work: a subscription lives 70.25 hours, longer than a log alert can look back.

Task outcomes: a renewal answered 404 means Graph dropped the subscription: it is re-created and the
mailbox gets a full resync (changes in between were not notified). Other failures are counted on the
subscription row; from the third in a row each one is an error-level log and a
``SubscriptionRenewalFailed`` event naming the mailbox, and the task keeps being retried with back-off
(and by every later sweep) for as long as the mailbox has flows.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import azure.functions as func
from cachetools import TTLCache

from shared.adapters.monitoring import correlated, telemetry_context, track_event
from shared.adapters.per_loop import PerLoop
from shared.adapters.settings import get_settings
from shared.contracts import events
from shared.messages.subscription_tasks import SubscriptionTask, enqueue_task, enqueue_tasks, parse_message, task
from shared.records import flows, subscription_rows
from shared.records.flows import mailboxes_with_flows
from shared.records.mailbox import ensure_index
from shared.records.subscription_rows import SubscriptionRecord
from shared.services.graph_failures import GraphFailure
from shared.services.subscriptions import Subscriptions

log = logging.getLogger(__name__)

FAILURES_BEFORE_ALERT = 3
ENQUEUE_CONCURRENCY = 32
TASKS_PER_MESSAGE = 50  # about 2 s of writes at Graph's rate: far inside any time limit
RETRY_AFTER_ERROR_SECONDS = 30
THROTTLED_DEFAULT_SECONDS = 30
MAX_BACKOFF_SECONDS = 900
MISSING_FROM_GRAPH = "missing from Graph's list"
# A change the delta check found that no notification announced: the subscription may be gone. Renewing it finds
# out (a 404 re-creates it). At most once per mailbox and cool-down on each instance, so a mailbox whose
# notifications merely race the delta check costs at most four subscription writes an hour.
UNANNOUNCED_CHANGE = "a change was never notified"
UNANNOUNCED_COOLDOWN = timedelta(minutes=15)
_checked: TTLCache[str, bool] = TTLCache(20_000, UNANNOUNCED_COOLDOWN.total_seconds())


@dataclass
class SweepReport:
    renewals: int = 0
    repairs: int = 0
    orphans_deleted: int = 0
    tasks: list[SubscriptionTask] = field(default_factory=list)
    known_ids: set[str] = field(default_factory=set)  # subscription ids our mailbox rows name
    live: int = 0  # active subscriptions of mailboxes with flows
    earliest: SubscriptionRecord | None = None  # of those, the one that expires first
    earliest_mailbox: str = ""
    watched: dict[str, str] = field(default_factory=dict)  # id → mailbox: active, with flows, not renewed now
    missing: int = 0  # of those, how many Graph's listing lacked (renewed to find out: a 404 re-creates)


async def plan_sweep(now: datetime | None = None) -> SweepReport:
    """What the sweep would enqueue, without enqueueing it."""
    now = now or datetime.now(UTC)
    horizon = now + timedelta(minutes=get_settings().renewal_window_minutes)
    await ensure_index(flows.INDEX, flows.backfill_index)
    await ensure_index(subscription_rows.INDEX, subscription_rows.backfill_index)
    with_flow_list, rows = await asyncio.gather(mailboxes_with_flows(), subscription_rows.all_rows())
    with_flows = set(with_flow_list)
    report = SweepReport()
    for mailbox, record in rows.items():
        report.known_ids.add(record.subscription_id)
        if mailbox not in with_flows:
            if not record.lease_held(now):
                report.tasks.append(task("repair", mailbox, record.subscription_id, "no flows left"))
                report.repairs += 1
        elif record.state != "active":
            if not record.lease_held(now):
                report.tasks.append(task("repair", mailbox, record.subscription_id, f"stuck {record.state}"))
                report.repairs += 1
        else:
            report.live += 1
            if record.expiration is not None and (report.earliest is None or report.earliest.expiration is None
                                                  or record.expiration < report.earliest.expiration):
                report.earliest, report.earliest_mailbox = record, mailbox
            if record.expiration is None or record.expiration <= horizon:
                report.tasks.append(task("renew", mailbox, record.subscription_id, "expiring"))
                report.renewals += 1
            else:
                report.watched[record.subscription_id] = mailbox
    for mailbox in sorted(with_flows - rows.keys()):
        report.tasks.append(task("repair", mailbox, "", "flows without a subscription"))
        report.repairs += 1
    return report


async def sweep(now: datetime | None = None) -> SweepReport:
    """The renewal timer's work: enqueue paced tasks for every renewal and repair due."""
    with correlated():
        return await _sweep(now)


async def _sweep(now: datetime | None) -> SweepReport:
    started_at = asyncio.get_running_loop().time()
    report = await plan_sweep(now)
    rate = get_settings().subscription_writes_per_second
    limit = asyncio.Semaphore(ENQUEUE_CONCURRENCY)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def put(first: int) -> None:
        chunk = report.tasks[first:first + TASKS_PER_MESSAGE]
        async with limit:
            # Visible first/rate seconds after the sweep began, however long enqueueing took (a delay
            # counted from each message's own enqueue time would bunch the late ones together).
            due = started + first / rate
            await enqueue_tasks(chunk, delay_seconds=max(0, round(due - loop.time())))

    await asyncio.gather(*(put(i) for i in range(0, len(report.tasks), TASKS_PER_MESSAGE)))
    log.info("renewal sweep: %d renewals and %d repairs enqueued over %d s", report.renewals, report.repairs,
             len(report.tasks) // rate)
    await _audit(report, now)
    heartbeat(report, (asyncio.get_running_loop().time() - started_at) * 1000)
    return report


async def _audit(report: SweepReport, now: datetime | None) -> None:
    """Graph's own list against the rows: delete orphans, renew what Graph lacks (a 404 re-creates it)."""
    try:
        audit = await Subscriptions().audit(now, report.known_ids, report.watched)
    except GraphFailure as error:  # the next sweep tries again; renewals are already on their way
        log.warning("subscription audit skipped: Graph %s %s", error.graph_status, error.graph_code)
        return
    report.orphans_deleted, report.missing = audit.orphans_deleted, len(audit.missing)
    missing = [task("renew", mailbox, sub_id, MISSING_FROM_GRAPH) for mailbox, sub_id in audit.missing]
    for mailbox, sub_id in audit.missing:
        log.warning("subscription %s of %s is not in Graph's list; renewing it (a 404 re-creates it)", sub_id,
                    mailbox, extra={"mailbox": mailbox, "subscriptionId": sub_id})
    for first in range(0, len(missing), TASKS_PER_MESSAGE):  # rare and few: paced by the worker only
        await enqueue_tasks(missing[first:first + TASKS_PER_MESSAGE])


async def check_after_unannounced_change(mailbox: str) -> bool:
    """The delta check found a change of ``mailbox`` that no notification announced: renew its subscription now
    (whichever it is) instead of waiting for the sweep's audit, so a subscription Graph removed without a word is
    re-created within a delta period whenever its mailbox changes. False when this instance checked the mailbox
    within ``UNANNOUNCED_COOLDOWN`` (nothing queued)."""
    if mailbox in _checked:
        return False
    await enqueue_task(task("renew", mailbox, "", UNANNOUNCED_CHANGE))
    _checked[mailbox] = True
    return True


def heartbeat(report: SweepReport, duration_ms: float) -> None:
    """The sweep's ``RenewalSweepCompleted`` event, which the renewal-heartbeat alert watches."""
    earliest = report.earliest
    expires = earliest.expiration.astimezone(UTC).isoformat() if earliest and earliest.expiration else ""
    track_event(events.RENEWAL_SWEEP_COMPLETED, mailbox=report.earliest_mailbox or None,
                subscriptionId=earliest.subscription_id if earliest else None, earliestExpiresAt=expires,
                subscriptionCount=report.live, renewalCount=report.renewals, repairCount=report.repairs,
                deletedCount=report.orphans_deleted, missingCount=report.missing, durationMs=round(duration_ms))


# ---- the worker -----------------------------------------------------------------------------------


async def _retry_later(item: SubscriptionTask, seconds: float) -> None:
    again = dict(item)
    again["attempt"] = int(item.get("attempt", 0)) + 1  # type: ignore[typeddict-unknown-key]
    # Spread the retries: tasks throttled together and retried together would be throttled together again.
    spread = random.uniform(0, max(1.0, seconds))  # noqa: S311 - jitter only
    await enqueue_task(again, delay_seconds=max(1, round(seconds + spread)))  # type: ignore[arg-type]


class _WritePacer:
    """At most ``rate`` subscription writes per second from this worker process.

    The sweep already spreads tasks in time; this smooths what a worker picks up in bursts (a batch of 16
    messages at once, a backlog after a pause), so one instance alone never outruns Graph's limit."""

    def __init__(self) -> None:
        self.next_slot = 0.0
        self.lock = asyncio.Lock()

    async def wait(self, rate: int) -> None:
        loop = asyncio.get_running_loop()
        async with self.lock:
            slot = max(loop.time(), self.next_slot)
            self.next_slot = slot + 1 / rate
        await asyncio.sleep(max(0.0, slot - loop.time()))


_pacers = PerLoop(_WritePacer)


async def _pace_write() -> None:
    await _pacers.get().wait(get_settings().subscription_writes_per_second)


async def run_task(item: SubscriptionTask) -> str:
    """Do one task. Returns what happened (for the log line and tests)."""
    with telemetry_context(mailbox=item["mailbox"], correlationId=item["correlationId"] or None):
        return await _run_task(item)


async def _run_task(item: SubscriptionTask) -> str:
    subs = Subscriptions()
    record = await subs.get(item["mailbox"])
    if item["action"] == "repair":
        return await _repair(subs, item, record)
    if item["action"] == "recreate":
        await _pace_write()
        reason = item["reason"] or "subscriptionRemoved"
        await subs.recreate(item["mailbox"], None if _stale(item, record) else record, reason)
        return "recreated"
    return await _renew(subs, item, record)


def _stale(item: SubscriptionTask, record: SubscriptionRecord | None) -> bool:
    """The task names a subscription the mailbox no longer has (replaced or removed since the sweep)."""
    return record is None or bool(item["subscriptionId"] and record.subscription_id != item["subscriptionId"])


async def _repair(subs: Subscriptions, item: SubscriptionTask, record: SubscriptionRecord | None) -> str:
    settled = await subs.repair_rows(item["mailbox"], record, item["reason"])
    if settled is not None:
        return settled
    await _pace_write()  # a sweep can carry thousands of repairs (after a disaster): same limit as renewals
    await subs.recreate(item["mailbox"], None, "repair")
    return "recreated"


async def _renew(subs: Subscriptions, item: SubscriptionTask, record: SubscriptionRecord | None) -> str:
    """A ``renew`` or ``reauthorize`` task: is it still the mailbox's subscription, ask Graph, handle the answer."""
    if _stale(item, record) or record is None or record.state != "active":
        await subs.refresh_index(item["mailbox"], record)  # the sweep planned on an outdated copy
        return "stale task"  # the subscription it names was replaced or removed meanwhile
    await _pace_write()
    try:
        expires = await (subs.reauthorize(record) if item["action"] == "reauthorize" else subs.renew(record))
    except GraphFailure as error:
        return await _after_refusal(subs, item, record, error)
    track_event(events.SUBSCRIPTION_RENEWED, mailbox=item["mailbox"], subscriptionId=record.subscription_id,
                expiresAt=expires.isoformat(), attempt=int(item.get("attempt", 0)))
    return "renewed"


async def _after_refusal(subs: Subscriptions, item: SubscriptionTask, record: SubscriptionRecord,
                         error: GraphFailure) -> str:
    """Graph refused the renewal: re-create a subscription it dropped, come back when it throttled, count (and
    from the third in a row, report) any other failure and try again with back-off."""
    mailbox = item["mailbox"]
    if error.graph_status == 404:
        log.warning("subscription of %s is gone from Graph; re-creating it", mailbox,
                    extra={"mailbox": mailbox, "subscriptionId": record.subscription_id})
        await subs.recreate(mailbox, record, "subscriptionRemoved")
        return "recreated"
    if error.throttled:
        await _retry_later(item, error.retry_after or THROTTLED_DEFAULT_SECONDS)
        return "throttled"
    failures = await subs.record_failure(record, f"{error.graph_status} {error.graph_code}")
    dims = {"mailbox": mailbox, "subscriptionId": record.subscription_id, "status": error.graph_status,
            "errorCode": error.graph_code, "consecutiveFailures": failures,
            "expiresAt": record.expiration.isoformat() if record.expiration else ""}
    if failures >= FAILURES_BEFORE_ALERT:
        log.error("renewing the subscription of %s failed %d times in a row (%s %s)", mailbox, failures,
                  error.graph_status, error.graph_code, extra=dims)
        track_event(events.SUBSCRIPTION_RENEWAL_FAILED, logging.ERROR, **dims)
    await _retry_later(item, min(60 * 2 ** failures, MAX_BACKOFF_SECONDS))
    return "failed"


async def handle_message(msg: func.QueueMessage) -> None:
    """The queue trigger's entry: a malformed message is logged and dropped (retrying cannot fix it).

    The tasks of a message run side by side (``run_task`` paces their Graph writes). One that fails
    unexpectedly (storage down) goes back on the queue alone, so the others are not repeated."""
    try:
        items = parse_message(msg.get_body())
    except ValueError as error:
        log.error("dropped a malformed subscription task: %s", error)
        return

    async def one(item: SubscriptionTask) -> None:
        try:
            outcome = await run_task(item)
        except Exception as error:
            if len(items) == 1:
                raise  # the runtime retries the message, and poisons it in the end
            log.warning("subscription task %s for %s failed (%s); retrying it alone", item["action"],
                        item["mailbox"], type(error).__name__, extra={"mailbox": item["mailbox"]})
            await _retry_later(item, RETRY_AFTER_ERROR_SECONDS)
            outcome = "retried alone"
        log.info("subscription task %s for %s: %s", item["action"], item["mailbox"], outcome,
                 extra={"mailbox": item["mailbox"], "correlationId": item["correlationId"]})

    await asyncio.gather(*(one(item) for item in items))
