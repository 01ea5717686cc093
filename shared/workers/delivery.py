"""The delivery worker (queue ``deliveries``): one attempt of one event to one flow, and what follows it.

It reads the payload from the event's outbox row and the callback URL from the flow row (neither travels
in the queue), then POSTs the payload as JSON through the guarded client (``shared.adapters.callback_client``)
with ``Idempotency-Key: idempotency_key(eventId, flowId)`` (the same on every retry), ``X-Bookings-Trigger``
and ``X-Bookings-Event-Id`` (and ``X-Bookings-Test: true`` on a test event). Outcomes:

===============================  ==================================================================
2xx                              done; flow health: delivered count, last status, failures reset
408, 429, 5xx, timeout,          retry: the message is enqueued again with ``attempt + 1`` and a
connection error                 visibility delay (``Retry-After`` when given, else exponential back-off
                                 with full jitter), until ``DELIVERY_RETRY_HOURS`` after
                                 ``firstAttemptAt``; then a dead letter
404, 410                         the flow is gone: unregister it (and release the mailbox's Graph
                                 subscription with its last flow)
3xx, other 4xx,                  dead letter at once (retrying cannot help)
address not allowed
===============================  ==================================================================

Retries are our own messages, not the runtime's dequeue count: the runtime's retry (visibility timeout
10 s, 5 dequeues) is far too short for a flow that is down for an hour, and is left for failures of this
worker itself. Those end in ``deliveries-poison``, which ``handle_poison`` turns into a dead letter.

The callback URL never reaches a log, an event or a dead letter: only ``redact_url`` of it.
"""

from __future__ import annotations

import json
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func

from shared.adapters.callback_client import post
from shared.adapters.logs import redact, redact_url
from shared.adapters.monitoring import telemetry_context, track_event
from shared.adapters.settings import get_settings
from shared.adapters.storage import DELIVERIES_QUEUE, poison_queue
from shared.contracts import events
from shared.contracts.appointment_data import upgrade_stored_payload
from shared.messages import deliveries
from shared.messages.deliveries import DeliveryMessage, idempotency_key, parse_message, parse_time
from shared.records import flows, outbox
from shared.records.dead_letters import DeadLetters
from shared.records.flows import Flow, FlowRegistry
from shared.services import subscriptions

log = logging.getLogger(__name__)

# Back-off of retried deliveries: full jitter, uniform in [0, min(cap, base * 2**attempt)] seconds.
BACKOFF_BASE_SECONDS = 5.0
BACKOFF_CAP_SECONDS = 15 * 60.0
# A Retry-After is honoured up to this; a larger (or absurd) value must not park a message for days.
RETRY_AFTER_CAP_SECONDS = 60 * 60.0


def backoff_seconds(attempt: int, retry_after: float | None) -> float:
    """Delay before attempt ``attempt + 1``: the receiver's Retry-After (capped), else full-jitter back-off."""
    if retry_after is not None:
        return min(retry_after, RETRY_AFTER_CAP_SECONDS)
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(attempt, 32))
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not security


def _parsed(message: func.QueueMessage, queue: str) -> DeliveryMessage | None:
    """The message's delivery, or None (logged) when it is not one: retrying cannot fix that, and without
    mailbox, event and flow there is no dead letter to write."""
    try:
        return parse_message(message.get_body())
    except ValueError as error:
        log.error("dropped a malformed %s message %s: %s", queue, message.id, error)
        return None


def _context(item: DeliveryMessage) -> Any:
    return telemetry_context(mailbox=item["mailbox"], flowId=item["flowId"], correlationId=item["correlationId"])


async def deliver(message: func.QueueMessage) -> None:
    """Queue trigger on ``deliveries``: one attempt of one event to one flow."""
    item = _parsed(message, "delivery")
    if item is not None:
        with _context(item):
            await _deliver(item)


async def _deliver(item: DeliveryMessage) -> None:
    mailbox, event, flow_id, attempt = item["mailbox"], item["eventId"], item["flowId"], item["attempt"]
    row = await outbox.get(mailbox, event)
    if row is None:
        log.error("delivery of event %s to flow %s abandoned: the event is no longer in the outbox", event, flow_id)
        return
    flow_entity = await flows.get_flow_entity(mailbox, flow_id)
    if flow_entity is None:
        log.info("delivery of event %s skipped: flow %s was removed", event, flow_id)
        return
    flow = Flow.from_entity(flow_entity)
    trigger = str(row.get("Trigger", ""))
    with telemetry_context(trigger=trigger):
        # An event stored by an earlier version goes out in today's contract (AppointmentId, Graph's ids).
        payload = upgrade_stored_payload(outbox.read_payload(row), str(row.get("AppointmentId", "")))
        body = json.dumps(payload, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "Idempotency-Key": idempotency_key(event, flow_id), "X-Bookings-Trigger": trigger,
                   "X-Bookings-Event-Id": event}
        if row.get("IsTest"):  # a sample the flow maker asked for (shared.endpoints.test_events)
            headers["X-Bookings-Test"] = "true"
        result = await post(flow.callback_url, body, headers)
        common = {"eventId": event, "attempt": attempt + 1, "status": result.status}
        if result.outcome == "delivered":
            await flows.record_delivery(flow, flow_entity, delivered=True, status=result.status_text)
            detected = row.get("DetectedAt")
            end_to_end = (round((datetime.now(UTC) - detected).total_seconds() * 1000)
                          if isinstance(detected, datetime) else None)
            track_event(events.DELIVERY_SUCCEEDED, durationMs=result.duration_ms, endToEndMs=end_to_end, **common)
            log.info("event %s delivered to flow %s at %s (attempt %d, HTTP %d)", event, flow_id,
                     redact_url(flow.callback_url), attempt + 1, result.status)
            return
        if result.outcome == "gone":
            track_event(events.DELIVERY_FAILED, errorCode=result.error_code, willRetry=False, **common)
            await _flow_gone(flow, result.status)
            return
        await flows.record_delivery(flow, flow_entity, delivered=False, status=result.status_text)
        if result.outcome == "retry":
            deadline = parse_time(item["firstAttemptAt"]) + timedelta(hours=get_settings().delivery_retry_hours)
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            if remaining > 0:
                # One last attempt at the deadline rather than giving up early.
                delay = min(backoff_seconds(attempt, result.retry_after), remaining)
                await deliveries.enqueue({**item, "attempt": attempt + 1}, delay)
                track_event(events.DELIVERY_FAILED, logging.WARNING, errorCode=result.error_code, willRetry=True,
                            **common)
                log.warning("delivery of event %s to flow %s at %s failed (%s); attempt %d in %.0f s", event,
                            flow_id, redact_url(flow.callback_url), result.status_text,
                            attempt + 2, delay)
                return
            reason = "retryWindowExhausted"
        else:
            reason = {"AddressNotAllowed": "addressNotAllowed", "Redirected": "redirected"}.get(result.error_code,
                                                                                               "rejected")
        track_event(events.DELIVERY_FAILED, logging.WARNING, errorCode=result.error_code, willRetry=False, **common)
        await dead_letter(item, row, reason=reason, status=result.status, error_code=result.error_code,
                          error_text=result.error_text)


async def dead_letter(item: DeliveryMessage, row: Any | None, *, reason: str, status: int, error_code: str,
                      error_text: str) -> None:
    """Write the (event, flow) dead-letter row and say so in telemetry and the log."""
    row = row or {}
    await DeadLetters().record(
        item["mailbox"], item["eventId"], item["flowId"], trigger=str(row.get("Trigger", "")),
        change_type=str(row.get("ChangeType", "")), appointment_id=str(row.get("AppointmentId", "")), reason=reason,
        status=status, error_code=error_code, error_text=error_text, attempts=item["attempt"] + 1,
        first_attempt_at=parse_time(item["firstAttemptAt"]), correlation_id=item["correlationId"])
    track_event(events.DELIVERY_DEAD_LETTERED, logging.ERROR, eventId=item["eventId"], attempt=item["attempt"] + 1,
                status=status, errorCode=error_code, trigger=row.get("Trigger") or None)
    log.error("delivery of event %s to flow %s dead-lettered (%s, %s): %s", item["eventId"], item["flowId"], reason,
              error_code, redact(error_text)[:300])


async def _flow_gone(flow: Flow, status: int) -> None:
    """The flow answered 404/410: Power Automate deleted it without telling us. Unregister it."""
    registry = FlowRegistry.default()
    result = await registry.unregister(flow.mailbox, flow.webhook_id)
    log.warning("flow %s at %s answered %d: removed (%d flow(s) left on %s)", flow.webhook_id,
                redact_url(flow.callback_url), status, result.remaining, flow.mailbox)
    if not result.removed:
        return
    track_event(events.FLOW_UNREGISTERED, flowId=flow.webhook_id, trigger=flow.trigger, flowCount=result.remaining,
                maxFlows=registry.max_flows, reason="gone")
    if result.mailbox_now_empty:
        # If this raises, the message is retried: the flow is gone by then, so the retry only logs; the
        # renewal sweep removes a subscription left behind by a mailbox without flows.
        await subscriptions.release_if_no_flows(flow.mailbox)


async def handle_poison(message: func.QueueMessage) -> None:
    """Queue trigger on ``deliveries-poison``: this worker failed on the message ``maxDequeueCount`` times
    (a bug, or storage down throughout). It becomes a dead letter an administrator can replay."""
    item = _parsed(message, "poison delivery")
    if item is None:
        return
    with _context(item):
        track_event(events.QUEUE_MESSAGE_POISONED, logging.ERROR, queue=poison_queue(DELIVERIES_QUEUE),
                    attempt=item["attempt"] + 1, willRetry=False, reason="deadLetter")
        row = await outbox.get(item["mailbox"], item["eventId"])
        await dead_letter(item, row, reason="poison", status=0, error_code="PoisonMessage",
                          error_text="the delivery worker failed on this message every time the queue offered it; "
                                     f"see the logs of correlation id {item['correlationId'] or '(none)'}")
