"""POST /api/graph/notifications: Graph's change notifications in, one queue message per mailbox out.

Graph needs a 2xx within 3 s (and throttles an endpoint that is often slower), so this path only
touches storage: one point read per subscription id in the batch (``subscriptions`` index table, kept in
memory once found) and one queue message per mailbox, shared with concurrent requests (group commit,
below). It never calls Graph and never imports the Graph SDK. It answers 202
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

Under a burst (hints for more than ``BUNDLE_ABOVE_MAILBOXES`` mailboxes waiting together) the same queue
also carries *bundles*, which the reconcile worker first splits into the messages above, one queue message
each (``split_bundle``)::

    {"version": 1, "bundle": [<message as above>, …]}      # never more than 48 KiB of JSON
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


async def enqueue_change(message: MailboxChangeMessage | HintBundle) -> None:
    await get_store().queue(MAILBOX_CHANGES_QUEUE).send_message(json.dumps(message))


# Group commit of change hints. Writing one queue message per POST and mailbox makes a burst cost one
# storage write per request, and the last request of the burst waits for all of them. Instead the hints
# of concurrent requests are written in waves: while one wave is being written, new hints wait, and the
# next wave carries all of them. Every request still answers only once its hint is stored (or 503), so
# nothing is acknowledged before it is persisted.
#
# A wave merges hints per mailbox. When it spans few mailboxes it writes one message per mailbox; when
# it spans many (a burst), it writes *bundles* — several mailboxes' messages in one queue message — and
# the reconcile worker splits each bundle into per-mailbox messages (``split_bundle``) before any
# reconcile. A burst of 200 POSTs over 50 mailboxes thus costs a handful of writes instead of ~100.
MAX_MESSAGE_JSON_BYTES = 46 * 1024  # a queue message holds 64 KiB of base64 = 48 KiB of JSON, less a margin
BUNDLE_ABOVE_MAILBOXES = 4  # up to this many mailboxes in a wave: direct messages, no extra queue hop
LINGER_SECONDS = 0.02  # the longest a wave waits for more hints of a burst (see _HintBatcher._linger)
MAX_EVENT_ID_CHARS = 1024  # Graph's are ~150; anything longer is not kept (the hint becomes a full resync)


class HintBundle(TypedDict):
    version: int
    bundle: list[MailboxChangeMessage]


def is_bundle(message: object) -> bool:
    return isinstance(message, dict) and isinstance(message.get("bundle"), list)


async def split_bundle(bundle: HintBundle) -> int:
    """The reconcile worker's first step for a bundle: its per-mailbox messages, each queued on its own.

    If a write fails the bundle is retried whole; the messages already written come again, which is
    harmless (hints are idempotent)."""
    messages = [m for m in bundle["bundle"] if isinstance(m, dict) and isinstance(m.get("mailbox"), str)]
    await asyncio.gather(*(enqueue_change(m) for m in messages))
    return len(messages)


def _json_size(value: object) -> int:
    return len(json.dumps(value))


def _change_size(change: Change) -> int:
    """Bytes the change adds to a message's JSON, without serialising it (this runs for every item)."""
    text = change["changeType"] + change["eventId"]
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return len(text) + 34  # {"changeType": "…", "eventId": "…"} and the ", " before it
    return _json_size(change) + 2


class _Pending:
    """One queue message being assembled, and the requests waiting for it."""

    def __init__(self, body: dict[str, Any], size: int, futures: list[asyncio.Future[None]]) -> None:
        self.body, self.size, self.futures = body, size, futures
        self.members: list[_Pending] = []  # for a bundle: the mailbox messages in it


def _pack(batch: list[tuple[MailboxChangeMessage, asyncio.Future[None]]]) -> list[_Pending]:
    """A wave's queue messages: hints merged per mailbox (each under the size limit), bundled if many."""
    per_mailbox: dict[str, list[_Pending]] = defaultdict(list)
    for message, future in batch:
        size = sum(_change_size(c) for c in message["changes"])
        groups = per_mailbox[message["mailbox"]]
        last = groups[-1] if groups else None
        if last is not None and last.size + size <= MAX_MESSAGE_JSON_BYTES:
            last.body["changes"].extend(message["changes"])
            last.body["fullResync"] = last.body["fullResync"] or message["fullResync"]
            last.size += size
            last.futures.append(future)
        else:
            body = {**message, "changes": list(message["changes"])}
            groups.append(_Pending(body, _json_size({**body, "changes": []}) + size, [future]))
    messages = [m for groups in per_mailbox.values() for m in groups]
    if len(per_mailbox) <= BUNDLE_ABOVE_MAILBOXES:
        return messages
    bundles: list[_Pending] = []
    for m in messages:
        if not bundles or bundles[-1].size + m.size + 2 > MAX_MESSAGE_JSON_BYTES:
            bundles.append(_Pending({"version": 1, "bundle": []}, len('{"version": 1, "bundle": []}'), []))
        bundle = bundles[-1]
        bundle.body["bundle"].append(m.body)
        bundle.size += m.size + 2
        bundle.futures.extend(m.futures)
        bundle.members.append(m)
    return bundles


class _HintBatcher:
    def __init__(self) -> None:
        self.waiting: list[tuple[MailboxChangeMessage, asyncio.Future[None]]] = []
        self.writer: asyncio.Task[None] | None = None  # referenced, so the loop cannot drop a running wave

    def submit(self, message: MailboxChangeMessage) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((message, done))
        if self.writer is None:
            self.writer = asyncio.create_task(self._write_waves())
        return done

    async def _write_waves(self) -> None:
        try:
            while self.waiting:
                await self._linger()
                wave, self.waiting = self.waiting, []
                try:
                    await asyncio.gather(*(self._write(m) for m in _pack(wave)))
                except BaseException as error:  # a bug in packing must not leave requests waiting forever
                    _settle([f for _, f in wave], error)
                    raise
        finally:
            self.writer = None
            if self.waiting:  # only after an unexpected error; never strand a request
                wave, self.waiting = self.waiting, []
                _settle([f for _, f in wave], RuntimeError("hint writer stopped"))

    async def _linger(self) -> None:
        """Let the requests of a burst join the wave before it is written.

        In a burst the host parses requests over many loop turns and each reaches submit() in its own;
        a wave written at the first of them would make all the others wait a whole write behind it. So
        the wave waits while hints keep arriving — until two loop turns bring none, at most
        ``LINGER_SECONDS``. A lone request waits two loop turns (microseconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_SECONDS
        quiet_turns, seen = 0, len(self.waiting)
        while quiet_turns < 2 and loop.time() < deadline:
            await asyncio.sleep(0)
            quiet_turns = quiet_turns + 1 if len(self.waiting) == seen else 0
            seen = len(self.waiting)

    @staticmethod
    async def _write(pending: _Pending) -> None:
        try:
            await enqueue_change(pending.body)  # type: ignore[arg-type]  # a message or a bundle
        except Exception as error:
            _settle(pending.futures, error)
            return
        _settle(pending.futures, None)
        # Telemetry per stored message, not per request: a burst's hundreds of POSTs make a few dozen events.
        for m in pending.members or [pending]:
            track_event(events.NOTIFICATIONS_RECEIVED, mailbox=m.body["mailbox"],
                        subscriptionId=m.body["subscriptionId"], itemCount=len(m.body["changes"]),
                        requestCount=len(m.futures), correlationId=m.body["correlationId"])


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if not future.done():  # a waiter whose client went away has cancelled its own
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _HintBatcher] = weakref.WeakKeyDictionary()


def enqueue_hint(message: MailboxChangeMessage) -> asyncio.Future[None]:
    """Store a change hint for the reconcile worker, sharing the write with concurrent hints (see above).

    Returns a future that completes once the hint is stored, or fails with the storage error."""
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = _HintBatcher()
    return batcher.submit(message)


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
        entries = {i: subscriptions.cached(i) for i in ids}
        missing = [i for i, entry in entries.items() if entry is None]
        if missing:  # a task per read only when storage is needed: a burst of cached ids stays on the fast path
            entries.update(zip(missing, await asyncio.gather(*(subscriptions.lookup(i) for i in missing)),
                               strict=True))
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
        oversized: set[tuple[str, str]] = set()
        for entry, item in accepted:
            change_type = item.get("changeType") if isinstance(item.get("changeType"), str) else "updated"
            event, key = _event_id(item), (entry.mailbox, entry.subscription_id)
            if len(event) > MAX_EVENT_ID_CHARS or len(change_type) > 32:
                oversized.add(key)  # not kept as a hint, but not lost: the mailbox gets a full resync
                by_mailbox.setdefault(key, [])
                continue
            by_mailbox[key].append({"changeType": change_type, "eventId": event})
        if dropped_count:
            track_event(events.NOTIFICATIONS_RECEIVED, itemCount=0, requestCount=1, droppedCount=dropped_count,
                        correlationId=correlation_id)
        return [enqueue_hint(change_message(mailbox, subscription_id=sid, changes=changes, reason="notification",
                                            full_resync=(mailbox, sid) in oversized, correlation_id=correlation_id))
                for (mailbox, sid), changes in by_mailbox.items()]

    return await receive(req, correlation_id, "notifications", persist)
