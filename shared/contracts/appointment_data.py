"""Graph ``bookingAppointment`` JSON -> the connector's ``AppointmentData`` payload (docs/architecture.md).

This module owns the payload contract flows see: the TypedDicts below carry exactly the field names of
the connector definition (``connector/apiDefinition.swagger.json``), and ``to_appointment_data`` is the
only place that fills them. What changed between two states of an appointment (``ChangedFields``,
``Previous``, the content fingerprint), the sample and the upgrade of stored payloads are
``shared.contracts.appointment_changes``; Graph's times and time zones are ``shared.contracts.graph_times``.

The mapping is pure: no I/O, no clock, no logging. The caller (the reconcile worker) reads the appointment
by id and the business's staff, services and custom questions from Graph and passes them in.

Rules
-----
* **1:1 vs group.** An appointment is a group appointment when its ``maximumAttendeesCount`` (or, if the
  appointment lacks it, its service's) is greater than 1, or when it has several customers. 1:1
  appointments fill the top-level customer fields (``CustomerName``, ``CustomerEmail``, ``CustomerPhone``,
  ``CustomerId``, ``CustomerNotes``, ``CustomerTimeZone``, ``CustomerLocation``, ``CustomQuestionAnswers``)
  from their customer *and* list that customer in ``Customers``. Group appointments list every customer,
  with notes and answers, in ``Customers`` only and leave the top-level customer fields empty — as
  Microsoft's connector does (its FAQ: "group bookings use the customers array"), so a flow never
  mistakes the first of many customers for "the" customer.
* **Fill what Microsoft leaves empty**: customer notes, service notes, additional information and the
  custom question answers are filled for 1:1 appointments too; question text, options and "required"
  come from the answer itself, else from the business's custom questions and the service.
  ``CancelReason`` is whatever the caller knows (Graph keeps no cancellation reason); ``CancelledBy`` (ours)
  the signed-in address of whoever cancelled through *Cancel an appointment* (Graph records no canceller),
  else "".
* **Notes are the appointment's own.** ``ServiceNotes`` is the appointment's ``serviceNotes`` ("notes from
  a bookingStaffMember", returned only when the appointment is read by id) and ``AdditionalInfo`` its
  ``additionalInformation``; "" when Graph gives none. The service's notes or description never stand
  in: a flow must not report text as written for this appointment that nobody wrote for it.
* **Times** are ISO 8601 UTC (``2026-11-25T09:00:00Z``), converted from Graph's ``dateTimeTimeZone``
  (UTC, IANA names, and Windows names such as "Tokyo Standard Time" through
  ``graph_times.WINDOWS_TIME_ZONES``).
  ``Duration`` is whole minutes, from start/end, else from Graph's ISO 8601 ``duration``.
* **Ids.** ``AppointmentId`` is Graph's appointment ``id``: unique, the same on the Created, Updated and
  Cancelled events of one appointment, and the id Graph and our cancel route take. ``SelfServiceAppointmentId``
  is Graph's ``selfServiceAppointmentId`` exactly as Graph returns it ("" only when Graph gives none).
  Microsoft documents it as a second tracking id, there when the customer booked on the scheduling page
  rather than a staff member on the customer's behalf
  (https://learn.microsoft.com/en-us/graph/api/resources/bookingappointment); for appointments staff
  created Graph returns the all-zero GUID (the response example of
  https://learn.microsoft.com/en-us/graph/api/bookingappointment-get). ``Id`` (deprecated in the contract:
  "use SelfServiceAppointmentId") has the same value. Neither tells appointments apart; ``AppointmentId``
  does. Payloads stored before ``AppointmentId`` existed are brought up to this by
  ``appointment_changes.upgrade_stored_payload``.
* **What changed** (ours, beyond Microsoft's contract): an Updated event's ``ChangedFields`` names the payload
  fields whose values differ from the previous state (``CHANGE_TRACKED``; staff and customers compared as sets)
  and ``Previous`` holds the earlier times, staff and service, so a flow can tell a reschedule from a note
  edit (``appointment_changes.with_change_details``). Created and Cancelled events, and the actions'
  answers, leave them empty. ``IsTest`` is true only in the sample a flow maker asks for
  (``appointment_changes.sample_appointment_data``).
* **Robustness.** Unknown Graph fields are ignored; missing, null or wrongly typed optional ones become
  ``""`` / ``[]`` / ``0`` / ``False`` — never an exception. (The connector schema declares no nullable
  field, so we never emit ``null``.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from shared.contracts.graph_json import INT32_MAX, as_bool, as_dict, as_dicts, as_int, as_list, as_str, by_id, first_str
from shared.contracts.graph_times import iso_utc, parse_graph_datetime, parse_iso_duration

__all__ = [
    "AppointmentData",
    "CustomQuestion",
    "CustomerData",
    "CustomerLocation",
    "PhysicalAddress",
    "PreviousValues",
    "StaffMember",
    "customer_infos",
    "empty_previous",
    "is_group_appointment",
    "location_data",
    "to_appointment_data",
]


# ---- the contract (names are what flows reference: never rename) ---------------------------------


class PhysicalAddress(TypedDict):
    City: str
    CountryOrRegion: str
    PostalCode: str
    State: str
    Street: str


class CustomerLocation(TypedDict):
    # The contract marks DisplayName optional; we always send it ("" when unknown) so a flow's reference to it
    # never resolves to "property does not exist".
    DisplayName: str
    PhysicalAddress: PhysicalAddress


class CustomQuestion(TypedDict):
    Answer: str
    AnswerOptions: list[str]
    IsRequired: bool
    Question: str
    QuestionID: str
    SelectedOptions: list[int]  # indexes into AnswerOptions


class CustomerData(TypedDict):
    Email: str
    Id: str
    Location: CustomerLocation
    Name: str
    Notes: str
    TimeZone: str
    Answers: list[CustomQuestion]


class StaffMember(TypedDict):
    DisplayName: str
    EmailAddress: str
    Id: str


class PreviousValues(TypedDict):
    """An Updated event's earlier times, staff and service (ours); all empty on other events."""

    Duration: int
    EndTime: str
    ServiceId: str
    ServiceName: str
    StaffMembers: list[StaffMember]
    StartTime: str


class AppointmentData(TypedDict):
    AdditionalInfo: str
    AppointmentId: str  # our addition to Microsoft's schema: Graph's appointment id
    CancelReason: str
    CancelledBy: str  # ours: who cancelled through Cancel an appointment; "" otherwise
    ChangedFields: list[str]  # ours: what an Updated event changed
    IsTest: bool  # ours: true only in a sample sent on request
    CustomerEmail: str
    CustomerId: str
    CustomerLocation: CustomerLocation
    CustomerName: str
    CustomerNotes: str
    CustomerPhone: str
    CustomerTimeZone: str
    CustomQuestionAnswers: list[CustomQuestion]
    Customers: list[CustomerData]
    Duration: int
    EndTime: str
    FilledAttendeesCount: int
    Id: str
    IsSMSNotificationsEnabled: bool
    JoinWebURL: str
    MaxAttendeesCount: int
    Previous: PreviousValues  # ours: an Updated event's earlier values
    SelfServiceAppointmentId: str
    ServiceId: str
    ServiceName: str
    ServiceNotes: str
    StaffMembers: list[StaffMember]
    StartTime: str
    TrackingData: str


# ---- pieces --------------------------------------------------------------------------------------


def location_data(value: Any) -> CustomerLocation:
    """Graph ``location`` (``displayName``, ``address`` = ``physicalAddress``) to the contract's shape."""
    location = as_dict(value)
    address = as_dict(location.get("address"))
    return {
        "DisplayName": as_str(location.get("displayName")),
        "PhysicalAddress": {
            "City": as_str(address.get("city")),
            "CountryOrRegion": as_str(address.get("countryOrRegion")),
            "PostalCode": as_str(address.get("postalCode")),
            "State": as_str(address.get("state")),
            "Street": as_str(address.get("street")),
        },
    }


def _selected_indexes(selected: list[Any], options: list[str], answer: str) -> list[int]:
    """Graph documents ``selectedOptions`` as the chosen option *texts*; the contract wants their indexes.
    Integers are taken as indexes already (some producers write those — our Graph sandbox does). When
    nothing is selected but the free-text answer is exactly one option (radio buttons answered through
    ``answer``), that option."""
    indexes: list[int] = []
    for item in selected:
        index: int | None = None
        if isinstance(item, str) and item in options:
            index = options.index(item)
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(options):
            index = item
        if index is not None and index not in indexes:
            indexes.append(index)
    if not indexes and not selected and answer in options:
        indexes.append(options.index(answer))
    return indexes


def _question(
    answer: Mapping[str, Any], questions: Mapping[str, Mapping[str, Any]], required: Mapping[str, bool]
) -> CustomQuestion:
    qid = as_str(answer.get("questionId"))
    known = questions.get(qid, {})
    # The answer carries the question as it was when the customer answered (Graph: "the properties of the
    # custom question at the time of creation of the appointment"), so its options match its selection;
    # the business's current question only fills what the answer lacks.
    options = [as_str(o) for o in as_list(answer.get("answerOptions")) if isinstance(o, str)] or [
        as_str(o) for o in as_list(known.get("answerOptions")) if isinstance(o, str)
    ]
    text = as_str(answer.get("answer"))
    indexes = _selected_indexes(as_list(answer.get("selectedOptions")), options, text)
    if not text and indexes:
        # Graph fills ``answer`` only for text questions; a flow wants the choice as text too.
        text = ", ".join(options[i] for i in indexes)
    is_required = answer.get("isRequired")
    return {
        "Answer": text,
        "AnswerOptions": options,
        "IsRequired": is_required if isinstance(is_required, bool) else required.get(qid, False),
        "Question": first_str(answer.get("question"), known.get("displayName")),
        "QuestionID": qid,
        "SelectedOptions": indexes,
    }


def _customer(
    info: Mapping[str, Any], questions: Mapping[str, Mapping[str, Any]], required: Mapping[str, bool]
) -> CustomerData:
    return {
        "Email": as_str(info.get("emailAddress")),
        "Id": as_str(info.get("customerId")),
        "Location": location_data(info.get("location")),
        "Name": as_str(info.get("name")),
        "Notes": as_str(info.get("notes")),
        "TimeZone": as_str(info.get("timeZone")),
        "Answers": [_question(a, questions, required) for a in as_dicts(info.get("customQuestionAnswers"))],
    }


def customer_infos(appointment: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The appointment's Graph ``bookingCustomerInformation`` objects, in Graph's order."""
    customers = as_dicts(appointment.get("customers"))
    if customers:
        return customers
    # Older shapes (and Graph's deprecated single-customer properties, still in the JSON) carry the one
    # customer at the top level; use them when the collection is missing.
    legacy = {
        "customerId": appointment.get("customerId"),
        "name": appointment.get("customerName"),
        "emailAddress": appointment.get("customerEmailAddress"),
        "phone": appointment.get("customerPhone"),
        "notes": appointment.get("customerNotes"),
        "location": appointment.get("customerLocation"),
        "timeZone": appointment.get("customerTimeZone"),
    }
    if any(as_str(legacy[k]) for k in ("customerId", "name", "emailAddress", "phone")):
        return [legacy]
    return []


def _staff_member(staff_id: str, staff: Mapping[str, Mapping[str, Any]]) -> StaffMember:
    # An id we cannot resolve (staff member removed since, or the lookup failed) still names the host.
    member = staff.get(staff_id, {})
    return {
        "DisplayName": as_str(member.get("displayName")),
        "EmailAddress": as_str(member.get("emailAddress")),
        "Id": staff_id,
    }


def _max_attendees(appointment: Mapping[str, Any], service: Mapping[str, Any]) -> int:
    value = as_int(appointment.get("maximumAttendeesCount"))
    if not value:
        value = as_int(service.get("maximumAttendeesCount"))
    return value or 0


def is_group_appointment(appointment: Mapping[str, Any], service: Mapping[str, Any] | None = None) -> bool:
    """True when the appointment (or, lacking the field, its service) takes more than one customer, or when
    it has more than one customer whatever the counts say (then there is no "the" customer)."""
    appt = as_dict(appointment)
    return _max_attendees(appt, as_dict(service)) > 1 or len(customer_infos(appt)) > 1


def _duration_minutes(start: datetime | None, end: datetime | None, raw: Any) -> int:
    delta = end - start if start is not None and end is not None else None
    if delta is None or delta < timedelta(0):
        delta = parse_iso_duration(raw)
    if delta is None:
        return 0
    # round(), not floor: Graph's seven-digit fractions can leave 29:59.9999999 for a 30-minute slot.
    return max(0, min(round(delta.total_seconds() / 60), INT32_MAX))


# ---- the mapping -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Business:
    """What the mapping looks up in the business: the appointment's service, staff and questions by id, and
    which of the service's questions it marks required."""

    service: Mapping[str, Any]
    staff: Mapping[str, Mapping[str, Any]]
    questions: Mapping[str, Mapping[str, Any]]
    required: Mapping[str, bool]


def _business(
    service_id: str,
    services: Sequence[Mapping[str, Any]],
    staff: Sequence[Mapping[str, Any]],
    questions: Sequence[Mapping[str, Any]],
) -> _Business:
    service = by_id(as_dicts(list(services or ()))).get(service_id, {})
    required = {
        as_str(q.get("questionId")): q.get("isRequired") is True for q in as_dicts(service.get("customQuestions"))
    }
    return _Business(service, by_id(as_dicts(list(staff or ()))), by_id(as_dicts(list(questions or ()))), required)


def _appointment_fields(
    appt: Mapping[str, Any], business: _Business, customers: list[CustomerData], cancel_reason: str
) -> AppointmentData:
    """Every field from the appointment itself, the top-level customer fields left empty."""
    # v1.0 returns startDateTime/endDateTime; the resource page's JSON sample says start/end. Read both.
    start = parse_graph_datetime(appt.get("startDateTime") or appt.get("start"))
    end = parse_graph_datetime(appt.get("endDateTime") or appt.get("end"))
    filled = as_int(appt.get("filledAttendeesCount"))
    # As Graph returns it: the all-zero GUID for appointments staff created, never replaced by our id.
    self_service_id = as_str(appt.get("selfServiceAppointmentId"))
    # The appointment's own notes (GET by id has them), never the service's: see "Notes" above. Only a
    # string counts (as always: content_fingerprint hashes these, and its v1 values must not move).
    service_notes, additional = appt.get("serviceNotes"), appt.get("additionalInformation")
    staff_ids = (as_str(s) for s in as_list(appt.get("staffMemberIds")))
    return {
        "AdditionalInfo": additional if isinstance(additional, str) else "",
        "AppointmentId": as_str(appt.get("id")),
        "CancelReason": as_str(cancel_reason),
        "CancelledBy": "",
        "ChangedFields": [],
        "CustomerEmail": "",
        "CustomerId": "",
        "CustomerLocation": location_data(None),
        "CustomerName": "",
        "CustomerNotes": "",
        "CustomerPhone": "",
        "CustomerTimeZone": "",
        "CustomQuestionAnswers": [],
        "Customers": customers,
        "Duration": _duration_minutes(start, end, appt.get("duration")),
        "EndTime": iso_utc(end),
        "FilledAttendeesCount": filled if filled is not None else len(customers),
        "Id": self_service_id,
        "IsSMSNotificationsEnabled": as_bool(appt.get("smsNotificationsEnabled")),
        "IsTest": False,
        "JoinWebURL": as_str(appt.get("joinWebUrl")),
        "MaxAttendeesCount": _max_attendees(appt, business.service),
        "Previous": empty_previous(),
        "SelfServiceAppointmentId": self_service_id,
        "ServiceId": as_str(appt.get("serviceId")),
        "ServiceName": first_str(appt.get("serviceName"), business.service.get("displayName")),
        "ServiceNotes": service_notes if isinstance(service_notes, str) else "",
        "StaffMembers": [_staff_member(sid, business.staff) for sid in staff_ids if sid],
        "StartTime": iso_utc(start),
        # Microsoft's "campaign tracking data" has no Graph property we can read; empty, as the contract allows.
        "TrackingData": "",
    }


def _fill_the_customer(
    data: AppointmentData, appt: Mapping[str, Any], one: CustomerData, info: Mapping[str, Any]
) -> None:
    """A 1:1 appointment's top-level customer fields, from its one customer."""
    data.update(
        CustomerEmail=one["Email"],
        CustomerId=one["Id"],
        CustomerLocation=one["Location"],
        CustomerName=one["Name"],
        CustomerNotes=one["Notes"],
        CustomerPhone=as_str(info.get("phone")),
        # The appointment's customerTimeZone is the one Bookings shows the booking in; the customer's
        # own timeZone is the fallback.
        CustomerTimeZone=first_str(appt.get("customerTimeZone"), one["TimeZone"]),
        CustomQuestionAnswers=one["Answers"],
    )


def to_appointment_data(
    appointment: Mapping[str, Any],
    *,
    services: Sequence[Mapping[str, Any]] = (),
    staff: Sequence[Mapping[str, Any]] = (),
    questions: Sequence[Mapping[str, Any]] = (),
    cancel_reason: str = "",
) -> AppointmentData:
    """Map a Graph ``bookingAppointment`` (as ``GET …/appointments/{id}`` returns it) to ``AppointmentData``.

    ``services``, ``staff`` and ``questions`` are the business's ``bookingService``, ``bookingStaffMember``
    and ``bookingCustomQuestion`` objects as Graph lists them (all of them, or only the relevant ones): they
    are looked up by ``serviceId``, ``staffMemberIds`` and ``questionId``. Lists rather than the one service
    so the caller can read each collection once per mailbox and cannot pair an appointment with the wrong
    service. ``cancel_reason`` is the reason we know for a cancellation (Graph keeps none).
    """
    appt = as_dict(appointment)
    business = _business(as_str(appt.get("serviceId")), services, staff, questions)
    infos = customer_infos(appt)
    customers = [_customer(info, business.questions, business.required) for info in infos]
    data = _appointment_fields(appt, business, customers, cancel_reason)
    if customers and not is_group_appointment(appt, business.service):
        _fill_the_customer(data, appt, customers[0], infos[0])
    return data


def empty_previous() -> PreviousValues:
    """``Previous`` of every event but an Updated one."""
    return {"Duration": 0, "EndTime": "", "ServiceId": "", "ServiceName": "", "StaffMembers": [], "StartTime": ""}

