"""Delivery of appointment events to flows: fan-out, the delivery worker, retries, poison, the outbox sweep.

This module owns everything between a committed outbox row (``shared.outbox``) and a flow's 2xx:

Fan-out (``fan_out``)
    Right after the reconcile commits outbox rows in state ``pending`` it calls ``fan_out``: one delivery
    message per flow of the mailbox registered for the row's trigger, then the row is marked ``fannedOut``
    (merge, with ``FannedOutAt``/``LastEnqueuedAt``). A crash in between leaves the row ``pending``; the
    sweep fans it out again. Fanning out twice only makes duplicate messages, which the receiver can
    recognise by the idempotency key: delivery is at-least-once, never at-most-once.

Delivery (``deliver``, queue trigger on ``deliveries``)
    Reads the payload from the outbox row and the callback URL from the flow row (neither travels in the
    queue), then POSTs the payload as JSON with ``Idempotency-Key: idempotency_key(eventId, flowId)`` (the
    same on every retry), ``X-Bookings-Trigger`` and ``X-Bookings-Event-Id``. Outcomes:

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

SSRF: the callback URL was validated at registration (``shared.callbacks``). At delivery, the host is
checked against the allowlist again, redirects are never followed (a 3xx is a dead letter), no proxy from
the environment is used, cookies are never kept between flows, and every connection's resolved address is
checked *when connecting* (``_GuardedBackend``), so a host that later resolves to a private or metadata
address (DNS rebinding) is refused.

Outbox sweep (``sweep_outbox``, timer ``OUTBOX_SWEEP_SCHEDULE``)
    Fans out ``pending`` rows older than a minute (a crash between commit and fan-out), and deletes
    ``fannedOut`` rows whose last enqueue is older than ``max(OUTBOX_RETENTION_HOURS, DELIVERY_RETRY_HOURS
    + 1 h)`` and that have no dead letter. Why that is "all deliveries settled": every message of a fan-out
    or replay carries a ``firstAttemptAt`` no earlier than the row's ``LastEnqueuedAt``, and gives up at
    most ``DELIVERY_RETRY_HOURS`` (+ one capped back-off) later, as a success, a gone flow, or a dead letter;
    a dead letter keeps the row. Both steps query across partitions (a scan of the mailbox table filtered on
    ``State``): simple, and fine for the table sizes a Bookings tenant has; an index table of pending rows is
    the next step if that ever stops being true.

The callback URL never reaches a log, an event or a dead letter: only ``redact_url`` of it.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import math
import random
import time
import weakref
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func
import httpcore
import httpx
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared import events
from shared.callbacks import LOOPBACK_HOSTS, CallbackPolicy, check_addresses, host_on_allowlist, resolve_host
from shared.deadletters import DeadLetters
from shared.errors import ApiError
from shared.monitoring import telemetry_context, track_event
from shared.outbox import (
    OUTBOX_PREFIX,
    OUTBOX_PREFIX_END,
    DeliveryMessage,
    idempotency_key,
    outbox_row_key,
    read_payload,
)
from shared.registrations import Flow, FlowRegistry, flow_row_key
from shared.settings import get_settings
from shared.store import DELIVERIES_QUEUE, MAILBOX_TABLE, get_store
from shared.telemetry import RedactingFilter, redact, redact_url

log = logging.getLogger(__name__)

# httpx logs every request's full URL at INFO ("HTTP Request: POST https://…?sig=…"). configure_logging
# raises its level, but a callback's signature must not depend on who configured logging: scrub at the source.
for _name in ("httpx", "httpcore.connection", "httpcore.http11"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, RedactingFilter) for f in _logger.filters):
        _logger.addFilter(RedactingFilter())

MESSAGE_VERSION = 1
PENDING, FANNED_OUT = "pending", "fannedOut"

REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# Back-off of retried deliveries: full jitter, uniform in [0, min(cap, base * 2**attempt)] seconds.
BACKOFF_BASE_SECONDS = 5.0
BACKOFF_CAP_SECONDS = 15 * 60.0
# A Retry-After is honoured up to this; a larger (or absurd) value must not park a message for days.
RETRY_AFTER_CAP_SECONDS = 60 * 60.0
STALE_PENDING = timedelta(minutes=1)
# Outbox rows live at least this much longer than the retry window (a last capped back-off, the attempt).
RETENTION_MARGIN = timedelta(hours=1)
RESPONSE_EXCERPT_BYTES = 300  # of a failed answer's body, for the dead letter (redacted)
ENQUEUE_CONCURRENCY = 16
USER_AGENT = "bookings-triggers-delivery/1"
RETRYABLE_STATUSES = frozenset({408, 429})
GONE_STATUSES = frozenset({404, 410})


# --- messages ----------------------------------------------------------------------------------------------

def new_message(mailbox: str, event_id: str, flow_id: str, correlation_id: str,
                first_attempt_at: datetime | None = None) -> DeliveryMessage:
    return {"version": MESSAGE_VERSION, "mailbox": mailbox, "eventId": event_id, "flowId": flow_id, "attempt": 0,
            "firstAttemptAt": (first_attempt_at or datetime.now(UTC)).isoformat(),
            "correlationId": correlation_id}


def parse_message(body: bytes) -> DeliveryMessage:
    """The delivery message in ``body``; ValueError when it is not one (retrying cannot fix that)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    for name in ("mailbox", "eventId", "flowId", "firstAttemptAt"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise ValueError(f"no {name}")
    attempt = data.get("attempt", 0)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0:
        raise ValueError("attempt is not a whole number")
    _parse_time(data["firstAttemptAt"])
    return {"version": int(data.get("version", MESSAGE_VERSION)), "mailbox": data["mailbox"].lower(),
            "eventId": data["eventId"], "flowId": data["flowId"], "attempt": attempt,
            "firstAttemptAt": data["firstAttemptAt"], "correlationId": str(data.get("correlationId") or "")}


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def enqueue(message: DeliveryMessage, delay_seconds: float = 0) -> None:
    delay = math.ceil(delay_seconds)
    await get_store().queue(DELIVERIES_QUEUE).send_message(json.dumps(message), visibility_timeout=delay or None)


def _registry() -> FlowRegistry:
    return FlowRegistry(get_store().table(MAILBOX_TABLE), get_settings().max_flows_per_mailbox)


# --- fan-out -------------------------------------------------------------------------------------------------

async def fan_out(mailbox: str, event_ids: Iterable[str], correlation_id: str) -> int:
    """Enqueue one delivery per (event, matching flow) and mark each row ``fannedOut``. Returns messages sent.

    Rows already ``fannedOut`` are skipped, so calling this twice for the same events is harmless; a crash
    half-way leaves the row ``pending`` for the sweep (its messages may then be sent twice: receivers see the
    same idempotency key).
    """
    table = get_store().table(MAILBOX_TABLE)
    flows: list[Flow] | None = None
    sent = 0
    limit = asyncio.Semaphore(ENQUEUE_CONCURRENCY)

    async def send(message: DeliveryMessage) -> None:
        async with limit:
            await enqueue(message)

    for event in event_ids:
        try:
            row = await table.get_entity(mailbox, outbox_row_key(event), select=["Trigger", "State"])
        except ResourceNotFoundError:
            log.warning("fan-out: event %s of %s is not in the outbox", event, mailbox,
                        extra={"mailbox": mailbox, "correlationId": correlation_id})
            continue
        if row.get("State") == FANNED_OUT:
            continue
        if flows is None:
            flows = await _registry().list_flows(mailbox)
        now = datetime.now(UTC)
        targets = [flow for flow in flows if flow.trigger == row.get("Trigger")]
        await asyncio.gather(*(send(new_message(mailbox, event, flow.webhook_id, correlation_id, now))
                               for flow in targets))
        sent += len(targets)
        try:
            await table.update_entity({"PartitionKey": mailbox, "RowKey": outbox_row_key(event), "State": FANNED_OUT,
                                       "FannedOutAt": now, "LastEnqueuedAt": now, "FlowCount": len(targets)},
                                      mode=UpdateMode.MERGE)
        except ResourceNotFoundError:
            log.warning("fan-out: event %s of %s vanished while being fanned out", event, mailbox)
        log.info("event %s of %s (%s) fanned out to %d flow(s)", event, mailbox, row.get("Trigger"), len(targets),
                 extra={"mailbox": mailbox, "correlationId": correlation_id, "eventId": event})
    return sent


# --- outbox sweep ------------------------------------------------------------------------------------------

@dataclass
class SweepReport:
    fanned_out: int = 0  # pending events found and fanned out
    messages: int = 0
    pruned: int = 0
    kept_for_dead_letters: int = 0


def retention() -> timedelta:
    settings = get_settings()
    return max(timedelta(hours=settings.outbox_retention_hours),
               timedelta(hours=settings.delivery_retry_hours) + RETENTION_MARGIN)


async def sweep_outbox(correlation_id: str, older_than: timedelta = STALE_PENDING) -> SweepReport:
    """Fan out ``pending`` rows older than ``older_than``; prune settled ``fannedOut`` rows past retention."""
    table = get_store().table(MAILBOX_TABLE)
    report = SweepReport()
    now = datetime.now(UTC)

    stale: dict[str, list[str]] = defaultdict(list)
    rows = table.query_entities(
        "RowKey ge @lo and RowKey lt @hi and State eq @state and Timestamp lt @before",
        parameters={"lo": OUTBOX_PREFIX, "hi": OUTBOX_PREFIX_END, "state": PENDING, "before": now - older_than},
        select=["PartitionKey", "EventId"])
    async for row in rows:
        stale[row["PartitionKey"]].append(row["EventId"])
    for mailbox, event_ids in stale.items():
        log.warning("outbox sweep: %d event(s) of %s were committed but never fanned out", len(event_ids), mailbox,
                    extra={"mailbox": mailbox, "correlationId": correlation_id})
        report.messages += await fan_out(mailbox, event_ids, correlation_id)
        report.fanned_out += len(event_ids)

    expired: dict[str, list[Any]] = defaultdict(list)
    rows = table.query_entities(
        "RowKey ge @lo and RowKey lt @hi and State eq @state and LastEnqueuedAt lt @before",
        parameters={"lo": OUTBOX_PREFIX, "hi": OUTBOX_PREFIX_END, "state": FANNED_OUT, "before": now - retention()},
        select=["PartitionKey", "RowKey", "EventId"])
    async for row in rows:
        expired[row["PartitionKey"]].append(row)
    dead_letters = DeadLetters(table)
    for mailbox, entities in expired.items():
        keep = await dead_letters.event_ids(mailbox)
        for entity in entities:
            if entity["EventId"] in keep:
                report.kept_for_dead_letters += 1
                continue
            try:
                # ETag match: a replay that re-enqueued the event meanwhile (LastEnqueuedAt) keeps the row.
                await table.delete_entity(mailbox, entity["RowKey"], etag=entity.metadata["etag"],
                                          match_condition=MatchConditions.IfNotModified)
                report.pruned += 1
            except ResourceNotFoundError:
                pass
            except HttpResponseError as error:
                if error.status_code != 412:
                    raise
    log.info("outbox sweep: %d pending event(s) fanned out (%d messages), %d pruned, %d kept for dead letters",
             report.fanned_out, report.messages, report.pruned, report.kept_for_dead_letters,
             extra={"correlationId": correlation_id})
    return report


# --- the HTTP client ---------------------------------------------------------------------------------------

class CallbackAddressRefused(Exception):
    """The callback's host is not allowed now, or resolved to an address we must not send data to."""


async def _allowed_addresses(host: str, port: int) -> list[str]:
    policy = CallbackPolicy.from_settings(get_settings())
    try:
        addresses = await resolve_host(host, port)
    except (OSError, TimeoutError) as error:
        raise httpcore.ConnectError(f"could not resolve the callback host: {type(error).__name__}") from None
    if policy.allow_loopback and host.lower() in LOOPBACK_HOSTS:
        if not all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses):
            raise CallbackAddressRefused(f"host {host!r} does not resolve to a loopback address")
        return addresses
    try:
        check_addresses(host, addresses)
    except ApiError as error:
        raise CallbackAddressRefused(str(error.details.get("reason", "address not allowed"))) from None
    return addresses


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, checks every address, and connects to a checked one (TLS still verifies
    the host name: httpcore passes the origin's host as SNI, not the address)."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    # httpcore's interface names the parameter 'timeout'; it is passed on, not awaited here.
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for address in await _allowed_addresses(host, port):
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        raise failure or httpcore.ConnectError("no address to connect to")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are never used for callbacks")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _new_client() -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(retries=0, trust_env=False)
    # httpx (pinned 0.28) has no public hook for the network backend; its transport holds the httpcore pool
    # in ``_pool``. Replacing it keeps httpx's request/response mapping and adds the connect-time check.
    # tests/delivery checks the guard is in force (a loopback callback is refused when not allowed).
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(), max_connections=100, max_keepalive_connections=20,
        keepalive_expiry=5.0, network_backend=_GuardedBackend())
    return httpx.AsyncClient(
        transport=transport, timeout=REQUEST_TIMEOUT, follow_redirects=False, trust_env=False,
        # A jar that accepts no cookie: one flow's cookies must never be sent to another.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        headers={"User-Agent": USER_AGENT})


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()


def get_client() -> httpx.AsyncClient:
    """The event loop's delivery client (connections are pooled per loop, as async clients require)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = _new_client()
    return client


async def close_client() -> None:
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


# --- one attempt ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Attempt:
    """What one POST gave: a status (0 when there was no answer), and what to do next."""

    outcome: str  # "delivered" | "retry" | "gone" | "deadLetter"
    status: int
    error_code: str  # "" when delivered
    error_text: str
    duration_ms: int
    retry_after: float | None = None


def _status_text(status: int, error_code: str) -> str:
    return str(status) if status else error_code


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date. None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def backoff_seconds(attempt: int, retry_after: float | None) -> float:
    """Delay before attempt ``attempt + 1``: the receiver's Retry-After (capped), else full-jitter back-off."""
    if retry_after is not None:
        return min(retry_after, RETRY_AFTER_CAP_SECONDS)
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(attempt, 32))
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not security


def _callback_allowed(url: str) -> str | None:
    """Why ``url`` may no longer be called (allowlist tightened since registration), or None."""
    policy = CallbackPolicy.from_settings(get_settings())
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    if policy.allow_loopback and host in LOOPBACK_HOSTS:
        return None
    if parts.scheme.lower() != "https":
        return "the callback URL is not https"
    if not host_on_allowlist(host, policy.allowlist):
        return f"host {host!r} is not on CALLBACK_HOST_ALLOWLIST"
    return None


def _scrub(text: str, url: str) -> str:
    """Error text safe to log and to show administrators: no callback URL (not even host and path, which
    the dead-letter listing must not show), anything else secret-looking redacted."""
    for spelling in (url, redact_url(url)):
        text = text.replace(spelling, "[callback URL]")
    return redact(text)


async def post(url: str, body: bytes, headers: dict[str, str]) -> Attempt:
    started = time.perf_counter()

    def elapsed() -> int:
        return round((time.perf_counter() - started) * 1000)

    refused = _callback_allowed(url)
    if refused:
        return Attempt("deadLetter", 0, "AddressNotAllowed", refused, 0)
    try:
        async with get_client().stream("POST", url, content=body, headers=headers) as response:
            status = response.status_code
            excerpt = b""
            if not 200 <= status < 300:
                async for chunk in response.aiter_bytes():
                    excerpt += chunk
                    if len(excerpt) >= RESPONSE_EXCERPT_BYTES:
                        break
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
    except CallbackAddressRefused as error:
        return Attempt("deadLetter", 0, "AddressNotAllowed", _scrub(str(error), url), elapsed())
    except httpx.TimeoutException as error:
        return Attempt("retry", 0, "Timeout", f"no answer in time ({type(error).__name__})", elapsed())
    except httpx.TransportError as error:
        return Attempt("retry", 0, "ConnectionFailed", _scrub(f"{type(error).__name__}: {error}", url), elapsed())
    text = _scrub(f"HTTP {status}: {excerpt[:RESPONSE_EXCERPT_BYTES].decode('utf-8', 'replace')}", url)
    if 200 <= status < 300:
        return Attempt("delivered", status, "", "", elapsed())
    if status in GONE_STATUSES:
        return Attempt("gone", status, "FlowGone", text, elapsed())
    if status in RETRYABLE_STATUSES or status >= 500:
        return Attempt("retry", status, "Throttled" if status == 429 else "ServerError", text, elapsed(), retry_after)
    if 300 <= status < 400:
        return Attempt("deadLetter", status, "Redirected", f"HTTP {status}: redirects are not followed", elapsed())
    return Attempt("deadLetter", status, "Rejected", text, elapsed())


# --- the worker ------------------------------------------------------------------------------------------------

async def deliver(message: func.QueueMessage) -> None:
    """Queue trigger on ``deliveries``: one attempt of one event to one flow."""
    try:
        item = parse_message(message.get_body())
    except ValueError as error:
        # Retrying cannot fix it, and without mailbox/event/flow there is no dead letter to write.
        log.error("dropped a malformed delivery message %s: %s", message.id, error)
        return
    with telemetry_context(mailbox=item["mailbox"], flowId=item["flowId"], correlationId=item["correlationId"]):
        await _deliver(item)


async def _deliver(item: DeliveryMessage) -> None:
    mailbox, event, flow_id, attempt = item["mailbox"], item["eventId"], item["flowId"], item["attempt"]
    table = get_store().table(MAILBOX_TABLE)
    try:
        row = await table.get_entity(mailbox, outbox_row_key(event))
    except ResourceNotFoundError:
        log.error("delivery of event %s to flow %s abandoned: the event is no longer in the outbox", event, flow_id)
        return
    registry = _registry()
    try:
        flow_entity = await table.get_entity(mailbox, flow_row_key(flow_id))
    except ResourceNotFoundError:
        flow_entity = None
    if flow_entity is None:
        log.info("delivery of event %s skipped: flow %s was removed", event, flow_id)
        return
    flow = Flow.from_entity(flow_entity)
    trigger = str(row.get("Trigger", ""))
    with telemetry_context(trigger=trigger):
        body = json.dumps(read_payload(row), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "Idempotency-Key": idempotency_key(event, flow_id), "X-Bookings-Trigger": trigger,
                   "X-Bookings-Event-Id": event}
        result = await post(flow.callback_url, body, headers)
        common = {"eventId": event, "attempt": attempt + 1, "status": result.status}
        if result.outcome == "delivered":
            await _record_health(flow, flow_entity, delivered=True, status=_status_text(result.status, ""))
            detected = row.get("DetectedAt")
            end_to_end = (round((datetime.now(UTC) - detected).total_seconds() * 1000)
                          if isinstance(detected, datetime) else None)
            track_event(events.DELIVERY_SUCCEEDED, durationMs=result.duration_ms, endToEndMs=end_to_end, **common)
            log.info("event %s delivered to flow %s at %s (attempt %d, HTTP %d)", event, flow_id,
                     redact_url(flow.callback_url), attempt + 1, result.status)
            return
        if result.outcome == "gone":
            track_event(events.DELIVERY_FAILED, errorCode=result.error_code, willRetry=False, **common)
            await _flow_gone(registry, flow, result.status)
            return
        await _record_health(flow, flow_entity, delivered=False, status=_status_text(result.status, result.error_code))
        if result.outcome == "retry":
            deadline = _parse_time(item["firstAttemptAt"]) + timedelta(hours=get_settings().delivery_retry_hours)
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            if remaining > 0:
                # One last attempt at the deadline rather than giving up early.
                delay = min(backoff_seconds(attempt, result.retry_after), remaining)
                await enqueue({**item, "attempt": attempt + 1}, delay)
                track_event(events.DELIVERY_FAILED, logging.WARNING, errorCode=result.error_code, willRetry=True,
                            **common)
                log.warning("delivery of event %s to flow %s at %s failed (%s); attempt %d in %.0f s", event,
                            flow_id, redact_url(flow.callback_url), _status_text(result.status, result.error_code),
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
    await DeadLetters(get_store().table(MAILBOX_TABLE)).record(
        item["mailbox"], item["eventId"], item["flowId"], trigger=str(row.get("Trigger", "")),
        change_type=str(row.get("ChangeType", "")), appointment_id=str(row.get("AppointmentId", "")), reason=reason,
        status=status, error_code=error_code, error_text=error_text, attempts=item["attempt"] + 1,
        first_attempt_at=_parse_time(item["firstAttemptAt"]), correlation_id=item["correlationId"])
    track_event(events.DELIVERY_DEAD_LETTERED, logging.ERROR, eventId=item["eventId"], attempt=item["attempt"] + 1,
                status=status, errorCode=error_code, trigger=row.get("Trigger") or None)
    log.error("delivery of event %s to flow %s dead-lettered (%s, %s): %s", item["eventId"], item["flowId"], reason,
              error_code, redact(error_text)[:300])


async def _flow_gone(registry: FlowRegistry, flow: Flow, status: int) -> None:
    """The flow answered 404/410: Power Automate deleted it without telling us. Unregister it."""
    result = await registry.unregister(flow.business, flow.webhook_id)
    log.warning("flow %s at %s answered %d: removed (%d flow(s) left on %s)", flow.webhook_id,
                redact_url(flow.callback_url), status, result.remaining, flow.business)
    if not result.removed:
        return
    track_event(events.FLOW_UNREGISTERED, flowId=flow.webhook_id, trigger=flow.trigger, flowCount=result.remaining,
                maxFlows=registry.max_flows, reason="gone")
    if result.mailbox_now_empty:
        # If this raises, the message is retried: the flow is gone by then, so the retry only logs; the
        # renewal sweep removes a subscription left behind by a mailbox without flows.
        await release_subscription(flow.business, registry)


async def release_subscription(mailbox: str, registry: FlowRegistry) -> None:
    from shared.subscriptions import Subscriptions  # loads the Graph client: only when a last flow goes

    async def flows_left() -> int:
        return await registry.flow_count(mailbox)

    await Subscriptions().release(mailbox, flows_left)


# Same-flow health updates queue on an in-process lock first (a burst of events reaches one flow by up to a
# batch of concurrent deliveries); across instances the ETag retries below keep the counts exact.
_health_locks: weakref.WeakValueDictionary[tuple[int, str], asyncio.Lock] = weakref.WeakValueDictionary()
HEALTH_WRITE_ATTEMPTS = 8


def _health_lock(flow: Flow) -> asyncio.Lock:
    key = (id(asyncio.get_running_loop()), f"{flow.business}/{flow.webhook_id}")
    lock = _health_locks.get(key)
    if lock is None:
        lock = _health_locks[key] = asyncio.Lock()
    return lock


async def _record_health(flow: Flow, entity: Any, *, delivered: bool, status: str) -> None:
    """Update the flow's delivery health (ETag-guarded read-modify-write, starting from ``entity`` as read
    before the POST). Never fails the delivery: the counters are for administrators, and redelivering
    because they could not be written would be worse."""
    table = get_store().table(MAILBOX_TABLE)
    async with _health_lock(flow):
        for attempt in range(HEALTH_WRITE_ATTEMPTS):
            if attempt:
                try:
                    entity = await table.get_entity(flow.business, flow.row_key)
                except ResourceNotFoundError:
                    return
            changes: dict[str, Any] = {"PartitionKey": flow.business, "RowKey": flow.row_key,
                                       "LastDeliveryStatus": status, "LastDeliveryDateTime": datetime.now(UTC)}
            if delivered:
                changes["DeliveredCount"] = int(entity.get("DeliveredCount", 0)) + 1
                changes["ConsecutiveFailures"] = 0
            else:
                changes["FailedCount"] = int(entity.get("FailedCount", 0)) + 1
                changes["ConsecutiveFailures"] = int(entity.get("ConsecutiveFailures", 0)) + 1
            try:
                await table.update_entity(changes, mode=UpdateMode.MERGE, etag=entity.metadata["etag"],
                                          match_condition=MatchConditions.IfNotModified)
                return
            except ResourceNotFoundError:
                return
            except HttpResponseError as error:
                if error.status_code != 412:
                    log.warning("flow health of %s not updated: %s", flow.webhook_id, error.status_code)
                    return
                await asyncio.sleep(random.uniform(0, 0.01 * 2 ** attempt))  # noqa: S311 - jitter only
    log.warning("flow health of %s not updated: too many concurrent deliveries", flow.webhook_id)


# --- poison ----------------------------------------------------------------------------------------------------

async def handle_poison(message: func.QueueMessage) -> None:
    """Queue trigger on ``deliveries-poison``: this worker failed on the message ``maxDequeueCount`` times
    (a bug, or storage down throughout). It becomes a dead letter an administrator can replay."""
    try:
        item = parse_message(message.get_body())
    except ValueError as error:
        log.error("dropped a malformed poison delivery message %s: %s", message.id, error)
        return
    with telemetry_context(mailbox=item["mailbox"], flowId=item["flowId"], correlationId=item["correlationId"]):
        try:
            row = await get_store().table(MAILBOX_TABLE).get_entity(item["mailbox"], outbox_row_key(item["eventId"]))
        except ResourceNotFoundError:
            row = None
        await dead_letter(item, row, reason="poison", status=0, error_code="PoisonMessage",
                          error_text="the delivery worker failed on this message every time the queue offered it; "
                                     f"see the logs of correlation id {item['correlationId'] or '(none)'}")
