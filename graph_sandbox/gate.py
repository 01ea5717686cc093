"""The ASGI middleware every request passes through (``/_sandbox`` aside).

In order: the request is logged (``rawPath`` is the path as sent, still percent-encoded); Graph URL
segments are matched case-insensitively; ``/v1.0`` requests need a valid Graph token (401
``InvalidAuthenticationToken``): an app token (``roles``) or a delegated one (``scp``); the route's
documented permissions (``permissions.ROUTES``) decide whether it may (403, or 400 for app tokens on
``/me``); Outlook's per app and mailbox limits (4 concurrent requests, 10,000 in 10 minutes; on unless a
test turns them off) and, when switched on, the subscription write limit answer 429 with ``Retry-After``;
then the first matching fault rule may add latency and/or answer an error instead of the real handler (or,
with ``afterHandler``, replace its answer once it has run: a write stored, its answer lost). Graph
responses get ``request-id`` and ``client-request-id`` headers.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import permissions
from .errors import GraphError, entra_error, graph_error
from .faults import DEFAULT_CODES, FaultRule
from .state import graph_timestamp

if TYPE_CHECKING:
    from .app import Sandbox

_MAILBOX_PATH = re.compile(r"^/v1\.0/(?:solutions/bookingBusinesses|users)/([^/]+)", re.IGNORECASE)
# Graph's URL segments are case-insensitive ("Users/{id}/Events/{id}" in notifications works as is).
_SEGMENTS = {
    s.lower(): s
    for s in (
        "users",
        "events",
        "calendar",
        "calendarView",
        "solutions",
        "bookingBusinesses",
        "staffMembers",
        "services",
        "customers",
        "customQuestions",
        "appointments",
        "cancel",
        "subscriptions",
        "reauthorize",
    )
}


def canonical_path(path: str) -> str:
    return "/".join(_SEGMENTS.get(seg.lower(), seg) for seg in path.split("/"))


def _permission_check(sandbox: Sandbox, request: Request, claims: dict[str, Any]) -> Any:
    """The route's documented permissions against the token's ``roles`` or ``scp`` (``permissions``)."""
    found = permissions.find(request.method, request.url.path)
    if found is None:
        return None  # not a Graph route the sandbox serves: the router answers
    route, params = found

    def is_caller(name: str) -> bool:
        user = sandbox.state.find_user(params.get(name, ""))
        return user is not None and user.id == claims.get("oid")

    refused = permissions.check(route, claims, sandbox.faults.readings, is_caller)
    if refused is None:
        return None
    status, code, message = refused
    return graph_error(request, status, code, message)


def _mailbox_of(sandbox: Sandbox, path: str) -> str | None:
    m = _MAILBOX_PATH.match(path)
    if not m:
        return None
    key = m.group(1)  # already percent-decoded, once, by the server: decoding again would hide double encoding
    user = sandbox.state.find_user(key)
    return (user.user_principal_name if user else key).lower()


def _retry_after_header(seconds: float) -> str:
    # Graph sends whole seconds in Retry-After; never advertise 0 for a throttle.
    return str(max(1, int(seconds + 0.999)))


class GraphGate:
    """ASGI middleware: request log, token and permission check, limits and faults (see module docstring)."""

    def __init__(self, app: ASGIApp, sandbox: Sandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/_sandbox"):
            await self.app(scope, receive, send)
            return
        if path.startswith("/v1.0/"):
            path = scope["path"] = canonical_path(path)
        faults = self.sandbox.faults
        started = time.monotonic()
        scope["sandbox.request_id"] = str(uuid.uuid4())
        request = Request(scope)
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        entry: dict[str, Any] = {
            "time": graph_timestamp(),
            "method": method,
            "path": path,
            "rawPath": scope.get("raw_path", path.encode()).decode("latin-1"),
            "query": scope.get("query_string", b"").decode("latin-1"),
            "requestId": scope["sandbox.request_id"],
            "clientRequestId": request.headers.get("client-request-id"),
            "prefer": request.headers.get("prefer"),
            "body": _loggable(body, request.headers.get("content-type", "")),
            "appId": None,
            "fault": None,
            "throttled": None,
        }
        status_holder = {"status": 0}

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                if path.startswith("/v1.0"):
                    rid, cid = entry["requestId"], entry["clientRequestId"] or scope.get("sandbox.client_request_id")
                    headers = list(message.get("headers", []))
                    names = {h[0].lower() for h in headers}
                    if b"request-id" not in names:
                        headers.append((b"request-id", rid.encode()))
                    if b"client-request-id" not in names and cid:
                        headers.append((b"client-request-id", cid.encode()))
                    message["headers"] = headers
            await send(message)

        mailbox_slot: tuple[str, str] | None = None
        try:
            response = None
            if path.startswith("/v1.0"):
                try:
                    # App tokens and delegated Graph tokens alike: v1.0, aud Graph, signed by the tenant.
                    claims = self.sandbox.entra.verify_app_token(request.headers.get("authorization"))
                    entry["appId"] = claims.get("appid") or claims.get("azp")
                    scope["sandbox.app"] = claims
                except GraphError as err:
                    response = graph_error(request, err.status, err.code, err.message, err.headers)
                if response is None:
                    response = _permission_check(self.sandbox, request, scope.get("sandbox.app", {}))
                if response is None:
                    response, mailbox_slot = self._limits(request, entry)
            if response is None:
                rule = faults.match(method, path)
                if rule is not None:
                    entry["fault"] = rule.id
                    if rule.after_handler:  # the write happens; its answer is lost (afterHandler)
                        await self.app(scope, replay, _discard)
                    if rule.latency_ms:
                        await asyncio.sleep(rule.latency_ms / 1000)
                    if rule.status:
                        response = self._fault_response(request, rule)
                    elif rule.after_handler:
                        response = graph_error(request, 504, "timeout", "The operation timed out.")
            if response is not None:
                await response(scope, replay, send_with_ids)
            else:
                await self.app(scope, replay, send_with_ids)
        finally:
            if mailbox_slot is not None:
                faults.in_flight[mailbox_slot] -= 1
            entry["status"] = status_holder["status"]
            entry["durationMs"] = round((time.monotonic() - started) * 1000, 1)
            faults.log(entry)

    def _limits(self, request: Request, entry: dict[str, Any]) -> tuple[Any, tuple[str, str] | None]:
        faults, cfg = self.sandbox.faults, self.sandbox.config
        app_id = entry["appId"] or "?"
        path, method = request.url.path, request.method
        if (
            faults.limits.subscription_writes
            and method in ("POST", "PATCH", "DELETE")
            and path.lower().startswith("/v1.0/subscriptions")
        ):
            wait = faults.check_write_limit(app_id)
            if wait is not None:
                entry["throttled"] = "subscriptionWrites"
                return (
                    graph_error(
                        request,
                        429,
                        "TooManyRequests",
                        "Too many requests. The application has exceeded the limit of subscription operations.",
                        {"Retry-After": _retry_after_header(wait)},
                    ),
                    None,
                )
        mailbox = _mailbox_of(self.sandbox, path)
        if mailbox is None:
            return None, None
        slot = (app_id, mailbox)
        if faults.limits.mailbox_concurrency and faults.in_flight[slot] >= cfg.mailbox_concurrency_limit:
            entry["throttled"] = "mailboxConcurrency"
            return (
                graph_error(
                    request,
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    {"Retry-After": "1"},
                ),
                None,
            )
        wait = faults.check_mailbox_requests(slot) if faults.limits.mailbox_requests else None
        if wait is not None:
            entry["throttled"] = "mailboxRequests"
            return (
                graph_error(
                    request,
                    429,
                    "ApplicationThrottled",
                    "Application is over its request limit for this mailbox.",  # wording not documented: a guess
                    {"Retry-After": _retry_after_header(wait)},
                ),
                None,
            )
        faults.in_flight[slot] += 1
        return None, slot

    def _fault_response(self, request: Request, rule: FaultRule) -> Any:
        assert rule.status is not None
        code, message = DEFAULT_CODES.get(rule.status, ("generalException", "An unspecified error has occurred."))
        headers = {}
        if rule.retry_after is not None:
            # An explicit value is sent as asked (tests may want 0); Graph itself never sends 0.
            headers["Retry-After"] = str(max(0, math.ceil(float(rule.retry_after))))
        elif rule.status in (429, 503):
            headers["Retry-After"] = "1"
        if not request.url.path.startswith("/v1.0"):
            # The Entra endpoints answer in their own OAuth shape.
            return entra_error(
                rule.status,
                "temporarily_unavailable",
                50196,
                rule.message or "The server is temporarily unavailable.",
                headers,
            )
        return graph_error(request, rule.status, rule.code or code, rule.message or message, headers)


async def _discard(message: Message) -> None:
    """The ASGI send of a handler whose answer a fault replaces (``afterHandler``)."""


def _loggable(body: bytes, content_type: str) -> Any:
    if not body:
        return None
    if "json" in content_type:
        try:
            return json.loads(body)
        except ValueError:
            pass
    if "x-www-form-urlencoded" in content_type:
        return "<form>"  # the token request holds the client secret: never log it
    return body[:2048].decode("utf-8", "replace")
