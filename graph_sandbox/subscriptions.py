"""``/v1.0/subscriptions``: create (with the validation handshake of ``notificationUrl`` and
``lifecycleNotificationUrl``), get, list, renew (PATCH), delete and ``reauthorize``.

Only Outlook event subscriptions are supported (``/users/{id|upn}/events`` and
``/users/{id|upn}/calendar/events``), which is all the app uses. Limits as documented: expiration at
most 4,230 minutes ahead, ``clientState`` at most 128 characters, ``lifecycleNotificationUrl`` only at
creation. Each app sees only its own subscriptions.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import odata
from .errors import GraphError
from .state import Subscription, graph_timestamp, now_utc

_RESOURCE = re.compile(r"^/?users(?:/([^/()]+)|\('([^']+)'\))(?:/calendar)?/events/?$", re.IGNORECASE)
# Documented wording: "Subscription expiration can only be 4230 minutes in the future." (code InvalidRequest as
# seen in the wild). The other 400 messages for bad bodies are our own, with the same code.
CHANGE_TYPES = {"created", "updated", "deleted"}
# The resource's permission (Calendars.Read for events) is checked by the gate (permissions.ROUTES).


def _sandbox(request: Request) -> Any:
    return request.app.state.sandbox


def _app_claims(request: Request) -> dict[str, Any]:
    return request.scope.get("sandbox.app", {})


def _own(request: Request) -> Subscription:
    sub = _sandbox(request).state.subscriptions.get(request.path_params["sub_id"])
    if sub is None or sub.created_by_app != _app_claims(request).get("appid"):
        raise GraphError(
            404,
            "ResourceNotFound",
            f"The object was not found. Subscription '{request.path_params['sub_id']}' does not exist.",
        )
    return sub


def _view(request: Request, sub: Subscription) -> dict[str, Any]:
    return {"@odata.context": odata.context(request, "subscriptions/$entity"), **sub.data}


def _check_expiration(request: Request, raw: Any) -> str:
    if not isinstance(raw, str):
        raise GraphError(400, "InvalidRequest", "The property 'expirationDateTime' is required.")
    try:
        when = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise GraphError(
            400, "InvalidRequest", f"Cannot convert the literal '{raw}' to the expected type 'Edm.DateTimeOffset'."
        ) from exc
    when = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    limit = _sandbox(request).config.max_event_subscription_minutes
    now = now_utc()
    if when <= now:
        raise GraphError(400, "InvalidRequest", "Subscription expiration must be in the future.")
    if when > now + timedelta(minutes=limit):
        raise GraphError(400, "InvalidRequest", f"Subscription expiration can only be {limit} minutes in the future.")
    return graph_timestamp(when)


def _check_url(request: Request, name: str, url: Any) -> str:
    if not isinstance(url, str) or not url:
        raise GraphError(400, "InvalidRequest", f"The property '{name}' is required.")
    parts = urlsplit(url)
    allowed = {"https", "http"} if _sandbox(request).config.allow_http_notification_urls else {"https"}
    if parts.scheme.lower() not in allowed or not parts.netloc:
        raise GraphError(400, "InvalidRequest", f"The {name} must be an absolute URL using the HTTPS protocol.")
    return url


async def create(request: Request) -> Response:
    sandbox = _sandbox(request)
    try:
        body = await request.json()
    except ValueError as exc:
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from exc
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "The request body must be a JSON object.")
    claims = _app_claims(request)
    change_type = body.get("changeType")
    if not isinstance(change_type, str) or not change_type.strip():
        raise GraphError(400, "InvalidRequest", "The property 'changeType' is required.")
    kinds = [c.strip() for c in change_type.split(",")]
    bad = [c for c in kinds if c not in CHANGE_TYPES]
    if bad:
        raise GraphError(
            400,
            "InvalidRequest",
            f"'{bad[0]}' is not a valid change type. Valid values are: created, updated, deleted.",
        )
    notification_url = _check_url(request, "notificationUrl", body.get("notificationUrl"))
    lifecycle_url = body.get("lifecycleNotificationUrl")
    if lifecycle_url is not None:
        lifecycle_url = _check_url(request, "lifecycleNotificationUrl", lifecycle_url)
    resource = body.get("resource")
    match = _RESOURCE.match(resource) if isinstance(resource, str) else None
    if match is None:
        raise GraphError(
            400,
            "InvalidRequest",
            f"The resource '{resource}' is not supported by this sandbox: use /users/{{id}}/events.",
        )
    user = sandbox.state.find_user(unquote(match.group(1) or match.group(2)))
    if user is None:
        raise GraphError(404, "ResourceNotFound", f"The resource '{resource}' was not found.")
    expiration = _check_expiration(request, body.get("expirationDateTime"))
    client_state = body.get("clientState")
    if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 128):
        raise GraphError(400, "InvalidRequest", "The clientState can not be longer than 128 characters.")
    if body.get("includeResourceData"):
        raise GraphError(
            400,
            "InvalidRequest",
            "includeResourceData is not supported for this resource without an encryptionCertificate.",
        )
    # The real handshake: both URLs must echo a fresh token, or nothing is created.
    for name, url in (("notificationUrl", notification_url), ("lifecycleNotificationUrl", lifecycle_url)):
        if url:
            error = await sandbox.notifier.validate(url, name)
            if error:
                raise GraphError(400, "ValidationError", error)
    sub_id = str(uuid.uuid4())
    data = {
        "id": sub_id,
        "resource": resource,
        "applicationId": claims.get("appid"),
        "changeType": ",".join(kinds),
        "clientState": client_state,
        "notificationUrl": notification_url,
        "notificationQueryOptions": None,
        "lifecycleNotificationUrl": lifecycle_url,
        "expirationDateTime": expiration,
        "creatorId": claims.get("oid"),
        "includeResourceData": False,
        "latestSupportedTlsVersion": body.get("latestSupportedTlsVersion") or "v1_2",
        "encryptionCertificate": None,
        "encryptionCertificateId": None,
        "notificationUrlAppId": None,
    }
    sub = Subscription(data=data, mailbox=user.user_principal_name.lower(), created_by_app=str(claims.get("appid")))
    sandbox.state.subscriptions[sub_id] = sub
    return JSONResponse(_view(request, sub), status_code=201)


async def list_subscriptions(request: Request) -> Response:
    app_id = _app_claims(request).get("appid")
    items = [s.data for s in _sandbox(request).state.subscriptions.values() if s.created_by_app == app_id]
    return JSONResponse(odata.page(request, items, odata.context(request, "subscriptions")))


async def get_subscription(request: Request) -> Response:
    return JSONResponse(_view(request, _own(request)))


async def update(request: Request) -> Response:
    sub = _own(request)
    try:
        body = await request.json()
    except ValueError as exc:
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from exc
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "The request body must be a JSON object.")
    if "lifecycleNotificationUrl" in body:
        raise GraphError(
            400, "InvalidRequest", "The lifecycleNotificationUrl can only be set when the subscription is created."
        )
    unknown = set(body) - {"expirationDateTime", "notificationUrl", "@odata.type"}
    if unknown:
        raise GraphError(400, "InvalidRequest", f"The property '{sorted(unknown)[0]}' cannot be updated.")
    if "expirationDateTime" in body:
        sub.data["expirationDateTime"] = _check_expiration(request, body["expirationDateTime"])
    if "notificationUrl" in body:
        url = _check_url(request, "notificationUrl", body["notificationUrl"])
        error = await _sandbox(request).notifier.validate(url, "notificationUrl")
        if error:
            raise GraphError(400, "ValidationError", error)
        sub.data["notificationUrl"] = url
    sub.reauthorization_due = None  # renewing also reauthorizes (lifecycle docs)
    return JSONResponse(_view(request, sub))


async def delete(request: Request) -> Response:
    sub = _own(request)
    del _sandbox(request).state.subscriptions[sub.id]
    return Response(status_code=204)


async def reauthorize(request: Request) -> Response:
    sub = _own(request)
    sub.reauthorization_due = None
    return Response(status_code=204)


routes = [
    Route("/v1.0/subscriptions", create, methods=["POST"]),
    Route("/v1.0/subscriptions", list_subscriptions, methods=["GET"]),
    Route("/v1.0/subscriptions/{sub_id}", get_subscription, methods=["GET"]),
    Route("/v1.0/subscriptions/{sub_id}", update, methods=["PATCH"]),
    Route("/v1.0/subscriptions/{sub_id}", delete, methods=["DELETE"]),
    Route("/v1.0/subscriptions/{sub_id}/reauthorize", reauthorize, methods=["POST"]),
]
