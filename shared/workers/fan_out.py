"""Fan-out: an event's ``pending`` outbox row becomes one delivery message per flow registered for its trigger
(and, for a flow with service or staff filters, matching them: ``Flow.matches``).

Right after the reconcile commits outbox rows it calls ``fan_out(..., attempt_now=delivery.attempt)``; for rows a
failure left ``pending``, the retry of the same hint calls it again, and the outbox sweep (queue only)
whatever a retry did not reach. Each row is marked ``fannedOut`` only after its messages are queued, so a
crash in between makes duplicate messages at worst, which receivers recognise by the idempotency key:
delivery is at-least-once, never at-most-once.

Each message carries its event (``shared.messages.deliveries``) when it fits, so the delivery reads no
outbox row. With ``attempt_now`` (the delivery worker's ``attempt``, which the caller passes) the first
attempts are made here, at once, rather than after the deliveries queue's polling delay (up to
``maxPollingInterval`` when the queue was idle, once more per hop): each message is queued first, invisible
for ``SAFETY_NET_SECONDS``, and deleted once its attempt has run to an outcome, so an instance that dies
mid-attempt leaves it to the queue. That costs the queue a put and a delete per delivery instead of a put, a
get and a delete. Fan-out waits for the attempts up to ``ATTEMPT_WAIT_SECONDS``; slower ones (a flow taking
its time to answer) go on in the background, so the reconcile's invocation is not held by one slow flow. The
Python worker runs every async function on its one event loop, so such a task goes on after the invocation
ends; an instance recycled meanwhile leaves its message to the queue, as a crash does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from shared.adapters.per_loop import PerLoop
from shared.messages import deliveries
from shared.records import delivery_log, outbox
from shared.records.flows import Flow, FlowRegistry

log = logging.getLogger(__name__)

ENQUEUE_CONCURRENCY = 16
ATTEMPT_WAIT_SECONDS = 5.0
# A first attempt made here has its message queued first, invisible this long: longer than an attempt can
# take (the POST's 30 s timeout plus storage), so the queue offers it only when the attempt never finished
# (the instance died, or storage failed while recording the outcome). That is also how late such a delivery
# comes: sooner than a message whose worker died, which waits out the queue's 10-minute lease on Azure.
SAFETY_NET_SECONDS = 60
# Attempts still running after fan-out returned, kept referenced so that their loop does not drop them.
_background: PerLoop[set[asyncio.Task[None]]] = PerLoop(set)

# One attempt of a delivery message to an outcome (delivered, retry queued, dead letter); it raises when the
# attempt reached none. The delivery worker's ``attempt``: the caller passes it, so fan-out needs no worker.
FirstAttempt = Callable[[deliveries.DeliveryMessage], Awaitable[None]]


async def fan_out(mailbox: str, event_ids: Iterable[str], *, attempt_now: FirstAttempt | None = None,
                  flows: list[Flow] | None = None) -> int:
    """Enqueue one delivery per (event, matching flow) and mark each row ``fannedOut``; with ``attempt_now``,
    make the first attempts with it too (see the module); ``flows``: the mailbox's flows as the caller read them
    since the events were derived (the reconcile's hook), else read here. Returns messages sent.

    Rows already ``fannedOut`` are skipped, so calling this twice for the same events is harmless."""
    limit = asyncio.Semaphore(ENQUEUE_CONCURRENCY)
    attempts: list[tuple[deliveries.DeliveryMessage, Any]] = []

    async def send(message: deliveries.DeliveryMessage) -> None:
        async with limit:
            if attempt_now is not None:
                attempts.append((message, await deliveries.enqueue(message, SAFETY_NET_SECONDS)))
            else:
                await deliveries.enqueue(message)

    try:
        sent = await _queue_all(mailbox, event_ids, send, flows)
    except Exception:
        # Messages already queued are invisible for the safety net's minute: make their attempts anyway (a
        # storage blip while marking a row must not hold deliveries back that long), then fail as before.
        await _attempt(attempt_now, attempts, limit)
        raise
    await _attempt(attempt_now, attempts, limit)
    return sent


async def _queue_all(mailbox: str, event_ids: Iterable[str],
                     send: Callable[[deliveries.DeliveryMessage], Awaitable[None]], flows: list[Flow] | None) -> int:
    sent = 0
    for event in event_ids:
        row = await outbox.get(mailbox, event)
        if row is None:
            log.warning("fan-out: event %s of %s is not in the outbox", event, mailbox, extra={"mailbox": mailbox})
            continue
        if row.get("State") == outbox.FANNED_OUT:
            continue
        if flows is None:
            flows = await FlowRegistry.default().list_flows(mailbox)
        now = datetime.now(UTC)
        targets = [flow for flow in flows if flow.trigger == row.get("Trigger")]
        if row.get("FlowId"):  # a time-relative trigger's event: for its one flow (outbox.put_reminder_event)
            targets = [flow for flow in targets if flow.webhook_id == row["FlowId"]]
        if any(flow.filtered for flow in targets):  # a flow filtered out gets no delivery at all
            services, staff = await outbox.filter_keys(mailbox, event, row)
            matching = [flow for flow in targets if flow.matches(services, staff)]
            _log_filtered(mailbox, event, row, [f.webhook_id for f in targets if f not in matching], now)
            targets = matching
        carried = _carried(row) if targets else None
        await asyncio.gather(*(send(deliveries.new_message(mailbox, event, flow.webhook_id, now, carried))
                               for flow in targets))
        sent += len(targets)
        if not await outbox.mark_fanned_out(mailbox, event, now, len(targets)):
            log.warning("fan-out: event %s of %s vanished while being fanned out", event, mailbox)
        log.info("event %s of %s (%s) fanned out to %d flow(s)", event, mailbox, row.get("Trigger"), len(targets),
                 extra={"mailbox": mailbox, "eventId": event})
    return sent


def _log_filtered(mailbox: str, event: str, row: Any, flow_ids: list[str], now: datetime) -> None:
    """The flows the event's filters left out, in the delivery log (written behind; never fails the fan-out)."""
    delivery_log.note_filtered(mailbox, event, trigger=str(row.get("Trigger", "")),
                               appointment_id=str(row.get("AppointmentId", "")), flow_ids=flow_ids, at=now)


def _carried(row: Any) -> deliveries.DeliveryEvent | None:
    """The event for the messages to carry; None when its payload cannot be read (the worker then reads the
    row, fails as it would have, and the message ends as a dead letter an administrator can replay)."""
    try:
        return deliveries.event_from_row(row)
    except ValueError:
        log.error("fan-out: the payload of event %s is unreadable", row.get("RowKey"))
        return None


async def _attempt(attempt: FirstAttempt | None, attempts: list[tuple[deliveries.DeliveryMessage, Any]],
                   limit: asyncio.Semaphore) -> None:
    """Make the first attempts of the messages ``attempts`` holds (each with its queued copy)."""
    if attempt is None or not attempts:
        return
    run = attempt

    async def one(message: deliveries.DeliveryMessage, queued: Any) -> None:
        async with limit:
            await _first_attempt(run, message, queued)

    tasks = {asyncio.ensure_future(one(message, queued)) for message, queued in attempts}
    _, pending = await asyncio.wait(tasks, timeout=ATTEMPT_WAIT_SECONDS)
    background = _background.get()
    for task in pending:
        background.add(task)
        task.add_done_callback(background.discard)


async def _first_attempt(attempt: FirstAttempt, item: deliveries.DeliveryMessage, queued: Any) -> None:
    """``attempt(item)``, then delete ``queued`` (``item`` as enqueued for ``SAFETY_NET_SECONDS``) once the
    attempt has run to an outcome. When the attempt fails, the queue delivers the message later."""
    with deliveries.telemetry(item):
        try:
            await attempt(item)
        except Exception:
            log.exception("first attempt of event %s to flow %s failed; the queue offers it again in %d s",
                          item["eventId"], item["flowId"], SAFETY_NET_SECONDS)
            return
        try:
            await deliveries.delete(queued)
        except Exception as error:  # the queue then redelivers it: a duplicate, with the same idempotency key
            log.warning("first attempt of event %s to flow %s ran, but its queued copy could not be deleted (%s)",
                        item["eventId"], item["flowId"], type(error).__name__)
