"""What both Graph endpoints (change and lifecycle notifications) do with a request before their own work.

Validation handshake: with ``?validationToken=`` the answer is 200 ``text/plain`` with the token exactly
as received (after URL decoding, which the runtime does), with ``nosniff`` so the reflection is inert.

Otherwise the body is a batch of items; each must name a known subscription (the index in
``shared.records.subscription_index``) and carry its ``clientState`` (compared in constant time). Other
items are dropped and counted in the log, without their content. An endpoint then persists the work of
the authentic items (queue messages) and answers 202, or 503 when it could not (Graph retries for
hours; every consumer is idempotent, so a batch sent twice is harmless).
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

Accepted = list[tuple[IndexEntry, dict[str, Any]]]


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


async def authentic_items(items: list[dict[str, Any]]) -> tuple[Accepted, dict[str, int]]:
    """Items whose subscription we know and whose clientState matches; and counts of the dropped."""
    ids = {str(i.get("subscriptionId", "")) for i in items if isinstance(i.get("subscriptionId"), str)}
    ids.discard("")
    try:
        entries = {i: subscription_index.cached(i) for i in ids}
        missing = [i for i, entry in entries.items() if entry is None]
        if missing:  # a task per read only when storage is needed: a burst of cached ids stays on the fast path
            entries.update(zip(missing, await asyncio.gather(*(subscription_index.lookup(i) for i in missing)),
                               strict=True))
    except Exception as error:
        log.error("notification lookup failed (%s); answering 503 so Graph retries", type(error).__name__)
        raise ApiError("NotificationNotPersisted") from None
    accepted: Accepted = []
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
    try:
        await asyncio.gather(*writes)
    except Exception as error:
        log.error("could not store %s (%s); answering 503 so Graph retries", kind, type(error).__name__)
        raise ApiError("NotificationNotPersisted") from None
    return empty_response(202)
