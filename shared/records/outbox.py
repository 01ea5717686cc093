"""The ``outbox:<eventId>`` rows of the mailbox partition: appointment events waiting to reach flows.

The reconcile worker writes an outbox row for every event it derives, in the same Table transaction as
the snapshot change that caused it (``event_operation``), so an event exists if and only if the snapshot
moved. Fan-out then turns each row into one delivery message per matching flow and marks it ``fannedOut``;
a crash in between leaves it ``pending`` for the outbox sweep. The row's properties are listed in
``docs/architecture.md``.

The outbox sweep finds its work through the due index ``~index:outbox`` (``shared.records.mailbox``,
index rows), not by scanning every partition: whoever writes an outbox row makes its mailbox due first
(``before_writing``), and the sweep reads only the due mailboxes' ``outbox:`` rows (``rows``) and tells
the index when each mailbox is due again (``reschedule``: a pending row keeps it due, a fanned-out row
makes it due when its retention ends).

Payload size. The payload (``AppointmentData`` JSON) is chunked into ``Payload0..N`` at
``PAYLOAD_CHUNK_UNITS`` UTF-16 code units — what Table storage counts, 32 K per string property; Python's
``len`` counts code points, and an emoji is two units — never splitting a character, with lone surrogates
replaced (they cannot travel as UTF-8). The whole row is bounded too (``storage.entity_size``: 1 MiB per
entity, counted as Azure and the wire count it). A payload no row can hold is cut, not moved elsewhere:
``fit_payload`` shortens the longest texts evenly, each ending in ``TRUNCATION_MARKER`` ("… [truncated: N
characters]"), and the row's ``PayloadCut`` names the fields cut. Blob storage was the alternative; it was
not chosen because a blob cannot be written in the row's entity-group transaction (the snapshot and its
event would no longer move together, a crash could orphan blobs of customers' data that nothing deletes),
every delivery would read a second store, and a row already holds several hundred thousand characters of
notes: a 40,000-character note, or 9,000 emoji, is stored whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.adapters.storage import ENTITY_MAX_BYTES, ENTITY_MAX_PROPERTIES, entity_size, utf16_units
from shared.records.mailbox import (
    PREFIX_FILTER,
    due_rows,
    if_unchanged,
    mailbox_table,
    prefix_bounds,
    reschedule,
    row,
    rows_with_prefix,
    touch_due,
)

log = logging.getLogger(__name__)

OUTBOX_PREFIX = "outbox:"
INDEX = "outbox"
PENDING, FANNED_OUT = "pending", "fannedOut"

# Change type of an event -> the trigger (registration route name) whose flows receive it.
TRIGGER_OF_CHANGE = {"Created": "AppointmentCreated", "Updated": "AppointmentUpdated",
                     "Cancelled": "AppointmentDeleted",
                     # The time-relative triggers' events: each for one flow (``FlowId``), see ``put_reminder_event``.
                     "Starting": "AppointmentStarting", "Ended": "AppointmentEnded"}


def event_id(mailbox: str, appointment_id: str, change_type: str, version: str) -> str:
    """Deterministic: two workers deriving the same change compute the same id (and so collide in storage
    instead of emitting twice). ``version`` identifies the state changed to (e.g. a content hash)."""
    digest = hashlib.sha256(f"{mailbox}\n{appointment_id}\n{change_type}\n{version}".encode()).hexdigest()
    return digest[:32]


def outbox_row_key(event: str) -> str:
    return f"{OUTBOX_PREFIX}{event}"


# Table storage counts UTF-16 code units: 32 K of them per string property, 1 MiB per entity
# (``shared.adapters.storage.entity_size``). Chunks stay a margin under the first, rows under the second.
PAYLOAD_CHUNK_UNITS = 30_000
ENTITY_MARGIN_BYTES = 64 * 1024
# A payload too large for its row has its longest texts cut, each ending in this (N: characters cut).
TRUNCATION_MARKER = "… [truncated: {} characters]"
_SHORT_TEXT = 2 * len(TRUNCATION_MARKER)  # texts this short are not worth cutting


def _payload_json(payload: Any) -> str:
    """Compact JSON, non-ASCII kept raw (an emoji is 1 character, not a 12-character escape). A lone
    surrogate (Graph's JSON may escape one) cannot travel as UTF-8: it becomes U+FFFD, pairs are joined."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _chunks(text: str) -> list[str]:
    """``text`` in pieces of at most ``PAYLOAD_CHUNK_UNITS`` UTF-16 units, never splitting a character."""
    if utf16_units(text) == len(text):  # all in the BMP: one unit per character
        return [text[i:i + PAYLOAD_CHUNK_UNITS] for i in range(0, len(text), PAYLOAD_CHUNK_UNITS)] or [""]
    chunks, start, units = [], 0, 0
    for index, char in enumerate(text):
        width = 2 if ord(char) > 0xFFFF else 1
        if units + width > PAYLOAD_CHUNK_UNITS:
            chunks.append(text[start:index])
            start, units = index, 0
        units += width
    chunks.append(text[start:])
    return chunks


def _chunk_properties(text: str) -> dict[str, Any]:
    chunks = _chunks(text)
    props: dict[str, Any] = {f"Payload{i}": chunk for i, chunk in enumerate(chunks)}
    props["PayloadChunks"] = len(chunks)
    return props


def _texts_and_lists(node: Any) -> tuple[list[tuple[int, str, Any, Any]], list[tuple[int, str, Any, Any]]]:
    """(length, path, container, key) of every text longer than ``_SHORT_TEXT`` and every list of several
    items in ``node``. A path names a field, with ``*`` for any item of a list (``Customers.*.Notes``)."""
    texts, lists = [], []
    stack: list[tuple[str, Any]] = [("", node)]
    while stack:
        here, value = stack.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, child in items:
            name = "*" if isinstance(value, list) else str(key)  # Customers.*.Notes: a field, not each item's
            where = f"{here}.{name}" if here else name
            if isinstance(child, str) and len(child) > _SHORT_TEXT:
                texts.append((len(child), where, value, key))
            elif isinstance(child, list | dict):
                if isinstance(child, list) and len(child) > 1:
                    lists.append((len(child), where, value, key))
                stack.append((where, child))
    return texts, lists


def _cap(lengths: list[int], excess_chars: float) -> int:
    """The length L such that cutting every text longer than L down to L removes ``excess_chars``."""
    lengths = sorted(lengths, reverse=True)
    removed = 0
    for index, length in enumerate(lengths):
        below = lengths[index + 1] if index + 1 < len(lengths) else 0
        # Cutting the index+1 longest texts from ``length`` down to ``below``:
        if removed + (length - below) * (index + 1) >= excess_chars:
            return max(0, int(length - (excess_chars - removed) / (index + 1)))
        removed += (length - below) * (index + 1)
    return 0


def fit_payload(payload: Mapping[str, Any], budget: int) -> tuple[dict[str, Any], list[str]]:
    """``payload`` cut until its chunk properties take at most ``budget`` bytes, and the paths of what was
    cut. The longest texts are cut first, evenly (every text longer than some length is cut to it), each
    ending in ``TRUNCATION_MARKER``; only when no long text is left does the longest list lose its second
    half (a group appointment of thousands of customers)."""
    data = json.loads(_payload_json(payload))
    cut: dict[str, None] = {}  # ordered set
    while (size := entity_size(_chunk_properties(_payload_json(data)))) > budget:
        texts, lists = _texts_and_lists(data)
        text_chars = sum(length for length, *_ in texts)
        if texts:
            # Bytes per character of these texts as stored (JSON escapes included), so one pass usually fits.
            sample = "".join(str(container[key])[:2000] for _, _, container, key in texts[:50])
            per_char = max(1.0, (entity_size({"t": _payload_json(sample)}) - entity_size({"t": ""})) / len(sample))
            excess = (size - budget) / per_char + len(texts) * len(TRUNCATION_MARKER) + 64
            cap = max(_SHORT_TEXT, _cap([length for length, *_ in texts], min(excess, text_chars)))
            for length, path, container, key in texts:
                if length > cap:
                    removed = length - cap + len(TRUNCATION_MARKER)
                    container[key] = container[key][:length - removed] + TRUNCATION_MARKER.format(removed)
                    cut[path] = None
            if cap > _SHORT_TEXT or excess < text_chars:
                continue
        if lists:
            length, path, container, key = max(lists, key=lambda t: t[0])
            container[key] = container[key][:length // 2]
            cut[path] = None
        elif not texts:
            break  # nothing left to cut: the caller's budget is smaller than an almost empty payload
    return data, list(cut)


def payload_properties(payload: Mapping[str, Any], row_properties: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Entity properties holding ``payload`` as JSON: chunked under the property limit, and cut (see
    ``fit_payload``) so the whole row — ``row_properties`` are its others — stays under the entity limit.
    A cut payload's row also says what was cut (``PayloadCut``: the fields' paths)."""
    budget = ENTITY_MAX_BYTES - ENTITY_MARGIN_BYTES - entity_size(row_properties or {})
    text = _payload_json(payload)
    props = _chunk_properties(text)
    if entity_size(props) > budget or len(props) + len(row_properties or {}) + 1 > ENTITY_MAX_PROPERTIES:
        fitted, cut = fit_payload(payload, budget)
        props = _chunk_properties(_payload_json(fitted))
        props["PayloadCut"] = ",".join(cut)
        log.warning("a payload too large for its row was cut: %s", props["PayloadCut"])
    return props


def read_payload(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The payload ``payload_properties`` wrote into ``entity``."""
    text = "".join(str(entity.get(f"Payload{i}", "")) for i in range(int(entity.get("PayloadChunks", 1))))
    return json.loads(text) if text else {}


def _ids(values: Any) -> list[str]:
    return [str(v) for v in values if isinstance(v, str) and v]


def filter_properties(payload: Mapping[str, Any]) -> dict[str, str]:
    """What flows' service and staff filters are matched against, beside the payload: the appointment's
    service and staff, now and (an Updated event) before, so a flow for a service also hears of an
    appointment moved away from it. Ids joined by commas (Graph's ids are GUIDs)."""
    previous = payload.get("Previous") if isinstance(payload.get("Previous"), Mapping) else {}
    services = _ids([payload.get("ServiceId"), previous.get("ServiceId")])
    staff = _ids([m.get("Id") for source in (payload, previous) for m in (source.get("StaffMembers") or [])
                  if isinstance(m, Mapping)])
    return {"ServiceIds": ",".join(dict.fromkeys(services)), "StaffMemberIds": ",".join(dict.fromkeys(staff))}


def filter_keys_of(payload: Mapping[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
    """The service ids and staff ids of ``payload`` for the flows' filters (``filter_properties``)."""
    props = filter_properties(payload)
    return frozenset(_ids(props["ServiceIds"].split(","))), frozenset(_ids(props["StaffMemberIds"].split(",")))


def event_operation(mailbox: str, event: str, change_type: str, appointment_id: str, payload: Mapping[str, Any],
                    detected_at: datetime) -> tuple[Any, ...]:
    """The transaction operation writing a new ``pending`` event (beside the snapshot change it comes from)."""
    entity = row(mailbox, outbox_row_key(event), EventId=event, Trigger=TRIGGER_OF_CHANGE[change_type],
                 ChangeType=change_type, AppointmentId=appointment_id, DetectedAt=detected_at, State=PENDING,
                 **filter_properties(payload))
    return ("upsert", {**entity, **payload_properties(payload, entity)}, {"mode": UpdateMode.REPLACE})


async def filter_keys(mailbox: str, event: str, entity: Mapping[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
    """The event's service ids and staff ids for the flows' filters (``filter_properties``); for a row stored
    before they were, from its payload."""
    if entity.get("ServiceIds") is None:  # a select of a property the row lacks may come back as null
        full = await get(mailbox, event)
        entity = filter_properties(read_payload(full)) if full is not None else {}
    return (frozenset(_ids(str(entity.get("ServiceIds") or "").split(","))),
            frozenset(_ids(str(entity.get("StaffMemberIds") or "").split(","))))


async def put_test_event(mailbox: str, event: str, change_type: str, payload: Mapping[str, Any], at: datetime) -> None:
    """A test event for one flow (``IsTest``): stored as already fanned out, so no other flow receives it,
    and delivered, retried, dead-lettered and pruned like any other."""
    entity = row(mailbox, outbox_row_key(event), EventId=event, Trigger=TRIGGER_OF_CHANGE[change_type],
                 ChangeType=change_type, AppointmentId=str(payload.get("AppointmentId") or ""), DetectedAt=at,
                 State=FANNED_OUT, FannedOutAt=at, LastEnqueuedAt=at, FlowCount=1, IsTest=True)
    await before_writing(mailbox)
    await mailbox_table().upsert_entity({**entity, **payload_properties(payload, entity)}, mode=UpdateMode.REPLACE)


async def put_reminder_event(mailbox: str, event: str, change_type: str, flow_id: str, payload: Mapping[str, Any],
                             scheduled_for: datetime) -> bool:
    """A time-relative trigger's event for one flow (``FlowId``: fan-out sends it to that flow only), ``pending``
    as a reconcile's event is, so a crash before its fan-out leaves it to the outbox sweep. ``DetectedAt`` is the
    instant it was due (its lateness is what the delivery latency then measures). Created, never replaced: False
    when the event exists already (fired before: the caller does not fire it again)."""
    entity = row(mailbox, outbox_row_key(event), EventId=event, Trigger=TRIGGER_OF_CHANGE[change_type],
                 ChangeType=change_type, AppointmentId=str(payload.get("AppointmentId") or ""),
                 DetectedAt=scheduled_for, State=PENDING, FlowId=flow_id, **filter_properties(payload))
    await before_writing(mailbox)
    try:
        await mailbox_table().create_entity({**entity, **payload_properties(payload, entity)})
    except ResourceExistsError:
        return False
    return True


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


async def before_writing(mailbox: str) -> None:
    """Make the mailbox due in the sweep's index: call it before committing outbox rows."""
    await touch_due(INDEX, mailbox)


async def due(now: datetime) -> list[Any]:
    """Index rows of the mailboxes whose outbox rows may need the sweep by ``now`` (``index_mailbox``
    names the mailbox; pass the row back to ``reschedule``)."""
    return await due_rows(INDEX, now)


async def rows(mailbox: str) -> list[Any]:
    """The mailbox's outbox rows, without their payloads: what the sweep decides on."""
    return await rows_with_prefix(mailbox, OUTBOX_PREFIX,
                                  select=["PartitionKey", "RowKey", "EventId", "State", "LastEnqueuedAt", "Timestamp"])


async def pending_events(mailbox: str) -> list[str]:
    """The ids of the mailbox's events committed but not yet fanned out."""
    return [e["EventId"] for e in await rows(mailbox) if e.get("State") == PENDING]


async def reschedule_mailbox(index_entity: Any, next_due: datetime | None, now: datetime) -> None:
    """The mailbox is due again at ``next_due``; None: it has no outbox rows left."""
    await reschedule(index_entity, next_due, now)


async def backfill_index() -> int:
    """Make every mailbox with outbox rows due (a scan of the whole table: once, for rows written before the
    index existed). Returns how many mailboxes."""
    found = {e["PartitionKey"] async for e in mailbox_table().query_entities(
        PREFIX_FILTER, parameters=prefix_bounds(OUTBOX_PREFIX), select=["PartitionKey"])}
    for mailbox in found:
        await before_writing(mailbox)
    return len(found)


async def delete_unchanged(entity: Any) -> bool:
    """Delete the row as read (ETag match: one re-enqueued meanwhile stays). True when deleted."""
    return await if_unchanged(mailbox_table().delete_entity(
        entity["PartitionKey"], entity["RowKey"], etag=entity.metadata["etag"],
        match_condition=MatchConditions.IfNotModified))
