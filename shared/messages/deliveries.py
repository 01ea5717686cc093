"""The ``deliveries`` queue: one message per (event, flow), and the idempotency key the flow sees.

Message (base64 JSON)::

    {"version": 2, "mailbox": "clinic@contoso.test", "eventId": "…", "flowId": "<webhook id>",
     "attempt": 0, "firstAttemptAt": "2026-11-25T08:00:00+00:00", "correlationId": "…",
     "event": {"trigger": "AppointmentCreated", "changeType": "Created", "appointmentId": "…",
               "detectedAt": "…", "isTest": false, "payload": {…AppointmentData…}}}

``event`` is the event as its outbox row holds it, so that a delivery reads nothing but the flow: fan-out
puts it in when the whole message stays under ``EVENT_INLINE_MAX_BYTES`` (a queue message holds 64 KiB
after base64, i.e. 48 KiB of JSON); a larger event (long notes, big group bookings), a replay and a test
event leave it out, and the worker reads the outbox row instead. The message holds what the outbox row
holds, in the same storage account: customers' data, never the callback URL (the secret stays in the flow
row). A retry is a new message with ``attempt + 1``, the same ``firstAttemptAt`` and the same ``event``; a
replay starts again at attempt 0. Version 1 messages (no ``event``) are still read.

``event_from_row`` is the one conversion of an outbox row into the ``event`` a message carries.
"""

from __future__ import annotations

import hashlib
import json
import math
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict

from shared.adapters.monitoring import correlation_id, telemetry_context
from shared.adapters.storage import DELIVERIES_QUEUE, get_store
from shared.records import outbox

MESSAGE_VERSION = 2
# The queue's 64 KiB counts the base64 text (4 characters per 3 bytes): 48 KiB of JSON, less a margin.
EVENT_INLINE_MAX_BYTES = 45_000


class DeliveryEvent(TypedDict):
    trigger: str
    changeType: str
    appointmentId: str
    detectedAt: str | None
    isTest: bool
    payload: dict[str, Any]


class DeliveryMessage(TypedDict):
    version: int
    mailbox: str
    eventId: str
    flowId: str
    attempt: int
    firstAttemptAt: str
    correlationId: str
    event: NotRequired[DeliveryEvent]


def event_from_row(row: Any, *, with_payload: bool = True) -> DeliveryEvent:
    """The event an outbox row holds, as a delivery message carries it (without its payload: ``{}``)."""
    detected = row.get("DetectedAt")
    return {"trigger": str(row.get("Trigger", "")), "changeType": str(row.get("ChangeType", "")),
            "appointmentId": str(row.get("AppointmentId", "")),
            "detectedAt": detected.isoformat() if isinstance(detected, datetime) else None,
            "isTest": bool(row.get("IsTest")), "payload": outbox.read_payload(row) if with_payload else {}}


def telemetry(message: DeliveryMessage) -> AbstractContextManager[None]:
    """The telemetry context of work on ``message``: its mailbox, flow and correlation id."""
    return telemetry_context(mailbox=message["mailbox"], flowId=message["flowId"],
                             correlationId=message["correlationId"])


def idempotency_key(event: str, flow: str) -> str:
    """Same for every retry of one event to one flow; different per flow."""
    return hashlib.sha256(f"{event}\n{flow}".encode()).hexdigest()[:40]


def new_message(mailbox: str, event_id: str, flow_id: str, first_attempt_at: datetime | None = None,
                event: DeliveryEvent | None = None) -> DeliveryMessage:
    """A first attempt, in the current correlation id, carrying ``event`` when it fits (see the module)."""
    message: DeliveryMessage = {
        "version": MESSAGE_VERSION, "mailbox": mailbox, "eventId": event_id, "flowId": flow_id, "attempt": 0,
        "firstAttemptAt": (first_attempt_at or datetime.now(UTC)).isoformat(), "correlationId": correlation_id()}
    if event is not None and event_fits(event):
        message["event"] = event
    return message


def event_fits(event: DeliveryEvent) -> bool:
    """Whether a message carrying ``event`` stays under the queue's limit (the rest of it is ~400 bytes)."""
    return len(json.dumps(event, ensure_ascii=False).encode()) + 1_000 <= EVENT_INLINE_MAX_BYTES


def _event(data: Any) -> DeliveryEvent | None:
    """The message's ``event`` when it is well formed; otherwise None, and the worker reads the outbox row."""
    if not isinstance(data, dict) or not isinstance(data.get("payload"), dict):
        return None
    if not all(isinstance(data.get(name), str) for name in ("trigger", "changeType", "appointmentId")):
        return None
    detected = data.get("detectedAt")
    return {"trigger": data["trigger"], "changeType": data["changeType"], "appointmentId": data["appointmentId"],
            "detectedAt": detected if isinstance(detected, str) else None, "isTest": data.get("isTest") is True,
            "payload": data["payload"]}


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
    parse_time(data["firstAttemptAt"])
    message: DeliveryMessage = {
        "version": int(data.get("version", MESSAGE_VERSION)), "mailbox": data["mailbox"].lower(),
        "eventId": data["eventId"], "flowId": data["flowId"], "attempt": attempt,
        "firstAttemptAt": data["firstAttemptAt"], "correlationId": str(data.get("correlationId") or "")}
    event = _event(data.get("event"))
    if event is not None:
        message["event"] = event
    return message


async def enqueue(message: DeliveryMessage, delay_seconds: float = 0) -> Any:
    """Queue ``message``, invisible for ``delay_seconds``. Returns the queued message (id and pop receipt)."""
    delay = math.ceil(delay_seconds)
    return await get_store().queue(DELIVERIES_QUEUE).send_message(json.dumps(message), visibility_timeout=delay or None)


async def delete(queued: Any) -> None:
    """Delete a message ``enqueue`` returned. Put Message's pop receipt deletes it until someone else
    receives it (https://learn.microsoft.com/dotnet/api/azure.storage.queues.models.sendreceipt.popreceipt);
    after that, this fails and the receiver's copy runs: a duplicate with the same idempotency key."""
    await get_store().queue(DELIVERIES_QUEUE).delete_message(queued.id, queued.pop_receipt)
