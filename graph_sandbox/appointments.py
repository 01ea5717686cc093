"""What makes a valid bookingAppointment: checking a create/update body against its business (service,
staff, customers, custom-question answers, attendee limits) and filling what Bookings computes itself
(duration, service name, attendee count, UTC times, ids, timestamps). Also the dateTimeTimeZone helpers.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tzlocal.windows_tz import win_tz  # CLDR's Windows -> IANA table

from .errors import GraphError
from .state import ZERO_GUID, Business, graph_timestamp, outlook_id

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
            # Graph takes Windows zone ids ("Tokyo Standard Time") as well as IANA names.
            tz = UTC if tz_name.upper() == "UTC" else ZoneInfo(win_tz.get(tz_name, tz_name))
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
    # Bookings returns start/end in UTC with seven fractional digits and a "Z"; a year always has four digits
    # (Edm.DateTimeOffset). Not strftime("%Y"): glibc writes year 1 as "1", which nothing (this sandbox included)
    # reads back as a date, so one such appointment made every listing of its business fail.
    return {"dateTime": dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + ".0000000Z",
            "timeZone": "UTC"}


def iso_duration(delta: timedelta) -> str:
    total = int(delta.total_seconds())
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    out = "P" + (f"{days}D" if days else "")
    time_part = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "") + (f"{seconds}S" if seconds else "")
    return out + ("T" + time_part if time_part else ("" if days else "T0S"))


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
    group = appt["maximumAttendeesCount"] > 1
    if group:
        # The create page: for a service taking several customers, "pass valid customer IDs ... If the customer
        # ID is not valid, that customer won't be included in the appointment object."
        customers[:] = [c for c in customers if isinstance(c, dict) and str(c.get("customerId") or "") in
                        business.customers]
    for customer in customers:
        _check_customer(business, service, customer, group=group)
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
