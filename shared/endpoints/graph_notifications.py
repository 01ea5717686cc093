"""POST /api/graph/notifications: Graph's change notifications in, change hints for the reconcile worker out.

Graph needs a 2xx within 3 s (and throttles an endpoint that is often slower), so this path only
touches storage: one point read per subscription id in the batch not yet in memory
(``shared.records.subscription_index``: found ones kept 5 min, absent ones 10 s; at most 20 reads for a
POST that shows no authentic item, see ``shared.endpoints.graph_requests``) and the ``mailbox-changes``
messages, written by group commit with concurrent requests (``shared.endpoints.hint_batching``). It never
calls Graph and never imports the Graph adapter (``lint-imports`` checks that). It answers 202 once the
hints are stored, and 503 only when they could not be (Graph then retries for hours). Handshake and
clientState checks, and what malformed input gets: ``shared.endpoints.graph_requests``. An authentic item
whose event id or change type a hint cannot carry (over ``MAX_EVENT_ID_CHARS`` / ``MAX_CHANGE_TYPE_CHARS``,
a lone surrogate, control characters: nothing the reconcile worker could ask Graph about) is not kept as a
change; its mailbox gets a full resync instead.
"""

from __future__ import annotations

from typing import Any

import azure.functions as func

from shared.adapters.monitoring import track_event
from shared.contracts import events
from shared.endpoints.graph_requests import Accepted, persisted, read_batch
from shared.endpoints.hint_batching import enqueue_hint
from shared.endpoints.http import endpoint
from shared.messages.mailbox_changes import Change, change_message

MAX_EVENT_ID_CHARS = 1024  # Graph's are ~150; anything longer is not kept (the hint becomes a full resync)
MAX_CHANGE_TYPE_CHARS = 32
GRAPH_CHANGE_TYPES = frozenset({"created", "updated", "deleted"})  # keepable as they are


def _keepable(text: str, limit: int) -> bool:
    """Whether a hint may carry ``text``: not too long, encodable (no lone surrogate), no control characters.

    Anything else could not be sent to Graph by the reconcile worker: it becomes a full resync instead."""
    if len(text) > limit or not text.isprintable():
        return False
    if text.isascii():  # Graph's ids are: nothing left to check
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _event_id(item: dict[str, Any]) -> str:
    data = item.get("resourceData")
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        return data["id"]
    resource = item.get("resource")
    return resource.rsplit("/", 1)[-1] if isinstance(resource, str) else ""


def _hints(accepted: Accepted) -> dict[tuple[str, str], tuple[list[Change], bool]]:
    """Changes per (mailbox, subscription), and whether some were too odd to keep (then: a full resync)."""
    by_mailbox: dict[tuple[str, str], list[Change]] = {}
    oversized: set[tuple[str, str]] = set()
    for entry, item in accepted:
        change_type = item.get("changeType")
        if not isinstance(change_type, str):
            change_type = "updated"
        event, key = _event_id(item), (entry.mailbox, entry.subscription_id)
        changes = by_mailbox.get(key)
        if changes is None:
            changes = by_mailbox[key] = []
        if not _keepable(event, MAX_EVENT_ID_CHARS) or (
                change_type not in GRAPH_CHANGE_TYPES and not _keepable(change_type, MAX_CHANGE_TYPE_CHARS)):
            oversized.add(key)  # not kept as a hint, but not lost: the mailbox gets a full resync
            continue
        changes.append({"changeType": change_type, "eventId": event})
    return {key: (changes, key in oversized) for key, changes in by_mailbox.items()}


@endpoint
async def handle(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/graph/notifications: one ``mailbox-changes`` hint per mailbox and batch."""
    batch = await read_batch(req, "notifications")
    if batch.handshake is not None:
        return batch.handshake
    if batch.dropped:
        track_event(events.NOTIFICATIONS_RECEIVED, itemCount=0, requestCount=1, droppedCount=batch.dropped)
    writes = [enqueue_hint(change_message(mailbox, subscription_id=sid, changes=changes, reason="notification",
                                          full_resync=oversized))
              for (mailbox, sid), (changes, oversized) in _hints(batch.accepted).items()]
    # The parsed batch is not needed while the hints are stored: freed now, a burst's hundreds of waiting
    # requests do not keep thousands of dicts alive for every garbage collection to scan.
    del batch
    return await persisted(writes, "notifications")
