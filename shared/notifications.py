"""POST /api/graph/notifications: Graph's change notifications in, one queue message per mailbox out.

Graph needs a 2xx within 3 s (and throttles an endpoint that is often slower), so this path only
touches storage: one point read per subscription id in the batch (``subscriptions`` index table) and
one queue message per mailbox. It never calls Graph and never imports the Graph SDK. It answers 202
once the messages are stored, and 503 only when they could not be (Graph then retries for hours).

Validation handshake: with ``?validationToken=`` it answers 200 ``text/plain`` with the token exactly
as received (after URL decoding, which the runtime does), with ``nosniff`` so the reflection is inert.

Each item must name a known subscription and carry its ``clientState`` (compared in constant time);
other items are dropped and counted in the log — without their content.

Message contract (queue ``mailbox-changes``, base64 JSON, consumed by the reconcile worker of issue 7)::

    {
      "version": 1,
      "mailbox": "clinic@contoso.test",         # lower-cased SMTP address = the table partition
      "subscriptionId": "…",                    # which subscription reported it ("" for timer/lifecycle)
      "changes": [                               # the hint: may be empty, duplicated or out of order
        {"changeType": "created|updated|deleted", "eventId": "…"}   # calendar event id, NOT appointment id
      ],
      "fullResync": false,                       # true: compare the whole horizon, not just these events
      "baseline": false,                         # true: first sync of a new subscription, emit no events
      "reason": "notification|missed|subscriptionRemoved|created|timer",
      "receivedAt": "2026-11-25T08:00:00+00:00",
      "correlationId": "…"
    }

The reconcile worker treats it as a hint: it re-reads Graph and diffs against its snapshot, so
duplicates, re-orderings and lost messages cannot produce wrong events.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypedDict

import azure.functions as func

from shared import events
from shared.errors import ApiError
from shared.monitoring import track_event
from shared.store import MAILBOX_CHANGES_QUEUE, get_store
from shared.subscriptions import IndexEntry, Subscriptions
from shared.web import CORRELATION_HEADER, endpoint

log = logging.getLogger(__name__)

# Graph batches notifications; even a large burst stays far below this.
MAX_BODY_BYTES = 1024 * 1024
MAX_ITEMS = 1000
MAX_VALIDATION_TOKEN_CHARS = 1024


class Change(TypedDict):
    changeType: str
    eventId: str


class MailboxChangeMessage(TypedDict):
    version: int
    mailbox: str
    subscriptionId: str
    changes: list[Change]
    fullResync: bool
    baseline: bool
    reason: str
    receivedAt: str
    correlationId: str


def change_message(mailbox: str, *, subscription_id: str = "", changes: list[Change] | None = None,
                   full_resync: bool = False, baseline: bool = False, reason: str,
                   correlation_id: str) -> MailboxChangeMessage:
    return {"version": 1, "mailbox": mailbox, "subscriptionId": subscription_id, "changes": changes or [],
            "fullResync": full_resync, "baseline": baseline, "reason": reason,
            "receivedAt": datetime.now(UTC).isoformat(), "correlationId": correlation_id}


async def enqueue_change(message: MailboxChangeMessage) -> None:
    await get_store().queue(MAILBOX_CHANGES_QUEUE).send_message(json.dumps(message))


# Group commit of change hints. A burst of notification POSTs for one mailbox would each write a queue
# message; instead, while one write for a mailbox is in flight, the hints of other requests for it wait and
# then go out together as one message. Every request still answers only once its hint is stored (or 503),
# so nothing is acknowledged before it is persisted; a burst costs a few writes instead of one per POST.
MAX_CHANGES_PER_MESSAGE = 300  # a queue message holds 64 KiB of base64: about 48 KiB of JSON


class _HintBatcher:
    def __init__(self) -> None:
        self.waiting: dict[str, list[tuple[MailboxChangeMessage, asyncio.Future[None]]]] = defaultdict(list)
        self.writing: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # referenced, so the loop cannot drop a running write

    async def put(self, message: MailboxChangeMessage) -> None:
        mailbox = message["mailbox"]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting[mailbox].append((message, done))
        if mailbox not in self.writing:
            self.writing.add(mailbox)
            task = asyncio.create_task(self._write(mailbox))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        await done

    async def _write(self, mailbox: str) -> None:
        try:
            while self.waiting.get(mailbox):
                batch = self.waiting.pop(mailbox)
                for group in _merge(batch):
                    message, futures = group
                    try:
                        await enqueue_change(message)
                    except Exception as error:
                        for future in futures:
                            if not future.done():
                                future.set_exception(error)
                    else:
                        for future in futures:
                            if not future.done():
                                future.set_result(None)
        finally:
            self.writing.discard(mailbox)


def _merge(batch: list[tuple[MailboxChangeMessage, asyncio.Future[None]]]
           ) -> list[tuple[MailboxChangeMessage, list[asyncio.Future[None]]]]:
    """One message per at most MAX_CHANGES_PER_MESSAGE changes, carrying every request's hint."""
    groups: list[tuple[MailboxChangeMessage, list[asyncio.Future[None]]]] = []
    for message, future in batch:
        if groups and len(groups[-1][0]["changes"]) + len(message["changes"]) <= MAX_CHANGES_PER_MESSAGE:
            merged, futures = groups[-1]
            merged["changes"].extend(message["changes"])
            merged["fullResync"] = merged["fullResync"] or message["fullResync"]
            futures.append(future)
        else:
            groups.append(({**message, "changes": list(message["changes"])}, [future]))
    return groups


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _HintBatcher] = weakref.WeakKeyDictionary()


async def enqueue_hint(message: MailboxChangeMessage) -> None:
    """Store a change hint for the reconcile worker, sharing the write with concurrent hints (see above)."""
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = _HintBatcher()
    await batcher.put(message)


def validation_response(req: func.HttpRequest) -> func.HttpResponse | None:
    """Graph's handshake: echo the token, inert. None when this is not a handshake."""
    token = req.params.get("validationToken")
    if token is None:
        return None
    if len(token) > MAX_VALIDATION_TOKEN_CHARS:
        raise ApiError("InvalidRequest", reason="validationToken is longer than any Graph sends")
    return func.HttpResponse(token, status_code=200, mimetype="text/plain", charset="utf-8",
                             headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


def parse_batch(body: bytes) -> list[dict[str, Any]]:
    if len(body) > MAX_BODY_BYTES:
        raise ApiError("PayloadTooLarge", limit=MAX_BODY_BYTES)
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError("InvalidRequest", reason="the body is not JSON") from None
    items = document.get("value") if isinstance(document, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ApiError("InvalidRequest", reason='expected {"value": [notification, …]}')
    if len(items) > MAX_ITEMS:
        raise ApiError("PayloadTooLarge", limit=MAX_BODY_BYTES)
    return items


async def authentic_items(items: list[dict[str, Any]], subscriptions: Subscriptions
                          ) -> tuple[list[tuple[IndexEntry, dict[str, Any]]], dict[str, int]]:
    """Items whose subscription we know and whose clientState matches; and counts of the dropped."""
    ids = {str(i.get("subscriptionId", "")) for i in items if isinstance(i.get("subscriptionId"), str)}
    ids.discard("")
    try:
        entries = dict(zip(ids, await asyncio.gather(*(subscriptions.lookup(i) for i in ids)), strict=True))
    except Exception as error:
        log.error("notification lookup failed (%s); answering 503 so Graph retries", type(error).__name__)
        raise ApiError("NotificationNotPersisted") from None
    accepted: list[tuple[IndexEntry, dict[str, Any]]] = []
    dropped = {"unknownSubscription": 0, "clientStateMismatch": 0}
    for item in items:
        entry = entries.get(item.get("subscriptionId")) if isinstance(item.get("subscriptionId"), str) else None
        if entry is None:
            dropped["unknownSubscription"] += 1
            continue
        given = item.get("clientState")
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), entry.client_state.encode()):
            dropped["clientStateMismatch"] += 1
            continue
        accepted.append((entry, item))
    return accepted, dropped


def _event_id(item: dict[str, Any]) -> str:
    data = item.get("resourceData")
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        return data["id"]
    resource = item.get("resource")
    return resource.rsplit("/", 1)[-1] if isinstance(resource, str) else ""


Accepted = list[tuple[IndexEntry, dict[str, Any]]]


async def receive(req: func.HttpRequest, correlation_id: str, kind: str,
                  persist: Callable[[Accepted, int], list[Awaitable[Any]]]) -> func.HttpResponse:
    """What both Graph endpoints do: handshake, authenticate the items, persist their work, answer 202.

    ``persist(accepted, dropped_count)`` turns the authentic items into storage writes (queue messages);
    if any fails the answer is 503, so Graph sends the batch again (duplicates are harmless: every consumer
    is idempotent).
    """
    handshake = validation_response(req)
    if handshake is not None:
        return handshake
    accepted, dropped = await authentic_items(parse_batch(req.get_body()), Subscriptions())
    try:
        await asyncio.gather(*persist(accepted, sum(dropped.values())))
    except Exception as error:
        log.error("could not store %s (%s); answering 503 so Graph retries", kind, type(error).__name__,
                  extra={"correlationId": correlation_id})
        raise ApiError("NotificationNotPersisted") from None
    if any(dropped.values()):
        log.warning("dropped %s items: %s", kind, dropped, extra={"correlationId": correlation_id})
    return func.HttpResponse(status_code=202, headers={CORRELATION_HEADER: correlation_id})


@endpoint
async def handle(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    """POST /api/graph/notifications: one ``mailbox-changes`` message per mailbox and batch."""

    def persist(accepted: Accepted, dropped_count: int) -> list[Awaitable[Any]]:
        by_mailbox: dict[tuple[str, str], list[Change]] = defaultdict(list)
        for entry, item in accepted:
            change_type = item.get("changeType") if isinstance(item.get("changeType"), str) else "updated"
            by_mailbox[(entry.mailbox, entry.subscription_id)].append(
                {"changeType": change_type, "eventId": _event_id(item)})
        for (mailbox, sid), changes in by_mailbox.items():
            track_event(events.NOTIFICATIONS_RECEIVED, mailbox=mailbox, subscriptionId=sid,
                        itemCount=len(changes), droppedCount=dropped_count,
                        correlationId=correlation_id)
        return [enqueue_hint(change_message(mailbox, subscription_id=sid, changes=changes, reason="notification",
                                            correlation_id=correlation_id))
                for (mailbox, sid), changes in by_mailbox.items()]

    return await receive(req, correlation_id, "notifications", persist)
