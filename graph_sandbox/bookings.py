"""Microsoft Bookings under ``/v1.0/solutions/bookingBusinesses``: businesses, staff, services,
customers (list, get, create), custom questions, appointments (CRUD + cancel) and calendarView.

Documented behaviours reproduced: the business id is its SMTP address (matched case-insensitively);
listing businesses returns only ``id`` and ``displayName`` and is not paged; staff roles ``scheduler``
and ``teamMember`` read as ``unknownFutureValue`` unless ``Prefer: include-unknown-enum-members``;
appointment times are returned in UTC; listing/calendarView omit what only GET by id returns
(customers, notes, reminders); calendarView requires ``start`` and ``end``. Every appointment write
is mirrored into the business mailbox's calendar (which is what raises change notifications).
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import odata
from .appointments import build_appointment, parse_dttz
from .errors import GraphError
from .state import Business, graph_timestamp

HIDDEN_ROLES = {"scheduler", "teamMember"}
# Properties that only GET by id returns (DESIGN §3, serviceNotes/reminders per the resource docs).
LIST_OMITTED = {"serviceNotes": None, "customerNotes": None, "reminders": [], "customers": []}


def _sandbox(request: Request) -> Any:
    return request.app.state.sandbox


def _business(request: Request) -> Business:
    smtp = request.path_params["business"]
    business = _sandbox(request).state.business(smtp)
    if business is None:
        # Not documented for Bookings: Exchange's usual not-found code is our best guess.
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return business


def _ctx(request: Request, business: Business, tail: str) -> str:
    from urllib.parse import quote

    return odata.context(request, f"bookingBusinesses('{quote(business.smtp)}')/{tail}", "solutions/")


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise GraphError(
            400,
            "BadRequest",
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid "
            "JSON format.",
        ) from exc
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "The request body must be a JSON object.")
    return body


def _parse_offset(raw: str | None, name: str) -> datetime:
    if not raw:
        raise GraphError(
            400, "BadRequest", f"The query parameter '{name}' is required: calendarView needs both 'start' and 'end'."
        )
    try:
        dt = datetime.fromisoformat(raw.replace(" ", "+"))
    except ValueError as exc:
        raise GraphError(
            400, "BadRequest", f"The value '{raw}' of query parameter '{name}' is not a valid DateTimeOffset."
        ) from exc
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


# ---- views --------------------------------------------------------------------------------------


def staff_view(request: Request, staff: dict[str, Any]) -> dict[str, Any]:
    out = dict(staff)
    if out.get("role") in HIDDEN_ROLES and not odata.wants_unknown_enum_members(request):
        out["role"] = "unknownFutureValue"
    return out


def appointment_view(business: Business, appt: dict[str, Any], full: bool) -> dict[str, Any]:
    out = copy.deepcopy(appt)
    one_to_one = (out.get("maximumAttendeesCount") or 1) <= 1
    first = out["customers"][0] if out.get("customers") else None
    # Single-customer properties the v1.0 model still has (deprecated in favour of ``customers``).
    out["customerName"] = first.get("name") if first and one_to_one else None
    out["customerEmailAddress"] = first.get("emailAddress") if first and one_to_one else None
    out["customerPhone"] = first.get("phone") if first and one_to_one else None
    out["customerNotes"] = first.get("notes") if first and one_to_one else None
    if not full:
        out.update(copy.deepcopy(LIST_OMITTED))
    return out


def _with_prefer(request: Request, body: dict[str, Any]) -> JSONResponse:
    headers = (
        {"Preference-Applied": "include-unknown-enum-members"} if odata.wants_unknown_enum_members(request) else {}
    )
    return JSONResponse(body, headers=headers)


# ---- handlers -----------------------------------------------------------------------------------


async def list_businesses(request: Request) -> Response:
    # Who may list (app-only only under one reading of the docs) is the gate's permission check.
    query = (request.query_params.get("query") or "").lower()
    items = [
        {"id": b.smtp, "displayName": b.data["displayName"]}
        for b in _sandbox(request).state.businesses.values()
        if not query or query in b.data["displayName"].lower() or query in b.smtp.lower()
    ]
    # Documented: at most 500, and the listing is not paged.
    return JSONResponse(
        {"@odata.context": odata.context(request, "bookingBusinesses", "solutions/"), "value": items[:500]}
    )


async def get_business(request: Request) -> Response:
    business = _business(request)
    return JSONResponse(
        {"@odata.context": odata.context(request, "bookingBusinesses/$entity", "solutions/"), **business.data}
    )


def _collection(attr: str, tail: str, view: Any = None) -> Any:
    async def handler(request: Request) -> Response:
        business = _business(request)
        items = [view(request, i) if view else i for i in getattr(business, attr).values()]
        return _with_prefer(request, odata.page(request, items, _ctx(request, business, tail)))

    return handler


def _item(attr: str, tail: str, view: Any = None) -> Any:
    async def handler(request: Request) -> Response:
        business = _business(request)
        item = getattr(business, attr).get(request.path_params["item_id"])
        if item is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        body = {"@odata.context": _ctx(request, business, f"{tail}/$entity"), **(view(request, item) if view else item)}
        return _with_prefer(request, body)

    return handler


def _sorted(business: Business) -> list[dict[str, Any]]:
    return sorted(business.appointments.values(), key=lambda a: (a["startDateTime"]["dateTime"], a["id"]))


_CUSTOMER_FIELDS = {"displayName", "emailAddress", "addresses", "phones"}


async def create_customer(request: Request) -> Response:
    """``POST …/customers`` (bookingbusiness-post-customers): a bookingCustomer; the id is Bookings'."""
    business = _business(request)
    body = await _json_body(request)
    unknown = [k for k in body if not k.startswith("@odata") and k not in _CUSTOMER_FIELDS]
    if unknown:
        raise GraphError(400, "BadRequest", f"The property '{unknown[0]}' does not exist on type "
                                            "'microsoft.graph.bookingCustomer'.")
    if not isinstance(body.get("displayName"), str) or not body["displayName"].strip():
        raise GraphError(400, "BadRequest", "The customer's displayName is required.")
    now = graph_timestamp()
    customer = {"@odata.type": "#microsoft.graph.bookingCustomer", "id": str(uuid.uuid4()),
                "displayName": body["displayName"], "emailAddress": body.get("emailAddress"),
                "addresses": list(body.get("addresses") or []), "phones": list(body.get("phones") or []),
                "createdDateTime": now, "lastUpdatedDateTime": now}
    business.customers[customer["id"]] = customer
    return JSONResponse({"@odata.context": _ctx(request, business, "customers/$entity"), **customer}, status_code=201)


async def list_appointments(request: Request) -> Response:
    business = _business(request)
    items = [appointment_view(business, a, full=False) for a in _sorted(business)]
    return JSONResponse(odata.page(request, items, _ctx(request, business, "appointments")))


async def calendar_view(request: Request) -> Response:
    business = _business(request)
    start = _parse_offset(request.query_params.get("start"), "start")
    end = _parse_offset(request.query_params.get("end"), "end")
    items = [
        appointment_view(business, a, full=False)
        for a in _sorted(business)
        if parse_dttz(a["startDateTime"], "startDateTime") < end and parse_dttz(a["endDateTime"], "endDateTime") > start
    ]
    return JSONResponse(odata.page(request, items, _ctx(request, business, "calendarView")))


def _appointment(request: Request, business: Business) -> dict[str, Any]:
    appt = business.appointments.get(request.path_params["appointment_id"])
    if appt is None:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return appt


async def get_appointment(request: Request) -> Response:
    business = _business(request)
    appt = _appointment(request, business)
    return JSONResponse(
        {
            "@odata.context": _ctx(request, business, "appointments/$entity"),
            **appointment_view(business, appt, full=True),
        }
    )


async def create_appointment(request: Request) -> Response:
    business = _business(request)
    appt = build_appointment(business, await _json_body(request))
    sandbox = _sandbox(request)
    business.appointments[appt["id"]] = appt
    sandbox.calendars.mirror_appointment(business, appt)
    body = {
        "@odata.context": _ctx(request, business, "appointments/$entity"),
        **appointment_view(business, appt, full=True),
    }
    return JSONResponse(
        body, status_code=201, headers={"Location": f"{sandbox.base_url}{request.url.path}/{appt['id']}"}
    )


async def update_appointment(request: Request) -> Response:
    business = _business(request)
    existing = _appointment(request, business)
    appt = build_appointment(business, await _json_body(request), existing)
    business.appointments[appt["id"]] = appt
    _sandbox(request).calendars.mirror_appointment(business, appt)
    return Response(status_code=204)


async def delete_appointment(request: Request) -> Response:
    business = _business(request)
    appt = _appointment(request, business)
    del business.appointments[appt["id"]]
    _sandbox(request).calendars.remove_appointment(business, appt["id"])
    return Response(status_code=204)


async def cancel_appointment(request: Request) -> Response:
    business = _business(request)
    appt = _appointment(request, business)
    body = await _json_body(request)
    message = body.get("cancellationMessage")
    if not isinstance(message, str):
        raise GraphError(400, "BadRequest", "The parameter 'cancellationMessage' is required and must be a string.")
    sandbox = _sandbox(request)
    # A cancelled appointment disappears: Graph keeps no cancellation reason we could read back.
    del business.appointments[appt["id"]]
    sandbox.state.cancellations.append(
        {
            "businessId": business.smtp,
            "appointmentId": appt["id"],
            "cancellationMessage": message,
            "cancelledDateTime": graph_timestamp(),
            "appointment": appt,
        }
    )
    sandbox.calendars.remove_appointment(business, appt["id"])
    return Response(status_code=204)


_B = "/v1.0/solutions/bookingBusinesses/{business}"
routes = [
    Route("/v1.0/solutions/bookingBusinesses", list_businesses, methods=["GET"]),
    Route(_B, get_business, methods=["GET"]),
    Route(_B + "/staffMembers", _collection("staff", "staffMembers", staff_view), methods=["GET"]),
    Route(_B + "/staffMembers/{item_id}", _item("staff", "staffMembers", staff_view), methods=["GET"]),
    Route(_B + "/services", _collection("services", "services"), methods=["GET"]),
    Route(_B + "/services/{item_id}", _item("services", "services"), methods=["GET"]),
    Route(_B + "/customers", _collection("customers", "customers"), methods=["GET"]),
    Route(_B + "/customers", create_customer, methods=["POST"]),
    Route(_B + "/customers/{item_id}", _item("customers", "customers"), methods=["GET"]),
    Route(_B + "/customQuestions", _collection("questions", "customQuestions"), methods=["GET"]),
    Route(_B + "/customQuestions/{item_id}", _item("questions", "customQuestions"), methods=["GET"]),
    Route(_B + "/appointments", list_appointments, methods=["GET"]),
    Route(_B + "/appointments", create_appointment, methods=["POST"]),
    Route(_B + "/calendarView", calendar_view, methods=["GET"]),
    Route(_B + "/appointments/{appointment_id}", get_appointment, methods=["GET"]),
    Route(_B + "/appointments/{appointment_id}", update_appointment, methods=["PATCH"]),
    Route(_B + "/appointments/{appointment_id}", delete_appointment, methods=["DELETE"]),
    Route(_B + "/appointments/{appointment_id}/cancel", cancel_appointment, methods=["POST"]),
]
