"""``/_sandbox/*``: the test and demo controls. Not part of Graph; no token needed (loopback only).

See README.md in this package for every endpoint with its request and response shape.
"""

from __future__ import annotations

import fnmatch
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import demo
from .config import DEFAULT_CLIENT_ID
from .entra import user_token
from .faults import FaultRule
from .permissions import table as permission_table
from .state import Subscription, graph_timestamp, now_utc

LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")


def _sb(request: Request) -> Any:
    return request.app.state.sandbox


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def health(request: Request) -> Response:
    sb = _sb(request)
    return JSONResponse({"status": "ok", "baseUrl": sb.base_url, "tenantId": sb.config.tenant_id,
                         "entraUrl": sb.entra_url, "caFile": sb.ca_file})


async def reset(request: Request) -> Response:
    _sb(request).reset_state()
    return JSONResponse({"status": "reset"})


async def seed(request: Request) -> Response:
    return JSONResponse(demo.seed(_sb(request)))


async def users(request: Request) -> Response:
    return JSONResponse({"value": demo.summary(_sb(request))["users"]})


def _new_user(sb: Any, body: Any) -> dict[str, Any]:
    upn = body.get("upn") if isinstance(body, dict) else None
    if not isinstance(upn, str) or "@" not in upn:
        raise ValueError("upn must be an email-like user principal name")
    mail, proxies = body.get("mail") or "", body.get("proxyAddresses") or []
    if not isinstance(mail, str) or not isinstance(proxies, list) or not all(isinstance(p, str) for p in proxies):
        raise ValueError("mail must be a string and proxyAddresses a list of strings")
    user = sb.state.add_user(upn, str(body.get("displayName") or upn.split("@")[0]), mail=mail,
                             proxy_addresses=proxies, user_type=str(body.get("userType") or "Member"))
    return {"upn": user.user_principal_name, "id": user.id, "displayName": user.display_name, "mail": user.mail,
            "proxyAddresses": user.proxy_addresses, "userType": user.user_type}


async def add_user(request: Request) -> Response:
    """One user ``{"upn", "displayName"?, "mail"?, "proxyAddresses"?, "userType"?}``, or many at once
    ``{"value": [user, …]}``."""
    try:
        body = await _body(request)
        if isinstance(body.get("value"), list):
            return JSONResponse({"value": [_new_user(_sb(request), u) for u in body["value"]]}, status_code=201)
        return JSONResponse(_new_user(_sb(request), body), status_code=201)
    except ValueError as exc:
        return _bad(str(exc))


async def add_business(request: Request) -> Response:
    """A business cloned from another (default the demo clinic): Graph has no API to create businesses, and
    benchmarks need many mailboxes administered by the demo's admin."""
    try:
        body = await _body(request)
    except ValueError as exc:
        return _bad(str(exc))
    sb = _sb(request)
    smtp, source = body.get("smtp"), body.get("copyOf", "clinic@contoso.test")
    if not isinstance(smtp, str) or "@" not in smtp:
        return _bad("smtp must be an email-like SMTP address")
    if not isinstance(source, str) or sb.state.business(source) is None:
        return _bad("copyOf must name an existing business", 404)
    if sb.state.business(smtp) is not None:
        return _bad("a business with this smtp exists", 409)
    name = body.get("displayName")
    clone = demo.clone_business(sb, source, smtp, name if isinstance(name, str) and name else None)
    return JSONResponse({"id": clone.smtp, "displayName": clone.data["displayName"], "staff": len(clone.staff),
                         "services": len(clone.services)}, status_code=201)


def _seeded_subscription(sb: Any, item: Any) -> Subscription:
    if not isinstance(item, dict):
        raise ValueError("each subscription must be a JSON object")
    user = sb.state.find_user(str(item.get("mailbox", "")))
    if user is None:
        raise LookupError(f"no such mailbox: {item.get('mailbox')!r}")
    url = item.get("notificationUrl")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError("notificationUrl must be an absolute URL")
    minutes = sb.config.max_event_subscription_minutes
    expiration = item.get("expirationDateTime") or graph_timestamp(now_utc() + timedelta(minutes=minutes - 1))
    app_id = str(item.get("appId") or DEFAULT_CLIENT_ID)
    data = {
        "id": str(uuid.uuid4()),
        "resource": f"/users/{user.user_principal_name}/events",
        "applicationId": app_id,
        "changeType": str(item.get("changeType") or "created,updated,deleted"),
        "clientState": item.get("clientState"),
        "notificationUrl": url,
        "notificationQueryOptions": None,
        "lifecycleNotificationUrl": item.get("lifecycleNotificationUrl"),
        "expirationDateTime": str(expiration),
        "creatorId": None,
        "includeResourceData": False,
        "latestSupportedTlsVersion": "v1_2",
        "encryptionCertificate": None,
        "encryptionCertificateId": None,
        "notificationUrlAppId": None,
    }
    return Subscription(data=data, mailbox=user.user_principal_name.lower(), created_by_app=app_id)


async def seed_subscriptions(request: Request) -> Response:
    """Subscriptions put in place without the validation handshake and outside the write limit: seeding
    10,000 through Graph's own API would take 400 s of throttling before a benchmark even starts.
    All or nothing: a bad item adds none."""
    sb = _sb(request)
    try:
        body = await _body(request)
        items = body.get("value")
        if not isinstance(items, list):
            raise ValueError('expected {"value": [subscription, …]}')
        subs = [_seeded_subscription(sb, item) for item in items]
    except ValueError as exc:
        return _bad(str(exc))
    except LookupError as exc:
        return _bad(str(exc), 404)
    for sub in subs:
        sb.state.subscriptions[sub.id] = sub
    return JSONResponse({"value": [{"id": s.id, "mailbox": s.mailbox, "expirationDateTime": s.data[
        "expirationDateTime"]} for s in subs]}, status_code=201)


async def faults(request: Request) -> Response:
    sb = _sb(request)
    if request.method == "GET":
        return JSONResponse({"value": [r.to_json() for r in sb.faults.rules]})
    if request.method == "DELETE":
        sb.faults.rules.clear()
        return Response(status_code=204)
    try:
        rule = FaultRule.from_json(await _body(request))
    except (ValueError, TypeError) as exc:
        return _bad(str(exc))
    return JSONResponse(sb.faults.add(rule).to_json(), status_code=201)


async def delete_fault(request: Request) -> Response:
    rules = _sb(request).faults.rules
    before = len(rules)
    rules[:] = [r for r in rules if r.id != request.path_params["fault_id"]]
    return Response(status_code=204 if len(rules) < before else 404)


async def _switches(request: Request) -> dict[str, Any] | Response:
    """A switch endpoint's POST body ({} for a GET), or the 400 answer for a bad one."""
    if request.method != "POST":
        return {}
    try:
        return await _body(request)
    except ValueError as exc:
        return _bad(str(exc))


async def limits(request: Request) -> Response:
    sb = _sb(request)
    body = await _switches(request)
    if isinstance(body, Response):
        return body
    if "subscriptionWrites" in body:
        sb.faults.limits.subscription_writes = bool(body["subscriptionWrites"])
    if "mailboxConcurrency" in body:
        sb.faults.limits.mailbox_concurrency = bool(body["mailboxConcurrency"])
    if "mailboxRequests" in body:
        sb.faults.limits.mailbox_requests = bool(body["mailboxRequests"])
    cfg = sb.config
    return JSONResponse(
        {
            "subscriptionWrites": sb.faults.limits.subscription_writes,
            "mailboxConcurrency": sb.faults.limits.mailbox_concurrency,
            "subscriptionWriteLimit": cfg.subscription_write_limit,
            "subscriptionWriteWindowSeconds": cfg.subscription_write_window_s,
            "mailboxConcurrencyLimit": cfg.mailbox_concurrency_limit,
            "mailboxRequests": sb.faults.limits.mailbox_requests,
            "mailboxRequestLimit": cfg.mailbox_request_limit,
            "mailboxRequestWindowSeconds": cfg.mailbox_request_window_s,
        }
    )


async def permissions_switch(request: Request) -> Response:
    """The permission table the gate enforces, and which reading it follows where Microsoft's pages disagree:
    ``{"appCanListBusinesses": bool}`` (POST; reset restores the configured value)."""
    sb = _sb(request)
    body = await _switches(request)
    if isinstance(body, Response):
        return body
    if "appCanListBusinesses" in body:
        sb.faults.readings = replace(sb.faults.readings, app_can_list_businesses=bool(body["appCanListBusinesses"]))
    readings = sb.faults.readings
    return JSONResponse({"appCanListBusinesses": readings.app_can_list_businesses,
                         "routes": permission_table(readings)})


def _filter(entries: list[dict[str, Any]], request: Request, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    q = request.query_params
    since = int(q.get("since", "0") or 0)
    out = [e for e in entries if e["seq"] > since]
    for key in keys:
        if key in q:
            if key == "path":
                out = [e for e in out if fnmatch.fnmatch(e["path"].lower(), q[key].lower())]
            else:
                out = [e for e in out if str(e.get(key)).lower() == q[key].lower()]
    return out


async def request_log(request: Request) -> Response:
    sb = _sb(request)
    if request.method == "DELETE":
        sb.faults.request_log.clear()
        return Response(status_code=204)
    return JSONResponse({"value": _filter(sb.faults.request_log, request, ("method", "path", "status"))})


async def notification_log(request: Request) -> Response:
    sb = _sb(request)
    if request.method == "DELETE":
        sb.notifier.log.clear()
        return Response(status_code=204)
    entries = _filter(sb.notifier.log, request, ("kind", "outcome", "url"))
    return JSONResponse({"value": entries, "pending": sb.notifier.busy})


async def endpoints(request: Request) -> Response:
    sb = _sb(request)
    return JSONResponse({url: h.to_json(sb.config) for url, h in sb.notifier.endpoints.items()})


async def all_subscriptions(request: Request) -> Response:
    subs = _sb(request).state.subscriptions.values()
    return JSONResponse(
        {
            "value": [
                {
                    **s.data,
                    "mailbox": s.mailbox,
                    "reauthorizationDue": graph_timestamp(s.reauthorization_due) if s.reauthorization_due else None,
                }
                for s in subs
            ]
        }
    )


async def lifecycle(request: Request) -> Response:
    sb = _sb(request)
    sub = sb.state.subscriptions.get(request.path_params["sub_id"])
    if sub is None:
        return _bad("no such subscription", 404)
    try:
        body = await _body(request)
    except ValueError as exc:
        return _bad(str(exc))
    event = body.get("event")
    if event not in LIFECYCLE_EVENTS:
        return _bad(f"event must be one of {', '.join(LIFECYCLE_EVENTS)}")
    if event == "reauthorizationRequired":
        grace = float(body.get("graceSeconds", sb.config.reauthorization_grace_s))
        sub.reauthorization_due = now_utc() + timedelta(seconds=grace)
    elif event == "subscriptionRemoved":
        del sb.state.subscriptions[sub.id]
    sent = sb.notifier.lifecycle(sub, event)
    return JSONResponse({"subscriptionId": sub.id, "event": event, "sent": sent}, status_code=202)


async def expire(request: Request) -> Response:
    """Let a subscription run out now (the sweep then removes it and sends subscriptionRemoved)."""
    sb = _sb(request)
    sub = sb.state.subscriptions.get(request.path_params["sub_id"])
    if sub is None:
        return _bad("no such subscription", 404)
    sub.data["expirationDateTime"] = graph_timestamp(now_utc())
    return JSONResponse({"subscriptionId": sub.id, "expirationDateTime": sub.data["expirationDateTime"]})


async def cancellations(request: Request) -> Response:
    return JSONResponse({"value": _sb(request).state.cancellations})


async def mailbox_event(request: Request) -> Response:
    sb = _sb(request)
    user = sb.state.find_user(request.path_params["mailbox"])
    if user is None:
        return _bad("no such mailbox", 404)
    if request.method == "DELETE":
        ok = sb.calendars.delete_event(user.user_principal_name, request.path_params.get("event_id", ""))
        return Response(status_code=204 if ok else 404)
    try:
        body = await _body(request)
    except ValueError as exc:
        return _bad(str(exc))
    event = sb.calendars.add_plain_event(
        user.user_principal_name,
        str(body.get("subject", "Staff meeting")),
        str(body.get("start", "2030-01-01T09:00:00.0000000")),
        str(body.get("end", "2030-01-01T10:00:00.0000000")),
    )
    return JSONResponse(event, status_code=201)


async def rotate_keys(request: Request) -> Response:
    try:
        body = await _body(request)
    except ValueError as exc:
        return _bad(str(exc))
    entra = _sb(request).entra
    key = entra.rotate(keep_old=bool(body.get("keepOld", True)))
    return JSONResponse({"kid": key.kid, "published": [k.kid for k in entra.published()]})


async def app_roles(request: Request) -> Response:
    sb = _sb(request)
    app = sb.config.app(request.path_params["client_id"])
    if app is None:
        return _bad("no such app", 404)
    try:
        body = await _body(request)
    except ValueError as exc:
        return _bad(str(exc))
    roles = body.get("roles")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        return _bad("roles must be a list of strings")
    app.roles = roles
    return JSONResponse({"clientId": app.client_id, "roles": app.roles})


routes = [
    Route("/_sandbox/health", health, methods=["GET"]),
    Route("/_sandbox/reset", reset, methods=["POST"]),
    Route("/_sandbox/seed", seed, methods=["POST"]),
    Route("/_sandbox/users", users, methods=["GET"]),
    Route("/_sandbox/users", add_user, methods=["POST"]),
    Route("/_sandbox/businesses", add_business, methods=["POST"]),
    Route("/_sandbox/tokens/user", user_token, methods=["POST"]),
    Route("/_sandbox/faults", faults, methods=["GET", "POST", "DELETE"]),
    Route("/_sandbox/faults/{fault_id}", delete_fault, methods=["DELETE"]),
    Route("/_sandbox/limits", limits, methods=["GET", "POST"]),
    Route("/_sandbox/permissions", permissions_switch, methods=["GET", "POST"]),
    Route("/_sandbox/requests", request_log, methods=["GET", "DELETE"]),
    Route("/_sandbox/notifications", notification_log, methods=["GET", "DELETE"]),
    Route("/_sandbox/subscriptions", all_subscriptions, methods=["GET"]),
    Route("/_sandbox/subscriptions", seed_subscriptions, methods=["POST"]),
    Route("/_sandbox/endpoints", endpoints, methods=["GET"]),
    Route("/_sandbox/subscriptions/{sub_id}/lifecycle", lifecycle, methods=["POST"]),
    Route("/_sandbox/subscriptions/{sub_id}/expire", expire, methods=["POST"]),
    Route("/_sandbox/cancellations", cancellations, methods=["GET"]),
    Route("/_sandbox/mailboxes/{mailbox}/events", mailbox_event, methods=["POST"]),
    Route("/_sandbox/mailboxes/{mailbox}/events/{event_id}", mailbox_event, methods=["DELETE"]),
    Route("/_sandbox/apps/{client_id}/roles", app_roles, methods=["POST"]),
    Route("/_sandbox/keys/rotate", rotate_keys, methods=["POST"]),
]
