"""What both Graph endpoints (change and lifecycle notifications) do with a request before their own work.

Validation handshake: with ``?validationToken=`` the answer is 200 ``text/plain`` with the token exactly
as received (after URL decoding, which the runtime does), with ``nosniff`` so the reflection is inert.

Otherwise the body is a batch of items; each must name a known subscription (the index in
``shared.records.subscription_index``) and carry its ``clientState`` (compared in constant time). Other
items are dropped and counted in the log, without their content. An endpoint then persists the work of
the authentic items (queue messages) and answers 202, or 503 when it could not (Graph retries for
hours; every consumer is idempotent, so a batch sent twice is harmless).

What is malformed, and what it gets (these routes are anonymous: anyone can POST anything):

- the body as a whole: more than ``MAX_BODY_BYTES`` (413 ``PayloadTooLarge``); not JSON, not UTF-8,
  nested deeper than the parser goes, a number too long to convert, not ``{"value": [object, …]}``,
  more than ``MAX_ITEMS`` items (400 ``InvalidRequest``, or 413 for the count). Graph never sends such a
  body, so nothing authentic is refused with it;
- one item: a ``subscriptionId`` that is not a string, not a key Table storage could hold (``/``,
  control characters, lone surrogates, too long) or names no subscription; a ``clientState`` that is not a
  string or does not match (lone surrogates included). The item is dropped and counted, as Graph's own
  stray notifications are; the batch's other items go on and the answer is 202;
- ``validationToken`` longer than ``MAX_VALIDATION_TOKEN_CHARS`` or not encodable as UTF-8 (a lone
  surrogate): 400 ``InvalidRequest``.

A flood of made-up subscription ids must not cost a storage read each (Graph's 3 s answer limit for the
genuine notifications around it): ids read as absent are kept as unknown for a few seconds
(``subscription_index.UNKNOWN_SECONDS``), and a POST gets at most ``LOOKUPS_PER_ROUND`` (20) storage reads
for ids not in memory. Only when a round finds an authentic item (a known subscription with its right
clientState, i.e. the POST is Graph's) does the next round read another 20, so a genuine batch naming many
cold subscriptions loses nothing, while a POST from anyone else costs at most 20 reads; the ids left unread
are dropped and counted (``unreadOverLookupCap``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func

from shared.contracts.errors import ApiError
from shared.endpoints.http import empty_response
from shared.records import subscription_index
from shared.records.subscription_index import IndexEntry

log = logging.getLogger(__name__)

# Graph batches notifications; even a large burst stays far below this.
MAX_BODY_BYTES = 1024 * 1024
MAX_ITEMS = 1000
MAX_VALIDATION_TOKEN_CHARS = 1024
LOOKUPS_PER_ROUND = 20  # storage reads per POST for ids not in memory, until the POST shows it is Graph's

Accepted = list[tuple[IndexEntry, dict[str, Any]]]


def validation_response(req: func.HttpRequest) -> func.HttpResponse | None:
    """Graph's handshake: echo the token, inert. None when this is not a handshake."""
    token = req.params.get("validationToken")
    if token is None:
        return None
    if len(token) > MAX_VALIDATION_TOKEN_CHARS:
        raise ApiError("InvalidRequest", reason="validationToken is longer than any Graph sends")
    try:
        token.encode()
    except UnicodeEncodeError:
        raise ApiError("InvalidRequest", reason="validationToken is not text") from None
    return func.HttpResponse(token, status_code=200, mimetype="text/plain", charset="utf-8",
                             headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


def parse_batch(body: bytes) -> list[dict[str, Any]]:
    if len(body) > MAX_BODY_BYTES:
        raise ApiError("PayloadTooLarge", limit=MAX_BODY_BYTES)
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):  # also: numbers over Python's 4,300-digit conversion limit
        raise ApiError("InvalidRequest", reason="the body is not JSON") from None
    except RecursionError:
        raise ApiError("InvalidRequest", reason="the body is nested too deeply") from None
    items = document.get("value") if isinstance(document, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ApiError("InvalidRequest", reason='expected {"value": [notification, …]}')
    if len(items) > MAX_ITEMS:
        raise ApiError("PayloadTooLarge", limit=MAX_BODY_BYTES)
    return items


def _matches(given: object, expected: str) -> bool:
    """The item's clientState is the subscription's (constant time; a lone surrogate is simply wrong)."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def _subscription_ids(items: list[dict[str, Any]]) -> list[str | None]:
    """Each item's subscription id, None where it is not a non-empty string."""
    return [sid if isinstance(sid := item.get("subscriptionId"), str) and sid else None for item in items]


class _ClientStates:
    """The clientState checks of one POST. Graph repeats the same clientState on every item of a
    subscription, so each distinct (subscription, value) pair is compared once; the comparison itself stays
    ``_matches`` (constant time), and the cache only ever holds values from this POST, never the secret."""

    def __init__(self) -> None:
        self._verdicts: dict[tuple[str, str], bool] = {}

    def match(self, given: object, entry: IndexEntry) -> bool:
        if not isinstance(given, str):
            return False
        key = (entry.subscription_id, given)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = _matches(given, entry.client_state)
        return verdict


async def _entries(items: list[dict[str, Any]], sids: list[str | None],
                   states: _ClientStates) -> tuple[dict[str, IndexEntry | None], set[str]]:
    """Index entries of the ids the items name (None: unknown), and the ids left unread by the cap."""
    entries: dict[str, IndexEntry | None] = {}
    unread: list[str] = []
    for sid in dict.fromkeys(s for s in sids if s is not None):  # first-seen order
        entry = subscription_index.cached(sid)
        if entry is not None or subscription_index.known_unknown(sid):
            entries[sid] = entry
        else:
            unread.append(sid)

    def authentic_seen() -> bool:
        return any(states.match(item.get("clientState"), entry) for item, sid in zip(items, sids, strict=True)
                   if sid is not None and (entry := entries.get(sid)) is not None)

    proven = False  # an authentic item seen: this is Graph's POST, read every id it names
    while unread:  # a task per read only when storage is needed: a burst of cached ids stays on the fast path
        round_ids, unread = unread[:LOOKUPS_PER_ROUND], unread[LOOKUPS_PER_ROUND:]
        entries.update(zip(round_ids, await asyncio.gather(*(subscription_index.lookup(i) for i in round_ids)),
                           strict=True))
        proven = proven or authentic_seen()
        if not proven:
            break  # nothing authentic so far: not Graph's POST, no more reads for it
    return entries, set(unread)


async def authentic_items(items: list[dict[str, Any]]) -> tuple[Accepted, dict[str, int]]:
    """Items whose subscription we know and whose clientState matches; and counts of the dropped."""
    sids = _subscription_ids(items)
    states = _ClientStates()
    try:
        entries, unread = await _entries(items, sids, states)
    except Exception as error:
        log.error("notification lookup failed (%s); answering 503 so Graph retries", type(error).__name__)
        raise ApiError("NotificationNotPersisted") from None
    accepted: Accepted = []
    dropped = {"unknownSubscription": 0, "clientStateMismatch": 0, "unreadOverLookupCap": 0}
    for item, sid in zip(items, sids, strict=True):
        entry = entries.get(sid) if sid is not None else None
        if entry is None:
            dropped["unreadOverLookupCap" if sid in unread else "unknownSubscription"] += 1
            continue
        if not states.match(item.get("clientState"), entry):
            dropped["clientStateMismatch"] += 1
            continue
        accepted.append((entry, item))
    return accepted, dropped


@dataclass(frozen=True)
class Batch:
    """What a Graph POST brought: the handshake's answer, or the authentic items (and how many were not)."""

    handshake: func.HttpResponse | None = None
    accepted: Accepted = field(default_factory=list)
    dropped: int = 0


async def read_batch(req: func.HttpRequest, kind: str) -> Batch:
    handshake = validation_response(req)
    if handshake is not None:
        return Batch(handshake)
    accepted, dropped = await authentic_items(parse_batch(req.get_body()))
    if any(dropped.values()):
        log.warning("dropped %s items: %s", kind, dropped)
    return Batch(None, accepted, sum(dropped.values()))


async def persisted(writes: Iterable[Awaitable[Any]], kind: str) -> func.HttpResponse:
    """202 once every write is stored; ``NotificationNotPersisted`` (503) if any failed."""
    pending = list(writes)
    try:
        if len(pending) == 1:
            await pending[0]  # the usual case (one mailbox): no gather around it, one wake-up less
        else:
            await asyncio.gather(*pending)
    except Exception as error:
        log.error("could not store %s (%s); answering 503 so Graph retries", kind, type(error).__name__)
        raise ApiError("NotificationNotPersisted") from None
    return empty_response(202)
