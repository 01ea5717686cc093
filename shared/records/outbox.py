"""The ``outbox:<eventId>`` rows of the mailbox partition: appointment events waiting to reach flows.

The reconcile worker writes an outbox row for every event it derives, in the same Table transaction as
the snapshot change that caused it (``event_operation``), so an event exists if and only if the snapshot
moved. Fan-out then turns each row into one delivery message per matching flow and marks it ``fannedOut``;
a crash in between leaves it ``pending`` for the outbox sweep. The row's properties are listed in
``docs/architecture.md``; the payload is chunked under the Table property size limit.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.records.mailbox import PREFIX_FILTER, mailbox_table, prefix_bounds, row

OUTBOX_PREFIX = "outbox:"
PENDING, FANNED_OUT = "pending", "fannedOut"

# Change type of an event -> the trigger (registration route name) whose flows receive it.
TRIGGER_OF_CHANGE = {"Created": "AppointmentCreated", "Updated": "AppointmentUpdated",
                     "Cancelled": "AppointmentDeleted"}


def event_id(mailbox: str, appointment_id: str, change_type: str, version: str) -> str:
    """Deterministic: two workers deriving the same change compute the same id (and so collide in storage
    instead of emitting twice). ``version`` identifies the state changed to (e.g. a content hash)."""
    digest = hashlib.sha256(f"{mailbox}\n{appointment_id}\n{change_type}\n{version}".encode()).hexdigest()
    return digest[:32]


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


def event_operation(mailbox: str, event: str, change_type: str, appointment_id: str, payload: Mapping[str, Any],
                    detected_at: datetime) -> tuple[Any, ...]:
    """The transaction operation writing a new ``pending`` event (beside the snapshot change it comes from)."""
    return ("upsert", row(mailbox, outbox_row_key(event), EventId=event, Trigger=TRIGGER_OF_CHANGE[change_type],
                          ChangeType=change_type, AppointmentId=appointment_id, DetectedAt=detected_at,
                          State=PENDING, **payload_properties(payload)),
            {"mode": UpdateMode.REPLACE})


async def get(mailbox: str, event: str, select: list[str] | None = None) -> Any | None:
    """The event's row, or None when it is not (or no longer) stored."""
    try:
        return await mailbox_table().get_entity(mailbox, outbox_row_key(event), select=select)
    except ResourceNotFoundError:
        return None


async def mark_fanned_out(mailbox: str, event: str, at: datetime, flow_count: int) -> bool:
    """Record that the event's delivery messages are queued. False when the row vanished meanwhile."""
    try:
        await mailbox_table().update_entity(
            row(mailbox, outbox_row_key(event), State=FANNED_OUT, FannedOutAt=at, LastEnqueuedAt=at,
                FlowCount=flow_count), mode=UpdateMode.MERGE)
    except ResourceNotFoundError:
        return False
    return True


async def mark_enqueued(mailbox: str, event: str, at: datetime) -> bool:
    """Record a new delivery message of the event (a replay), so the sweep keeps the row while it runs.
    False when the event is no longer stored."""
    try:
        await mailbox_table().update_entity(row(mailbox, outbox_row_key(event), LastEnqueuedAt=at),
                                            mode=UpdateMode.MERGE)
    except ResourceNotFoundError:
        return False
    return True


async def _by_mailbox(state: str, time_property: str, before: datetime, select: list[str]) -> dict[str, list[Any]]:
    """Rows in ``state`` whose ``time_property`` is before ``before``, per mailbox (across partitions)."""
    found: dict[str, list[Any]] = defaultdict(list)
    rows = mailbox_table().query_entities(
        f"{PREFIX_FILTER} and State eq @state and {time_property} lt @before", select=["PartitionKey", *select],
        parameters={**prefix_bounds(OUTBOX_PREFIX), "state": state, "before": before})
    async for entity in rows:
        found[entity["PartitionKey"]].append(entity)
    return found


async def pending_before(before: datetime) -> dict[str, list[str]]:
    """Event ids per mailbox of ``pending`` rows last written before ``before``."""
    found = await _by_mailbox(PENDING, "Timestamp", before, ["EventId"])
    return {mailbox: [e["EventId"] for e in entities] for mailbox, entities in found.items()}


async def fanned_out_before(before: datetime) -> dict[str, list[Any]]:
    """Rows per mailbox that were fanned out and last enqueued before ``before``."""
    return await _by_mailbox(FANNED_OUT, "LastEnqueuedAt", before, ["RowKey", "EventId"])


async def delete_unchanged(entity: Any) -> bool:
    """Delete the row as read (ETag match: one re-enqueued meanwhile stays). True when deleted."""
    try:
        await mailbox_table().delete_entity(entity["PartitionKey"], entity["RowKey"], etag=entity.metadata["etag"],
                                            match_condition=MatchConditions.IfNotModified)
    except ResourceNotFoundError:
        return False
    except HttpResponseError as error:
        if error.status_code != 412:
            raise
        return False
    return True
