"""The delivery worker (queue ``deliveries``): one attempt of one event to one flow, and what follows it.

It takes the event from the message (or, when the message does not carry it, from the event's outbox row)
and the callback URL from the flow row (``flows.flow_for_delivery``: read at most a few seconds ago; the
secret never travels in the queue), then POSTs the payload as JSON through the guarded client
(``shared.adapters.callback_client``) with ``Idempotency-Key: idempotency_key(eventId, flowId)`` (the same on
every retry), ``X-Bookings-Trigger``, ``X-Bookings-Event-Id`` and ``X-Bookings-Webhook-Id`` (and
``X-Bookings-Test: true`` on a test event). Outcomes:

===============================  ==================================================================
2xx                              done; flow health: delivered count, last status, failures reset
408, 429, 5xx, timeout,          retry: the message is enqueued again with ``attempt + 1`` and a
connection error                 visibility delay (``Retry-After`` when given, at least 30 s and at most
                                 an hour, else exponential back-off with full jitter; from the sixth
                                 attempt on, at least 5 minutes), until ``DELIVERY_RETRY_HOURS`` after
                                 ``firstAttemptAt``; then a dead letter
404, 410                         the flow is gone: unregister it (and release the mailbox's Graph
                                 subscription with its last flow)
3xx, other 4xx,                  dead letter at once (retrying cannot help)
address not allowed
===============================  ==================================================================

An attempt runs in named steps: ``_prepare`` (the event and the flow), ``_call`` (the POST), then
``_handle_success`` or ``_handle_failure`` (the flow gone, a retry within its window, or a dead letter).
``attempt`` is also what fan-out calls for its first attempts (``fan_out(..., attempt_now=attempt)``).

The retry schedule is what a receiver cannot turn into a flood: its ``Retry-After`` is honoured but never
below ``RETRY_AFTER_FLOOR_SECONDS`` (a receiver answering ``503`` with ``Retry-After: 1`` to everything once made
21 POSTs per event in 31 s, sustainable for a day), and whatever it answers, one event is attempted at most
``FAST_ATTEMPTS + MAX_ATTEMPTS_PER_HOUR`` times in any hour (``paced``): all from the message's ``attempt``, no
storage call. A failed attempt logs one warning per flow per ``WARNING_INTERVAL_SECONDS`` (``_quiet``; the
``DeliveryFailed`` telemetry event still has each attempt).

Retries are our own messages, not the runtime's dequeue count: the runtime's retry (visibility timeout
10 s, 5 dequeues) is far too short for a flow that is down for an hour, and is left for failures of this
worker itself. Those end in ``deliveries-poison``, which ``handle_poison`` turns into a dead letter.

Each outcome but a gone flow is also a row of the delivery log (``shared.records.delivery_log``), which flow
makers list from Power Automate: keyed by the event, the flow and ``firstAttemptAt``, so the attempts of one
delivery overwrite one row; ``delivered`` written behind (batched), ``retrying`` and ``deadLettered`` at once.

The callback URL never reaches a log, an event or a dead letter: only ``redact_url`` of it.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
from cachetools import LRUCache

from shared.adapters.callback_client import Attempt, post
from shared.adapters.logs import redact, redact_url
from shared.adapters.monitoring import record_histogram, telemetry_context, track_event
from shared.adapters.settings import get_settings
from shared.adapters.storage import DELIVERIES_QUEUE, poison_queue
from shared.contracts import events
from shared.contracts.appointment_changes import upgrade_stored_payload
from shared.messages import deliveries
from shared.messages.deliveries import (
    DeliveryEvent,
    DeliveryMessage,
    event_from_row,
    idempotency_key,
    parse_message,
    parse_time,
)
from shared.records import delivery_log, flow_health, flows, outbox
from shared.records.dead_letters import DeadLetters
from shared.records.flows import Flow, FlowRegistry
from shared.services import subscriptions

log = logging.getLogger(__name__)

# Back-off of retried deliveries: full jitter, uniform in [0, min(cap, base * 2**attempt)] seconds.
BACKOFF_BASE_SECONDS = 5.0
BACKOFF_CAP_SECONDS = 15 * 60.0
# A Retry-After is honoured up to this; a larger (or absurd) value must not park a message for days.
RETRY_AFTER_CAP_SECONDS = 60 * 60.0
# ... and never below this: waiting longer than asked is allowed (RFC 9110, 10.2.3: Retry-After is how long the
# client *ought* to wait), and "Retry-After: 1" on every answer must not become one POST a second per event.
RETRY_AFTER_FLOOR_SECONDS = 30.0
# The ceiling on attempts per event per hour: the first FAST_ATTEMPTS follow the back-off (quick retries for a
# blip); after them an event's attempts are at least PACED_SECONDS apart, whatever the receiver answers. So in
# any hour an event is attempted at most FAST_ATTEMPTS + MAX_ATTEMPTS_PER_HOUR times, and at most
# MAX_ATTEMPTS_PER_HOUR once past the fast ones (plus one last attempt at the end of the retry window).
FAST_ATTEMPTS = 6
MAX_ATTEMPTS_PER_HOUR = 12
PACED_SECONDS = 3600.0 / MAX_ATTEMPTS_PER_HOUR
# A failing flow's retries log one warning per this many seconds, not one per attempt.
WARNING_INTERVAL_SECONDS = 300.0


def backoff_seconds(attempt: int, retry_after: float | None) -> float:
    """Delay before attempt ``attempt + 1``: the receiver's Retry-After (at least the floor, at most the cap),
    else full-jitter back-off."""
    if retry_after is not None:
        return min(max(retry_after, RETRY_AFTER_FLOOR_SECONDS), RETRY_AFTER_CAP_SECONDS)
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(attempt, 32))
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not security


def paced(attempt: int, delay: float) -> float:
    """``delay`` after attempt ``attempt`` (0-based), raised to ``PACED_SECONDS`` once the fast attempts are
    spent: the ceiling on attempts per event per hour, computed from the message alone."""
    return max(delay, PACED_SECONDS) if attempt + 1 >= FAST_ATTEMPTS else delay


def _parsed(message: func.QueueMessage, queue: str) -> DeliveryMessage | None:
    """The message's delivery, or None (logged) when it is not one: retrying cannot fix that, and without
    mailbox, event and flow there is no dead letter to write."""
    try:
        return parse_message(message.get_body())
    except ValueError as error:
        log.error("dropped a malformed %s message %s: %s", queue, message.id, error)
        return None


async def deliver(message: func.QueueMessage) -> None:
    """Queue trigger on ``deliveries``: one attempt of one event to one flow."""
    item = _parsed(message, "delivery")
    if item is not None:
        with deliveries.telemetry(item):
            await attempt(item)


@dataclass(frozen=True)
class _Prepared:
    """An attempt ready to be made: the message, its event and the flow it goes to."""

    item: DeliveryMessage
    event: DeliveryEvent
    flow: Flow


async def attempt(item: DeliveryMessage) -> None:
    """One attempt of ``item`` to its outcome (delivered, retry queued, dead letter, flow removed); raises
    when it reached none (storage failed), and the queue offers the message again."""
    prepared = await _prepare(item)
    if prepared is None:
        return
    with telemetry_context(trigger=prepared.event["trigger"]):
        result = await _call(prepared)
        if result.outcome == "delivered":
            _handle_success(prepared, result)
        else:
            await _handle_failure(prepared, result)


async def _prepare(item: DeliveryMessage) -> _Prepared | None:
    """The event and the flow of ``item``; None (logged) when either is gone, and there is nothing to do."""
    event = await _event(item)
    if event is None:
        log.error("delivery of event %s to flow %s abandoned: the event is no longer in the outbox",
                  item["eventId"], item["flowId"])
        return None
    flow = await flows.flow_for_delivery(item["mailbox"], item["flowId"])
    if flow is None:
        log.info("delivery of event %s skipped: flow %s was removed", item["eventId"], item["flowId"])
        return None
    return _Prepared(item, event, flow)


async def _event(item: DeliveryMessage) -> DeliveryEvent | None:
    """The message's event, or its outbox row's when the message does not carry it."""
    if "event" in item:
        return item["event"]
    row = await outbox.get(item["mailbox"], item["eventId"])
    return event_from_row(row) if row is not None else None


async def _call(prepared: _Prepared) -> Attempt:
    """POST the event's payload to the flow, with the headers that are the same on every retry."""
    event, event_id = prepared.event, prepared.item["eventId"]
    # An event stored by an earlier version goes out in today's contract (AppointmentId, Graph's ids).
    payload = upgrade_stored_payload(event["payload"], event["appointmentId"])
    body = json.dumps(payload, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json; charset=utf-8",
               "Idempotency-Key": idempotency_key(event_id, prepared.item["flowId"]),
               "X-Bookings-Trigger": event["trigger"], "X-Bookings-Event-Id": event_id,
               # How a flow names itself to *List deliveries of a flow* (shared.endpoints.flow_deliveries).
               "X-Bookings-Webhook-Id": prepared.item["flowId"]}
    if event["isTest"]:  # a sample the flow maker asked for (shared.services.test_events)
        headers["X-Bookings-Test"] = "true"
    return await post(prepared.flow.callback_url, body, headers)


def _dimensions(prepared: _Prepared, result: Attempt) -> dict[str, Any]:
    """What every delivery event of this attempt carries."""
    return {"eventId": prepared.item["eventId"], "attempt": prepared.item["attempt"] + 1, "status": result.status}


def _handle_success(prepared: _Prepared, result: Attempt) -> None:
    """Delivered: the delivery log, the flow's health, the latency since the change was detected, and the log."""
    item, event = prepared.item, prepared.event
    delivery_log.note(_logged(item, event), delivery_log.DELIVERED, attempts=item["attempt"] + 1,
                      status=result.status)
    flow_health.record_delivery(prepared.flow, delivered=True, status=result.status_text)
    detected_at = prepared.event["detectedAt"]
    detected = parse_time(detected_at) if detected_at else None
    end_to_end = round((datetime.now(UTC) - detected).total_seconds() * 1000) if detected else None
    record_histogram(events.DELIVERY_SUCCEEDED_MS, end_to_end if end_to_end is not None else result.duration_ms,
                     flowId=prepared.item["flowId"], trigger=prepared.flow.trigger)
    log.info("event %s delivered to flow %s at %s (attempt %d, HTTP %d)", prepared.item["eventId"],
             prepared.item["flowId"], redact_url(prepared.flow.callback_url), prepared.item["attempt"] + 1,
             result.status)


async def _handle_failure(prepared: _Prepared, result: Attempt) -> None:
    """Not delivered: a flow that is gone is unregistered; a flow removed meanwhile ends the delivery;
    otherwise the failure counts in the flow's health and the message is retried or dead-lettered."""
    item, flow = prepared.item, prepared.flow
    if result.outcome == "gone":
        track_event(events.DELIVERY_FAILED, errorCode=result.error_code, willRetry=False,
                    **_dimensions(prepared, result))
        await _flow_gone(flow, result.status)
        return
    # The flow may have been read a few seconds ago (``flows.flow_for_delivery``): a flow removed since
    # is neither retried nor dead-lettered.
    if await flows.flow_for_delivery(item["mailbox"], item["flowId"], fresh=True) is None:
        log.info("delivery of event %s ended: flow %s was removed meanwhile", item["eventId"], item["flowId"])
        return
    flow_health.record_delivery(flow, delivered=False, status=result.status_text)
    delay = _retry_delay(item, result) if result.outcome == "retry" else None
    if delay is not None:
        await _retry(prepared, result, delay)
        return
    track_event(events.DELIVERY_FAILED, logging.WARNING, errorCode=result.error_code, willRetry=False,
                **_dimensions(prepared, result))
    await dead_letter(item, prepared.event, reason=_dead_letter_reason(result), status=result.status,
                      error_code=result.error_code, error_text=result.error_text)


def _retry_delay(item: DeliveryMessage, result: Attempt) -> float | None:
    """Seconds until the next attempt; None when the retry window (``DELIVERY_RETRY_HOURS`` after the first
    attempt) is over."""
    deadline = parse_time(item["firstAttemptAt"]) + timedelta(hours=get_settings().delivery_retry_hours)
    remaining = (deadline - datetime.now(UTC)).total_seconds()
    if remaining <= 0:
        return None
    # One last attempt at the deadline rather than giving up early.
    return min(paced(item["attempt"], backoff_seconds(item["attempt"], result.retry_after)), remaining)


async def _retry(prepared: _Prepared, result: Attempt, delay: float) -> None:
    """Queue the next attempt, invisible for ``delay`` seconds."""
    item = prepared.item
    # Before the retry is queued: whoever makes the next attempt writes its outcome after this.
    await _log_delivery(item, prepared.event, delivery_log.RETRYING, result.status)
    await deliveries.enqueue({**item, "attempt": item["attempt"] + 1}, delay)
    track_event(events.DELIVERY_FAILED, logging.WARNING, errorCode=result.error_code, willRetry=True,
                **_dimensions(prepared, result))
    quieted = _quiet(item["flowId"])
    if quieted is None:
        return
    log.warning("delivery of event %s to flow %s at %s failed (%s); attempt %d in %.0f s (%d more failed "
                "attempt(s) to this flow since the last warning; at most one warning per flow every %.0f s)",
                item["eventId"], item["flowId"], redact_url(prepared.flow.callback_url), result.status_text,
                item["attempt"] + 2, delay, quieted, WARNING_INTERVAL_SECONDS)


@dataclass
class _Quiet:
    """When this process last warned about a flow's failed attempts, and how many it left unlogged since."""

    warned_at: float
    unlogged: int = 0


# Per flow; bounded (LRU): a flow evicted is warned about again at its next failure, which is all it costs.
_warnings: LRUCache[str, _Quiet] = LRUCache(10_000)


def _quiet(flow_id: str) -> int | None:
    """None when this failure goes unlogged (the flow was warned about within the interval); else how many
    failures went unlogged since the last warning, and the interval starts again."""
    now = time.monotonic()
    quiet = _warnings.get(flow_id)
    if quiet is not None and now - quiet.warned_at < WARNING_INTERVAL_SECONDS:
        quiet.unlogged += 1
        return None
    _warnings[flow_id] = _Quiet(now)
    return quiet.unlogged if quiet is not None else 0


def _dead_letter_reason(result: Attempt) -> str:
    if result.outcome == "retry":  # retryable, but its window is over
        return "retryWindowExhausted"
    return {"AddressNotAllowed": "addressNotAllowed", "Redirected": "redirected"}.get(result.error_code,
                                                                                      "rejected")


async def dead_letter(item: DeliveryMessage, event: DeliveryEvent | None, *, reason: str, status: int,
                      error_code: str, error_text: str) -> None:
    """Write the (event, flow) dead-letter row and say so in telemetry and the log."""
    trigger, change_type, appointment_id = (event["trigger"], event["changeType"], event["appointmentId"]
                                            ) if event else ("", "", "")
    await DeadLetters().record(
        item["mailbox"], item["eventId"], item["flowId"], trigger=trigger,
        change_type=change_type, appointment_id=appointment_id, reason=reason,
        status=status, error_code=error_code, error_text=error_text, attempts=item["attempt"] + 1,
        first_attempt_at=parse_time(item["firstAttemptAt"]), correlation_id=item["correlationId"])
    await _log_delivery(item, event, delivery_log.DEAD_LETTERED, status)
    track_event(events.DELIVERY_DEAD_LETTERED, logging.ERROR, eventId=item["eventId"], attempt=item["attempt"] + 1,
                status=status, errorCode=error_code, trigger=trigger or None)
    log.error("delivery of event %s to flow %s dead-lettered (%s, %s): %s", item["eventId"], item["flowId"], reason,
              error_code, redact(error_text)[:300])


def _logged(item: DeliveryMessage, event: DeliveryEvent | None) -> delivery_log.Delivery:
    return delivery_log.Delivery(item["mailbox"], item["flowId"], item["eventId"], parse_time(item["firstAttemptAt"]),
                                 event["trigger"] if event else "", event["appointmentId"] if event else "",
                                 bool(event and event["isTest"]))


async def _log_delivery(item: DeliveryMessage, event: DeliveryEvent | None, state: str, status: int) -> None:
    """A failed attempt's outcome in the delivery log, now (one upsert; never fails the delivery)."""
    await delivery_log.record(_logged(item, event), state, attempts=item["attempt"] + 1, status=status)


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
    with deliveries.telemetry(item):
        track_event(events.QUEUE_MESSAGE_POISONED, logging.ERROR, queue=poison_queue(DELIVERIES_QUEUE),
                    attempt=item["attempt"] + 1, willRetry=False, reason="deadLetter")
        # Not the payload: it may be what made the worker fail.
        row = None if "event" in item else await outbox.get(item["mailbox"], item["eventId"],
                                                            select=["Trigger", "ChangeType", "AppointmentId"])
        event = item.get("event") or (event_from_row(row, with_payload=False) if row else None)
        await dead_letter(item, event, reason="poison", status=0, error_code="PoisonMessage",
                          error_text="the delivery worker failed on this message every time the queue offered it; "
                                     f"see the logs of correlation id {item['correlationId'] or '(none)'}")
