"""The connector's webhook API: what Power Automate calls when a flow with our trigger is saved or deleted.

Routes (under the ``api`` route prefix; the business is named by its SMTP address, case-insensitive):

- ``POST   v1/bookingBusinesses/{smtp}/webhooks/{trigger}``   register a flow   → 201 + ``Location``
- ``DELETE v1/bookingBusinesses/{smtp}/webhooks/{webhookId}`` remove it          → 204 (also when gone)
- ``GET    v1/bookingBusinesses/{smtp}/webhooks``             the mailbox's flows (administrators)
- ``GET    v1/bookingBusinessesUserAsAdmin``                  businesses the caller administers (dropdown)

POST and DELETE share one route template and one function (``webhook``), dispatched on the method, so
no router has to choose between two templates of the same shape.

Rules of a registration, in the order they are checked (each with its catalogue code):

1. 401 ``Unauthenticated`` — the bearer token (``shared.auth``).
2. 400 ``InvalidRequest`` — the route itself: an SMTP address that is not an address or an unknown trigger
   name. Nothing else can be judged about a business we cannot name.
3. 403 ``NotBookingsAdministrator`` — the caller is not an ``administrator`` on the business's staff list
   (404 ``BookingBusinessNotFound`` when there is no such business). Asked of the directory on every
   request, never cached here: a stale "yes" after a demotion is not acceptable.
4. 400 ``InvalidRequest`` / 413 ``PayloadTooLarge`` — a body we cannot read (no JSON object, no callback
   URL, wrong ``resource`` or ``changeType``). It has to be read before rule 5 can look at its URL.
5. 403 ``NotificationUrlNotAllowed`` — ``shared.callbacks``.
6. 429 ``FlowLimitReached`` — ``shared.registrations``, atomically.

Deleting: the flow's creator may always delete it (even after losing the administrator role, or the
mailbox's quota would leak); anyone else must be an administrator of the business.

The directory of Bookings businesses (who is on which staff list, with which role) is Microsoft Graph:
``BookingsDirectory`` is the small interface this module needs, ``GraphBookingsDirectory`` implements it
over ``shared.graph`` (imported on first use, so importing this module never loads the Graph SDK), and
``get_directory()`` hands it out. Unit tests replace ``get_directory`` with a fake.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict
from urllib.parse import quote, urlsplit

import azure.functions as func

from shared import registrations
from shared.auth import Caller, authenticate
from shared.callbacks import CallbackPolicy, check_notification_url
from shared.errors import ApiError
from shared.registrations import TRIGGERS, FlowRegistry, iso
from shared.settings import get_settings
from shared.store import MAILBOX_TABLE, get_store
from shared.telemetry import redact_url
from shared.web import CORRELATION_HEADER, endpoint, json_response

log = logging.getLogger(__name__)

ROUTE_PREFIX = "api"  # host.json extensions.http.routePrefix
# The route strings function_app.py registers; the connector definition's paths are checked against them.
WEBHOOK_ROUTE = "v1/bookingBusinesses/{smtp}/webhooks/{name}"
WEBHOOKS_ROUTE = "v1/bookingBusinesses/{smtp}/webhooks"
BUSINESSES_ROUTE = "v1/bookingBusinessesUserAsAdmin"

ADMINISTRATOR = "administrator"
MAX_BODY_BYTES = 64 * 1024  # a registration body is a few hundred bytes
RESOURCE = "Appointments"
# Conservative: what Bookings mailboxes look like, and nothing that could break a Table key or a URL
# (/ \ # ? are not allowed in PartitionKey).
_SMTP = re.compile(r"^[a-z0-9](?:[a-z0-9._%+'-]{0,62}[a-z0-9_%+'-])?@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
                   r"[a-z0-9-]{2,63}$")


# --- the directory interface (implemented over shared/graph.py below) -----------------------------------

class AdministeredBusiness(TypedDict):
    displayName: str
    email: str  # the business's SMTP address


class BookingsDirectory(Protocol):
    """What the registration API needs to know about Bookings businesses. Graph implements it.

    Implementations ask Graph with ``Prefer: include-unknown-enum-members`` so ``scheduler`` and
    ``teamMember`` come back as themselves (not ``unknownFutureValue``); match the caller on the staff
    member's ``emailAddress`` case-insensitively. They raise ``ApiError("BookingBusinessNotFound",
    business=...)`` for an unknown business and ``ApiError("DependencyUnavailable", dependency=...)``
    when Graph does not answer. A short-lived cache is allowed only for negative answers and listings;
    a cached "administrator" after a demotion is not.
    """

    async def staff_role(self, business: str, upn: str) -> str | None:
        """The role of ``upn`` on the business's staff list (``administrator``, ``viewer``, ``scheduler``,
        ``teamMember``, ``guest``, ``externalGuest``), or None when the user is not on it."""
        ...

    async def businesses_administered_by(self, upn: str) -> list[AdministeredBusiness]:
        """Every business where ``upn`` is an administrator."""
        ...


# Listing the businesses a user administers costs one staff listing per business; Outlook allows 4
# concurrent requests per app per mailbox, and the dropdown is not worth more parallelism than that.
_STAFF_LISTING_CONCURRENCY = 4


class GraphBookingsDirectory:
    """``BookingsDirectory`` over Microsoft Graph (``shared.graph``): staff lists, read on every call."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph

    async def staff_role(self, business: str, upn: str) -> str | None:
        from shared.graph import GraphError

        try:
            staff = await self.graph.list_staff(business)
        except GraphError as error:
            raise _directory_error(error, business) from None
        for member in staff:
            if str(member.get("emailAddress") or "").strip().lower() == upn:
                return str(member.get("role") or "") or None
        return None

    async def businesses_administered_by(self, upn: str) -> list[AdministeredBusiness]:
        from shared.graph import GraphError

        try:
            businesses = await self.graph.list_businesses()
        except GraphError as error:
            raise _directory_error(error, "*") from None
        limit = asyncio.Semaphore(_STAFF_LISTING_CONCURRENCY)

        async def administered(business: dict[str, Any]) -> AdministeredBusiness | None:
            smtp = str(business.get("id") or business.get("email") or "").lower()
            if not smtp:
                return None
            async with limit:
                try:
                    role = await self.staff_role(smtp, upn)
                except ApiError as error:
                    if error.code == "BookingBusinessNotFound":  # deleted between the two calls
                        return None
                    raise
            if role != ADMINISTRATOR:
                return None
            return {"displayName": str(business.get("displayName") or smtp), "email": smtp}

        found = await asyncio.gather(*(administered(b) for b in businesses))
        return [b for b in found if b is not None]


def _directory_error(error: Any, business: str) -> ApiError:
    if error.status == 404:
        return ApiError("BookingBusinessNotFound", business=business)
    if error.status == 0 or error.throttled or error.status >= 500:
        headers = {"Retry-After": str(int(error.retry_after))} if error.retry_after else None
        return ApiError("DependencyUnavailable", headers=headers, dependency="Microsoft Graph (Bookings)")
    # 401/403 and the like: the app's own Graph access is misconfigured. A 500 whose correlation id leads
    # the administrator to this log line is the honest answer; the flow maker cannot fix it.
    log.error("Graph refused the Bookings directory lookup for %s: %s %s", business, error.status, error.code)
    return ApiError("InternalError")


def get_directory() -> BookingsDirectory:
    """The Bookings directory: Graph, through the event loop's ``shared.graph`` client."""
    from shared.graph import get_graph

    return GraphBookingsDirectory(get_graph())


# --- parsing ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RegistrationRequest:
    notification_url: Any  # judged by shared.callbacks; Any because it comes straight from JSON


def parse_business(raw: str | None) -> str:
    business = (raw or "").strip().lower()
    if len(business) > 254 or not _SMTP.match(business):
        raise ApiError("InvalidRequest", reason="the Bookings business must be named by its SMTP address "
                                                "(e.g. clinic@contoso.com)")
    return business


def parse_trigger(raw: str | None) -> str:
    for trigger in TRIGGERS:
        if (raw or "").lower() == trigger.lower():
            return trigger
    raise ApiError("InvalidRequest", reason=f"unknown trigger; use one of {', '.join(TRIGGERS)}")


def parse_webhook_id(raw: str | None) -> str:
    try:
        return str(uuid.UUID(raw or ""))
    except ValueError:
        raise ApiError("InvalidRequest", reason="the webhook id is not one this API issued") from None


def _field(obj: dict[str, Any], *names: str) -> Any:
    """A field by any of its spellings, case-insensitively (the connector's history has several)."""
    lowered = {key.lower(): value for key, value in obj.items() if isinstance(key, str)}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def parse_registration_body(body: bytes, trigger: str) -> RegistrationRequest:
    """Both spellings: flat ``notificationURL/resource/changeType`` and nested
    ``{"webhook": {"notification_url", "resource", "change_type"}}``."""
    if len(body) > MAX_BODY_BYTES:
        raise ApiError("PayloadTooLarge", limit=MAX_BODY_BYTES)
    try:
        document = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ApiError("InvalidRequest", reason="the body is not JSON") from None
    if not isinstance(document, dict):
        raise ApiError("InvalidRequest", reason="the body must be a JSON object")
    nested = document.get("webhook")
    fields = nested if isinstance(nested, dict) else document
    url = _field(fields, "notificationURL", "notification_url")
    if url is None or url == "":
        raise ApiError("InvalidRequest", reason="the body has no notificationURL")
    resource = _field(fields, "resource")
    if resource is not None and (not isinstance(resource, str) or resource.lower() != RESOURCE.lower()):
        raise ApiError("InvalidRequest", reason=f"resource must be '{RESOURCE}'")
    change_type = _field(fields, "changeType", "change_type")
    expected = TRIGGERS[trigger]
    if change_type is not None:
        types = [change_type] if isinstance(change_type, str) else change_type
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types) \
                or expected.lower() not in {t.lower() for t in types}:
            raise ApiError("InvalidRequest", reason=f"changeType must be ['{expected}'] for {trigger}")
    return RegistrationRequest(notification_url=url)


# --- rules -------------------------------------------------------------------------------------------------

async def require_administrator(business: str, caller: Caller) -> None:
    role = await get_directory().staff_role(business, caller.upn)
    if role != ADMINISTRATOR:
        raise ApiError("NotBookingsAdministrator", business=business, role=role or "none (not on the staff list)")


def _registry() -> FlowRegistry:
    return FlowRegistry(get_store().table(MAILBOX_TABLE), get_settings().max_flows_per_mailbox)


def delete_url(business: str, webhook_id: str) -> str:
    """Absolute URL of a flow's DELETE route: the Location Power Automate will call when the flow goes."""
    base = get_settings().public_base_url
    return f"{base}/{ROUTE_PREFIX}/v1/bookingBusinesses/{quote(business, safe='@')}/webhooks/{webhook_id}"


# --- handlers ----------------------------------------------------------------------------------------------

async def _register(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    caller = await authenticate(req.headers.get("authorization"))
    business = parse_business(req.route_params.get("smtp"))
    trigger = parse_trigger(req.route_params.get("name"))
    await require_administrator(business, caller)
    body = parse_registration_body(req.get_body(), trigger)
    url = await check_notification_url(body.notification_url, CallbackPolicy.from_settings(get_settings()))
    registry = _registry()
    flow = await registry.register(business, trigger, url, created_by_oid=caller.oid, created_by_upn=caller.upn)
    try:
        await registrations.after_flow_registered(business, flow)
    except Exception:
        # Nothing half-made stays behind: without its subscription the flow would never fire.
        try:
            await registry.unregister(business, flow.webhook_id)
        except Exception:
            log.exception("could not roll back flow %s on %s", flow.webhook_id, business,
                          extra={"correlationId": correlation_id})
        raise
    log.info("registered %s for %s on %s, callback %s", flow.webhook_id, trigger, business,
             redact_url(url), extra={"correlationId": correlation_id, "business": business})
    body_out = {"webhookId": flow.webhook_id, "trigger": trigger, "businessSmtp": business,
                "createdDateTime": iso(flow.created)}
    return json_response(body_out, 201, {"Location": delete_url(business, flow.webhook_id)}, correlation_id)


async def _unregister(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    caller = await authenticate(req.headers.get("authorization"))
    business = parse_business(req.route_params.get("smtp"))
    webhook_id = parse_webhook_id(req.route_params.get("name"))
    registry = _registry()
    flow = await registry.get_flow(business, webhook_id)
    if flow is not None:
        if flow.created_by_oid != caller.oid:
            await require_administrator(business, caller)
        result = await registry.unregister(business, webhook_id)
        if result.removed and result.mailbox_now_empty:
            await registrations.after_last_flow_removed(business)
    return func.HttpResponse(status_code=204, headers={CORRELATION_HEADER: correlation_id})


@endpoint
async def webhook(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    """``POST`` registers a flow, ``DELETE`` removes one (route ``WEBHOOK_ROUTE``)."""
    method = req.method.upper()
    if method == "POST":
        return await _register(req, correlation_id)
    if method == "DELETE":
        return await _unregister(req, correlation_id)
    raise ApiError("MethodNotAllowed", method=method, path=urlsplit(req.url).path, allowed="POST, DELETE")


@endpoint
async def list_webhooks(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    """The mailbox's flows for its administrators; callback URLs as host + path only."""
    caller = await authenticate(req.headers.get("authorization"))
    business = parse_business(req.route_params.get("smtp"))
    await require_administrator(business, caller)
    flows = await _registry().list_flows(business)
    return json_response({"businessSmtp": business, "maxFlows": get_settings().max_flows_per_mailbox,
                          "webhooks": [flow.listing() for flow in flows]}, correlation_id=correlation_id)


@endpoint
async def businesses_as_admin(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    """``{"mailboxes": [{"displayName", "email"}]}``: fills the trigger's business dropdown."""
    caller = await authenticate(req.headers.get("authorization"))
    businesses = await get_directory().businesses_administered_by(caller.upn)
    mailboxes = sorted(({"displayName": b["displayName"], "email": b["email"].lower()} for b in businesses),
                       key=lambda b: (b["displayName"].lower(), b["email"]))
    return json_response({"mailboxes": mailboxes}, correlation_id=correlation_id)
