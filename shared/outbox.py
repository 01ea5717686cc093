"""The outbox: appointment events waiting to reach flows, and the delivery message contract.

The reconcile worker (``shared.reconcile``) writes an outbox row for every event it derives, in the
same Table transaction as the snapshot change that caused it, so an event exists if and only if the
snapshot moved. Fan-out then turns each outbox row into one delivery message per matching flow.

Outbox row (mailbox partition of ``MAILBOX_TABLE``; RowKey ``outbox:<eventId>``)
-------------------------------------------------------------------------------
=================  ==========================================================================
``EventId``        stable id of this change (see ``event_id``): the delivery idempotency key's root
``Trigger``        ``AppointmentCreated`` | ``AppointmentUpdated`` | ``AppointmentDeleted``
``ChangeType``     ``Created`` | ``Updated`` | ``Cancelled``
``AppointmentId``  Bookings appointment id
``Payload0..N``    AppointmentData as JSON, in ``PayloadChunks`` pieces (a Table string holds 64 KiB):
                   write with ``payload_properties``, read with ``read_payload``
``DetectedAt``     when the reconcile saw the change (end-to-end latency starts here)
``State``          ``pending`` (committed, not yet fanned out) | ``fannedOut``
=================  ==========================================================================

A crash between commit and fan-out leaves ``pending`` rows; the outbox sweep (timer) fans them out.
Fanning out twice is harmless: deliveries are idempotent per (event, flow).

Delivery message (queue ``deliveries``, base64 JSON) — one per (event, flow)::

    {"version": 1, "mailbox": "clinic@contoso.test", "eventId": "…", "flowId": "<webhook id>",
     "attempt": 0, "firstAttemptAt": "2026-11-25T08:00:00+00:00", "correlationId": "…"}

The delivery worker reads the payload from the outbox row and the callback URL from the flow row (the
message never carries either: queues are not where secrets or large bodies live).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, TypedDict

OUTBOX_PREFIX = "outbox:"
OUTBOX_PREFIX_END = "outbox;"  # ';' follows ':' — RowKey ge 'outbox:' and lt 'outbox;' = every outbox row

# Change type of an event -> the trigger (registration route name) whose flows receive it.
TRIGGER_OF_CHANGE = {"Created": "AppointmentCreated", "Updated": "AppointmentUpdated",
                     "Cancelled": "AppointmentDeleted"}


class DeliveryMessage(TypedDict):
    version: int
    mailbox: str
    eventId: str
    flowId: str
    attempt: int
    firstAttemptAt: str
    correlationId: str


def event_id(mailbox: str, appointment_id: str, change_type: str, version: str) -> str:
    """Deterministic: two workers deriving the same change compute the same id (and so collide in storage
    instead of emitting twice). ``version`` identifies the state changed to (e.g. a content hash)."""
    digest = hashlib.sha256(f"{mailbox}\n{appointment_id}\n{change_type}\n{version}".encode()).hexdigest()
    return digest[:32]


def idempotency_key(event: str, flow: str) -> str:
    """Same for every retry of one event to one flow; different per flow."""
    return hashlib.sha256(f"{event}\n{flow}".encode()).hexdigest()[:40]


def outbox_row_key(event: str) -> str:
    return f"{OUTBOX_PREFIX}{event}"


PAYLOAD_CHUNK_CHARS = 30_000  # a Table string property holds 64 KiB = 32K UTF-16 code units


def payload_properties(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Entity properties holding ``payload`` as JSON, chunked under the Table property size limit."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    chunks = [text[i:i + PAYLOAD_CHUNK_CHARS] for i in range(0, len(text), PAYLOAD_CHUNK_CHARS)] or [""]
    props: dict[str, Any] = {f"Payload{i}": chunk for i, chunk in enumerate(chunks)}
    props["PayloadChunks"] = len(chunks)
    return props


def read_payload(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The payload ``payload_properties`` wrote into ``entity``."""
    text = "".join(str(entity.get(f"Payload{i}", "")) for i in range(int(entity.get("PayloadChunks", 1))))
    return json.loads(text) if text else {}
