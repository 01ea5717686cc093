"""The connector's webhook API: what Power Automate calls when a flow with our trigger is saved or deleted.

Routes (under the ``api`` route prefix; the business is named by its SMTP address, case-insensitive):

- ``POST   v1/bookingBusinesses/{smtp}/webhooks/{trigger}``   register a flow   → 201 + ``Location``
- ``DELETE v1/bookingBusinesses/{smtp}/webhooks/{webhookId}`` remove it          → 204 (also when gone)
- ``GET    v1/bookingBusinesses/{smtp}/webhooks``             the mailbox's flows (administrators)
- ``GET    v1/bookingBusinessesUserAsAdmin``                  businesses the caller administers (dropdown)

POST and DELETE share one route template and one function (``webhook``), dispatched on the method, so
no router has to choose between two templates of the same shape.

Rules of a registration, in the order they are checked (each with its catalogue code):

1. 401 ``Unauthenticated`` — the bearer token (``shared.adapters.auth``).
2. 400 ``InvalidRequest`` — the route itself: an SMTP address that is not an address or an unknown trigger
   name. Nothing else can be judged about a business we cannot name.
3. 403 ``NotBookingsAdministrator`` — the caller is not an ``administrator`` on the business's staff list
   (404 ``BookingBusinessNotFound`` when there is no such business). Asked of the directory on every
   request, never cached here: a stale "yes" after a demotion is not acceptable.
4. 400 ``InvalidRequest`` / 413 ``PayloadTooLarge`` — a body we cannot read (no JSON object, no callback
   URL, wrong ``resource`` or ``changeType``). It has to be read before rule 5 can look at its URL.
5. 403 ``NotificationUrlNotAllowed`` — ``shared.adapters.callback_urls`` (its ``CallbackUrlRefused``).
6. 400 ``InvalidRequest`` — an optional filter (``serviceId``, ``staffMemberId``: one id, several separated by
   commas, or a list) naming a service or staff member the business does not have (asked of Graph).
7. 429 ``FlowLimitReached`` — ``shared.records.flows``, atomically (503 ``TooManyConcurrentChanges`` when the
   mailbox's flows kept changing under it; also for a deletion).

The modules below judge and raise their own refusals; ``answer_for`` is where they become these answers.

The filters are stored with the flow; fan-out gives a filtered flow only the events of those services and
staff members (``shared.records.flows.Flow.matches``): an event filtered out is no delivery at all.

Deleting: the flow's creator may always delete it (even after losing the administrator role, or the
mailbox's quota would leak); anyone else must be an administrator of the business.

The directory of Bookings businesses (who is on which staff list) is ``shared.services.bookings_directory``;
the first flow of a mailbox creates its Graph subscription and the last one deletes it
(``shared.services.subscriptions``).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import azure.functions as func

from shared.adapters.auth import authenticate
from shared.adapters.callback_urls import CallbackPolicy, CallbackUrlRefused, check_notification_url
from shared.adapters.logs import redact_url
from shared.adapters.monitoring import track_event
from shared.adapters.settings import get_settings
from shared.contracts import events
from shared.contracts.errors import ApiError
from shared.endpoints.access import administered_mailbox, parse_mailbox, require_administrator
from shared.endpoints.http import by_method, empty_response, endpoint, json_object, json_response
from shared.records.flows import OFFSET_RANGES, TRIGGERS, FlowLimitReached, FlowRegistry, TooManyConcurrentChanges
from shared.records.mailbox import iso
from shared.services import bookings_directory, reminders, subscriptions
from shared.services.appointments import Appointments

log = logging.getLogger(__name__)

ROUTE_PREFIX = "api"  # host.json extensions.http.routePrefix
# The route strings function_app.py registers; the connector definition's paths are checked against them.
WEBHOOK_ROUTE = "v1/bookingBusinesses/{smtp}/webhooks/{name}"
WEBHOOKS_ROUTE = "v1/bookingBusinesses/{smtp}/webhooks"
BUSINESSES_ROUTE = "v1/bookingBusinessesUserAsAdmin"

MAX_BODY_BYTES = 64 * 1024  # a registration body is a few hundred bytes
RESOURCE = "Appointments"


# --- parsing ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RegistrationRequest:
    notification_url: Any  # judged by shared.adapters.callback_urls; Any because it comes straight from JSON
    # The trigger's optional filters (ours): only appointments of these services / staff members.
    service_ids: tuple[str, ...] = ()
    staff_member_ids: tuple[str, ...] = ()
    offset_minutes: int | None = None  # the time-relative triggers' offset (OFFSET_RANGES)


MAX_FILTER_IDS = 20


def _offset(value: Any, trigger: str) -> int | None:
    """The offset of a time-relative trigger (minutes; a whole number, or its text), within its range; None for
    the other triggers, which take none. *Has ended* without one: at the end (0)."""
    if trigger not in OFFSET_RANGES:
        return None
    low, high = OFFSET_RANGES[trigger]
    if value is None or value == "":
        if low > 0:
            raise ApiError("InvalidRequest", reason=f"offsetMinutes is required for {trigger} ({low} to {high})")
        value = low
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ApiError("InvalidRequest", reason=f"offsetMinutes must be a whole number from {low} to {high}")
    return value


def _filter_ids(value: Any, name: str) -> tuple[str, ...]:
    """A filter as the connector sends it: one id (a dropdown), several comma-separated, or a list; empty: none."""
    if value is None or value == "":
        return ()
    values = value.split(",") if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ApiError("InvalidRequest", reason=f"{name} must be an id, ids separated by commas, or a list of ids")
    ids = tuple(dict.fromkeys(v.strip() for v in values if v.strip()))
    if len(ids) > MAX_FILTER_IDS or any(len(i) > 100 for i in ids):
        raise ApiError("InvalidRequest", reason=f"{name} takes at most {MAX_FILTER_IDS} ids")
    return ids


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
    document = json_object(body, MAX_BODY_BYTES)
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
    return RegistrationRequest(
        notification_url=url,
        service_ids=_filter_ids(_field(fields, "serviceId", "serviceIds", "service_id"), "serviceId"),
        staff_member_ids=_filter_ids(_field(fields, "staffMemberId", "staffMemberIds", "staff_member_id"),
                                     "staffMemberId"),
        offset_minutes=_offset(_field(fields, "offsetMinutes", "offset_minutes"), trigger))


async def check_filters(mailbox: str, body: RegistrationRequest) -> None:
    """A filter naming a service or staff member the business does not have could never match: refused."""
    if not body.service_ids and not body.staff_member_ids:
        return
    lookups = await Appointments(mailbox).lookups()
    for ids, kind, name in ((body.service_ids, "services", "serviceId"),
                            (body.staff_member_ids, "staff", "staffMemberId")):
        known = {str(item.get("id")) for item in lookups[kind]}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ApiError("InvalidRequest", reason=f"{name} {unknown[0]} is not one of the business's {kind} "
                                                    "(pick it from the list)")


def delete_url(mailbox: str, webhook_id: str) -> str:
    """Absolute URL of a flow's DELETE route: the Location Power Automate will call when the flow goes."""
    base = get_settings().public_base_url
    return f"{base}/{ROUTE_PREFIX}/v1/bookingBusinesses/{quote(mailbox, safe='@')}/webhooks/{webhook_id}"


# --- refusals from below, as answers -----------------------------------------------------------------------

Refusal = CallbackUrlRefused | FlowLimitReached | TooManyConcurrentChanges


def answer_for(refusal: Refusal) -> ApiError:
    """The catalogued answer to a refusal of the URL policy or the flow registry."""
    if isinstance(refusal, CallbackUrlRefused):
        return ApiError("NotificationUrlNotAllowed", reason=refusal.reason)
    if isinstance(refusal, FlowLimitReached):
        return ApiError("FlowLimitReached", business=refusal.mailbox, count=refusal.count, limit=refusal.limit)
    return ApiError("TooManyConcurrentChanges", business=refusal.mailbox)


@contextlib.contextmanager
def _answering_refusals(mailbox: str, trigger: str | None = None) -> Iterator[None]:
    try:
        yield
    except (CallbackUrlRefused, FlowLimitReached, TooManyConcurrentChanges) as refusal:
        error = answer_for(refusal)
        if trigger is not None:  # a registration refused: the maker's flow will not fire, the admin should know
            track_event(events.FLOW_REGISTRATION_REJECTED, logging.WARNING, mailbox=mailbox, trigger=trigger,
                        errorCode=error.code, status=error.status)
        raise error from None


# --- handlers ----------------------------------------------------------------------------------------------

async def _register(req: func.HttpRequest) -> func.HttpResponse:
    caller = await authenticate(req.headers.get("authorization"))
    mailbox = parse_mailbox(req.route_params.get("smtp"))
    trigger = parse_trigger(req.route_params.get("name"))
    await require_administrator(mailbox, caller)
    body = parse_registration_body(req.get_body(), trigger)
    with _answering_refusals(mailbox, trigger):
        url = await check_notification_url(body.notification_url, CallbackPolicy.from_settings(get_settings()))
    await check_filters(mailbox, body)
    registry = FlowRegistry.default()
    with _answering_refusals(mailbox, trigger):
        flow = await registry.register(mailbox, trigger, url, created_by_oid=caller.oid, created_by_upn=caller.upn,
                                       service_ids=body.service_ids, staff_member_ids=body.staff_member_ids,
                                       offset_minutes=body.offset_minutes)
    try:
        await subscriptions.ensure(mailbox)
        await reminders.schedule_flow(flow)  # a time-relative trigger: the appointments already known
    except Exception:
        # Nothing half-made stays behind: without its subscription the flow would never fire.
        try:
            await registry.unregister(mailbox, flow.webhook_id)
        except Exception:
            log.exception("could not roll back flow %s on %s", flow.webhook_id, mailbox)
        raise
    log.info("registered %s for %s on %s, callback %s", flow.webhook_id, trigger, mailbox,
             redact_url(url), extra={"mailbox": mailbox})
    body_out = {"webhookId": flow.webhook_id, "trigger": trigger, "businessSmtp": mailbox,
                "createdDateTime": iso(flow.created)}
    return json_response(body_out, 201, {"Location": delete_url(mailbox, flow.webhook_id)})


async def _unregister(req: func.HttpRequest) -> func.HttpResponse:
    caller = await authenticate(req.headers.get("authorization"))
    mailbox = parse_mailbox(req.route_params.get("smtp"))
    webhook_id = parse_webhook_id(req.route_params.get("name"))
    registry = FlowRegistry.default()
    flow = await registry.get_flow(mailbox, webhook_id)
    if flow is not None:
        if flow.created_by_oid != caller.oid:
            await require_administrator(mailbox, caller)
        with _answering_refusals(mailbox):
            result = await registry.unregister(mailbox, webhook_id)
        if result.removed:
            track_event(events.FLOW_UNREGISTERED, mailbox=mailbox, flowId=webhook_id, trigger=flow.trigger,
                        flowCount=result.remaining, maxFlows=registry.max_flows, reason="deleted")
        if result.removed and result.mailbox_now_empty:
            await subscriptions.release_if_no_flows(mailbox)
    return empty_response(204)


@endpoint
async def webhook(req: func.HttpRequest) -> func.HttpResponse:
    """``POST`` registers a flow, ``DELETE`` removes one (route ``WEBHOOK_ROUTE``)."""
    return await by_method(req, {"POST": _register, "DELETE": _unregister})


@endpoint
async def list_webhooks(req: func.HttpRequest) -> func.HttpResponse:
    """The mailbox's flows for its administrators; callback URLs as host + path only."""
    mailbox, _ = await administered_mailbox(req)
    flows = await FlowRegistry.default().list_flows(mailbox)
    return json_response({"businessSmtp": mailbox, "maxFlows": get_settings().max_flows_per_mailbox,
                          "webhooks": [flow.listing() for flow in flows]})


@endpoint
async def businesses_as_admin(req: func.HttpRequest) -> func.HttpResponse:
    """``{"mailboxes": [{"displayName", "email"}]}``: fills the trigger's business dropdown."""
    caller = await authenticate(req.headers.get("authorization"))
    businesses = await bookings_directory.get_directory().businesses_administered_by(caller)
    mailboxes = sorted(({"displayName": b["displayName"], "email": b["email"].lower()} for b in businesses),
                       key=lambda b: (b["displayName"].lower(), b["email"]))
    return json_response({"mailboxes": mailboxes})
