"""The ``deliveries`` queue: one message per (event, flow), and the idempotency key the flow sees.

Message (base64 JSON)::

    {"version": 1, "mailbox": "clinic@contoso.test", "eventId": "…", "flowId": "<webhook id>",
     "attempt": 0, "firstAttemptAt": "2026-11-25T08:00:00+00:00", "correlationId": "…"}

The delivery worker reads the payload from the event's outbox row and the callback URL from the flow row:
the message never carries either (queues are not where secrets or large bodies live). A retry is a new
message with ``attempt + 1`` and the same ``firstAttemptAt``; a replay starts again at attempt 0.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from typing import TypedDict

from shared.adapters.monitoring import correlation_id
from shared.adapters.storage import DELIVERIES_QUEUE, get_store

MESSAGE_VERSION = 1


class DeliveryMessage(TypedDict):
    version: int
    mailbox: str
    eventId: str
    flowId: str
    attempt: int
    firstAttemptAt: str
    correlationId: str


def idempotency_key(event: str, flow: str) -> str:
    """Same for every retry of one event to one flow; different per flow."""
    return hashlib.sha256(f"{event}\n{flow}".encode()).hexdigest()[:40]


def new_message(mailbox: str, event_id: str, flow_id: str, first_attempt_at: datetime | None = None
                ) -> DeliveryMessage:
    """A first attempt, in the current correlation id."""
    return {"version": MESSAGE_VERSION, "mailbox": mailbox, "eventId": event_id, "flowId": flow_id, "attempt": 0,
            "firstAttemptAt": (first_attempt_at or datetime.now(UTC)).isoformat(),
            "correlationId": correlation_id()}


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
    return {"version": int(data.get("version", MESSAGE_VERSION)), "mailbox": data["mailbox"].lower(),
            "eventId": data["eventId"], "flowId": data["flowId"], "attempt": attempt,
            "firstAttemptAt": data["firstAttemptAt"], "correlationId": str(data.get("correlationId") or "")}


async def enqueue(message: DeliveryMessage, delay_seconds: float = 0) -> None:
    delay = math.ceil(delay_seconds)
    await get_store().queue(DELIVERIES_QUEUE).send_message(json.dumps(message), visibility_timeout=delay or None)
