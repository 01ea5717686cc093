"""``GET /v1.0/users/{id|upn}/calendarView/delta``: incremental changes to the events of a calendar view.

As https://learn.microsoft.com/en-us/graph/api/event-delta and
https://learn.microsoft.com/en-us/graph/delta-query-events document it:

* the first request of a round names ``startDateTime`` and ``endDateTime`` (else 400, as a calendar view); the
  window is fixed for the round: the state tokens encode it, later requests carry only ``$skiptoken`` (from an
  ``@odata.nextLink``) or ``$deltatoken`` (from the ``@odata.deltaLink`` that ends a round); ``$select`` is not
  supported (400);
* the initial round returns every event of the window (a full synchronization); a later round returns the events
  added or changed in the window since the token was issued, and those deleted or moved out of it as
  ``{"id", "@removed": {"reason": "deleted"}}``; an unchanged calendar answers one page, no items, a deltaLink;
* a page holds at most ``Prefer: odata.maxpagesize`` events; a page has either a nextLink or a deltaLink;
* a token the service no longer knows answers **410 Gone** and the client starts again with a full
  synchronization. For Outlook items the lifetime is not fixed: tokens live in a cache of limited size and the
  oldest are dropped (https://learn.microsoft.com/en-us/graph/delta-query-overview, "State tokens").

Unkind defaults (Graph does not document the numbers): pages of ``DeltaSettings.page_size`` (10) events without a
``Prefer``, and a token cache of ``DeltaSettings.tokens_per_mailbox`` (3) per mailbox, oldest dropped first.
``POST /_sandbox/delta {"pageSize"?, "tokensPerMailbox"?, "expireMailbox"?: smtp}`` changes them or drops a
mailbox's tokens now (its next delta request answers 410); ``GET /_sandbox/delta`` shows them; reset restores them.

The sandbox computes a round's changes by comparing the calendar with the state the token recorded (each event's
etag, last change, start and end), so no write path has to report to it.
"""

from __future__ import annotations

import json
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import odata
from .calendar_events import _user, _utc
from .errors import GraphError

PAGE_SIZE = 10
TOKENS_PER_MAILBOX = 3


@dataclass
class _Round:
    """What a state token stands for: the mailbox, the window, the events as the token saw them."""

    mailbox: str
    start: datetime
    end: datetime
    seen: dict[str, str]  # event id -> its version
    pending: list[dict[str, Any]] = field(default_factory=list)  # a nextLink's items still to send
    page_size: int = PAGE_SIZE


@dataclass
class DeltaSettings:
    page_size: int = PAGE_SIZE
    tokens_per_mailbox: int = TOKENS_PER_MAILBOX


class DeltaTokens:
    """The state tokens the sandbox issued, a bounded cache per mailbox (oldest dropped first)."""

    def __init__(self) -> None:
        self.settings = DeltaSettings()
        self.tokens: dict[str, OrderedDict[str, _Round]] = {}

    def reset(self) -> None:
        self.settings = DeltaSettings()
        self.tokens.clear()

    def issue(self, state: _Round) -> str:
        token = secrets.token_urlsafe(24)
        cache = self.tokens.setdefault(state.mailbox, OrderedDict())
        cache[token] = state
        while len(cache) > max(1, self.settings.tokens_per_mailbox):
            cache.popitem(last=False)
        return token

    def take(self, token: str) -> _Round:
        for cache in self.tokens.values():
            if token in cache:
                return cache[token]
        raise GraphError(410, "SyncStateNotFound", "The sync state is not found: the delta token has expired or is "
                         "not valid. Start a full synchronization.")


def tokens_of(request: Request) -> DeltaTokens:
    return request.app.state.sandbox.delta_tokens  # type: ignore[no-any-return]


def _version(event: dict[str, Any]) -> str:
    return json.dumps([event.get("@odata.etag"), event.get("lastModifiedDateTime"), event.get("start"),
                       event.get("end")], sort_keys=True)


def _in_window(mailbox_events: dict[str, dict[str, Any]], start: datetime, end: datetime) -> list[dict[str, Any]]:
    return sorted((ev for ev in mailbox_events.values()
                   if _utc(ev["start"]["dateTime"]) < end and _utc(ev["end"]["dateTime"]) > start),
                  key=lambda ev: (ev["start"]["dateTime"], ev["id"]))


def _page_size(request: Request, default: int) -> int:
    for prefer in ",".join(request.headers.getlist("prefer")).split(","):
        name, _, value = prefer.strip().partition("=")
        if name.lower() == "odata.maxpagesize" and value.strip().isdigit():
            return max(1, int(value))
    return default


def _answer(request: Request, upn: str, state: _Round, items: list[dict[str, Any]]) -> Response:
    """The first page of ``items``; the rest waits behind a nextLink, else the round ends with a deltaLink."""
    tokens = tokens_of(request)
    link = f"{odata.base_url(request)}/v1.0/users/{quote(upn, safe='@')}/calendarView/delta"
    body: dict[str, Any] = {"@odata.context": odata.context(request, "Collection(event)"),
                            "value": items[:state.page_size]}
    rest = items[state.page_size:]
    if rest:
        following = _Round(state.mailbox, state.start, state.end, state.seen, rest, state.page_size)
        body["@odata.nextLink"] = f"{link}?$skiptoken={tokens.issue(following)}"
    else:
        done = _Round(state.mailbox, state.start, state.end, state.seen, [], state.page_size)
        body["@odata.deltaLink"] = f"{link}?$deltatoken={tokens.issue(done)}"
    return JSONResponse(body)


async def calendar_view_delta(request: Request) -> Response:
    user = _user(request)
    upn = user.user_principal_name
    calendar = request.app.state.sandbox.state.calendars.get(upn.lower(), {})
    tokens = tokens_of(request)
    query = request.query_params
    if "$select" in query:
        raise GraphError(400, "ErrorInvalidUrlQuery", "The query parameter '$select' is not supported with delta.")
    skip, delta = query.get("$skiptoken"), query.get("$deltatoken")
    if skip:
        state = tokens.take(skip)
        return _answer(request, upn, state, state.pending)
    if delta:
        state = tokens.take(delta)
        now = _in_window(calendar, state.start, state.end)
        changed = [ev for ev in now if state.seen.get(ev["id"]) != _version(ev)]
        gone = sorted(set(state.seen) - {ev["id"] for ev in now})
        removed = [{"@odata.type": "#microsoft.graph.event", "id": event_id, "@removed": {"reason": "deleted"}}
                   for event_id in gone]
        seen = {ev["id"]: _version(ev) for ev in now}
        size = _page_size(request, state.page_size)
        return _answer(request, upn, _Round(state.mailbox, state.start, state.end, seen, [], size), changed + removed)
    start, end = query.get("startDateTime") or query.get("startdatetime"), query.get("endDateTime") or query.get(
        "enddatetime")
    if not start or not end:
        raise GraphError(400, "ErrorInvalidParameter", "This request requires a time window specified by the query "
                         "string parameters StartDateTime and EndDateTime.")
    window_start, window_end = _utc(start), _utc(end)
    now = _in_window(calendar, window_start, window_end)
    size = _page_size(request, tokens.settings.page_size)
    state = _Round(upn.lower(), window_start, window_end, {ev["id"]: _version(ev) for ev in now}, [], size)
    return _answer(request, upn, state, now)


async def delta_control(request: Request) -> Response:
    tokens = tokens_of(request)
    if request.method == "POST":
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "expected a JSON object"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "expected a JSON object"}, status_code=400)
        if "pageSize" in body:
            tokens.settings.page_size = max(1, int(body["pageSize"]))
        if "tokensPerMailbox" in body:
            tokens.settings.tokens_per_mailbox = max(1, int(body["tokensPerMailbox"]))
        if body.get("expireMailbox"):
            tokens.tokens.pop(str(body["expireMailbox"]).lower(), None)
    return JSONResponse({"pageSize": tokens.settings.page_size,
                         "tokensPerMailbox": tokens.settings.tokens_per_mailbox,
                         "tokens": {mailbox: len(cache) for mailbox, cache in tokens.tokens.items()}})


routes = [
    Route("/v1.0/users/{user}/calendarView/delta", calendar_view_delta, methods=["GET"]),
    Route("/_sandbox/delta", delta_control, methods=["GET", "POST"]),
]
