"""Microsoft Bookings under ``/v1.0/solutions/bookingBusinesses``: businesses, staff, services,
customers, custom questions, appointments (CRUD + cancel) and calendarView.

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
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import odata
from .errors import GraphError
from .state import ZERO_GUID, Business, graph_timestamp, outlook_id

HIDDEN_ROLES = {"scheduler", "teamMember"}
# Properties that only GET by id returns (DESIGN §3, serviceNotes/reminders per the resource docs).
LIST_OMITTED = {"serviceNotes": None, "customerNotes": None, "reminders": [], "customers": []}
UPDATABLE = {
    "additionalInformation",
    "customerTimeZone",
    "customers",
    "endDateTime",
    "isLocationOnline",
    "joinWebUrl",
    "maximumAttendeesCount",
    "optOutOfCustomerEmail",
    "postBuffer",
    "preBuffer",
    "price",
    "priceType",
    "reminders",
    "serviceId",
    "serviceLocation",
    "serviceName",
    "serviceNotes",
    "smsNotificationsEnabled",
    "staffMemberIds",
    "startDateTime",
    "anonymousJoinWebUrl",
    "appointmentLabel",
    "isCustomerAllowedToManageBooking",
}


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


# ---- time helpers -------------------------------------------------------------------------------


def parse_dttz(value: Any, name: str) -> datetime:
    """A ``dateTimeTimeZone`` object to an aware UTC datetime."""
    if not isinstance(value, dict) or "dateTime" not in value:
        raise GraphError(400, "BadRequest", f"The property '{name}' must be a dateTimeTimeZone object with a dateTime.")
    tz_name = value.get("timeZone") or "UTC"
    try:
        dt = datetime.fromisoformat(str(value["dateTime"]))
    except ValueError as exc:
        raise GraphError(
            400,
            "BadRequest",
            f"Cannot convert the literal '{value['dateTime']}' to the expected type 'Edm.DateTimeOffset'.",
        ) from exc
    if dt.tzinfo is None:
        try:
            tz = UTC if tz_name.upper() == "UTC" else ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise GraphError(
                400,
                "BadRequest",
                "A valid TimeZone value must be specified. "
                f"The following TimeZone value is not supported: '{tz_name}'.",
            ) from exc
        dt = dt.replace(tzinfo=tz)
    return dt.astimezone(UTC)


def dttz(dt: datetime) -> dict[str, str]:
    # Bookings returns start/end in UTC with seven fractional digits and a "Z".
    return {"dateTime": dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z"), "timeZone": "UTC"}


def iso_duration(delta: timedelta) -> str:
    total = int(delta.total_seconds())
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    out = "P" + (f"{days}D" if days else "")
    time_part = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "") + (f"{seconds}S" if seconds else "")
    return out + ("T" + time_part if time_part else ("" if days else "T0S"))


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


# ---- appointment validation ----------------------------------------------------------------------


# Graph documents no error codes for invalid appointments: "BadRequest" (OData's generic 400) is a guess.
def build_appointment(
    business: Business, body: dict[str, Any], existing: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Validate a create/update body against the business and return the stored appointment."""
    appt = copy.deepcopy(existing) if existing else {}
    unknown = [
        k
        for k in body
        if not k.startswith("@odata")
        and k not in UPDATABLE
        and k not in ("id", "selfServiceAppointmentId", "duration", "filledAttendeesCount")
    ]
    if unknown:
        raise GraphError(
            400,
            "BadRequest",
            f"The property '{unknown[0]}' does not exist on type 'microsoft.graph.bookingAppointment'. "
            "Make sure to only use property names that are defined by the type.",
        )
    for key in UPDATABLE:
        if key in body:
            appt[key] = copy.deepcopy(body[key])
    if existing is None:
        appt["selfServiceAppointmentId"] = str(body.get("selfServiceAppointmentId") or ZERO_GUID)
    service = business.services.get(str(appt.get("serviceId")))
    if service is None:
        raise GraphError(400, "BadRequest", "The serviceId is missing or does not refer to a service of this business.")
    start = parse_dttz(appt.get("startDateTime"), "startDateTime")
    end = parse_dttz(appt.get("endDateTime"), "endDateTime")
    if end <= start:
        raise GraphError(400, "BadRequest", "The appointment's endDateTime must be later than its startDateTime.")
    appt["startDateTime"], appt["endDateTime"] = dttz(start), dttz(end)
    appt["duration"] = iso_duration(end - start)
    appt.setdefault("serviceName", service["displayName"])
    if "serviceName" not in body and existing is None:
        appt["serviceName"] = service["displayName"]
    staff_ids = appt.setdefault("staffMemberIds", [])
    if not isinstance(staff_ids, list) or any(s not in business.staff for s in staff_ids):
        raise GraphError(
            400, "BadRequest", "One or more staffMemberIds do not refer to staff members of this business."
        )
    appt["maximumAttendeesCount"] = int(appt.get("maximumAttendeesCount") or service["maximumAttendeesCount"])
    customers = appt.setdefault("customers", [])
    if not isinstance(customers, list):
        raise GraphError(400, "BadRequest", "The property 'customers' must be a collection.")
    if len(customers) > appt["maximumAttendeesCount"]:
        raise GraphError(
            400, "BadRequest", "The number of customers exceeds the maximumAttendeesCount of the appointment."
        )
    for customer in customers:
        _check_customer(business, service, customer, group=appt["maximumAttendeesCount"] > 1)
    appt["filledAttendeesCount"] = len(customers)
    for key, default in (
        ("additionalInformation", ""),
        ("customerTimeZone", "UTC"),
        ("isLocationOnline", False),
        ("smsNotificationsEnabled", False),
        ("optOutOfCustomerEmail", False),
        ("preBuffer", "PT0S"),
        ("postBuffer", "PT0S"),
        ("priceType", service.get("defaultPriceType", "notSet")),
        ("price", service.get("defaultPrice", 0.0)),
        ("serviceNotes", ""),
        ("reminders", []),
        ("anonymousJoinWebUrl", None),
        ("appointmentLabel", ""),
        ("isCustomerAllowedToManageBooking", False),
        ("serviceLocation", copy.deepcopy(service.get("defaultLocation"))),
    ):
        appt.setdefault(key, default)
    if appt["isLocationOnline"] and not appt.get("joinWebUrl"):
        appt["joinWebUrl"] = f"https://teams.microsoft.com/l/meetup-join/19%3ameeting_{uuid.uuid4().hex}%40thread.v2/0"
    appt.setdefault("joinWebUrl", None)
    now = graph_timestamp()
    appt.setdefault("createdDateTime", now)
    appt["lastUpdatedDateTime"] = now
    appt.setdefault("id", outlook_id())
    return appt


def _check_customer(business: Business, service: dict[str, Any], customer: Any, group: bool) -> None:
    if not isinstance(customer, dict):
        raise GraphError(400, "BadRequest", "Each customer must be a bookingCustomerInformation object.")
    customer.setdefault("@odata.type", "#microsoft.graph.bookingCustomerInformation")
    cid = customer.get("customerId")
    known = business.customers.get(str(cid)) if cid else None
    if group and known is None:
        # Graph: "If maximumAttendeesCount of the service is greater than 1, pass valid customer IDs".
        raise GraphError(400, "BadRequest", "A valid customerId is required for each customer of a group appointment.")
    if cid and known is None:
        raise GraphError(400, "BadRequest", f"The customerId '{cid}' does not refer to a customer of this business.")
    if known:
        customer.setdefault("name", known["displayName"])
        customer.setdefault("emailAddress", known["emailAddress"])
    for key, default in (
        ("name", None),
        ("emailAddress", None),
        ("phone", None),
        ("notes", None),
        ("timeZone", "UTC"),
        ("location", None),
    ):
        customer.setdefault(key, default)
    required = {q["questionId"]: q["isRequired"] for q in service.get("customQuestions", [])}
    answers = customer.setdefault("customQuestionAnswers", [])
    for answer in answers:
        question = business.questions.get(str(answer.get("questionId")))
        if question is None:
            raise GraphError(
                400,
                "BadRequest",
                f"The questionId '{answer.get('questionId')}' does not refer to a custom question of this business.",
            )
        answer.setdefault("question", question["displayName"])
        answer.setdefault("answerInputType", question["answerInputType"])
        answer.setdefault("answerOptions", list(question["answerOptions"]))
        answer.setdefault("isRequired", required.get(question["id"], False))
        answer.setdefault("answer", "")
        answer.setdefault("selectedOptions", [])


# ---- handlers -----------------------------------------------------------------------------------


async def list_businesses(request: Request) -> Response:
    if not _sandbox(request).config.app_can_list_businesses:
        raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
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
