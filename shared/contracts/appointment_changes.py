"""What changed between two states of an appointment, and payloads that are not a mapping of a real one.

This module owns the change detection: ``content_fingerprint`` (the reconcile worker's answer to "did this
appointment change in a way a flow maker would care about?") and ``with_change_details`` (an Updated event's
``ChangedFields`` and ``Previous``); the sample a flow maker asks for (``sample_appointment_data``); and the
upgrade of payloads stored by earlier versions (``upgrade_stored_payload``). The payload contract and the
mapping they build on are ``shared.contracts.appointment_data``. Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from shared.contracts.appointment_data import (
    AppointmentData,
    CustomerData,
    CustomerLocation,
    CustomQuestion,
    StaffMember,
    customer_infos,
    empty_previous,
    location_data,
    to_appointment_data,
)
from shared.contracts.graph_json import as_bool, as_dict, as_dicts, as_int, as_list, as_str
from shared.contracts.graph_times import iso_utc

__all__ = [
    "CHANGE_TRACKED",
    "FINGERPRINT_VERSION",
    "content_fingerprint",
    "is_current_payload",
    "sample_appointment_data",
    "upgrade_stored_payload",
    "with_change_details",
]

# What Graph returns as selfServiceAppointmentId for appointments staff created.
_ZERO_GUID: Final = "00000000-0000-0000-0000-000000000000"


# ---- payloads stored by earlier versions ------------------------------------------------------------


def is_current_payload(payload: Mapping[str, Any]) -> bool:
    """Whether a stored payload (a snapshot's) was mapped by this version: it has ``AppointmentId``, which
    every payload has had since the ids and notes have been Graph's own."""
    return "AppointmentId" in payload


def upgrade_stored_payload(payload: Mapping[str, Any], appointment_id: str) -> dict[str, Any]:
    """A payload stored by an earlier version (a snapshot's, which becomes the Cancelled event), in today's
    contract; a current one comes back unchanged (as a copy).

    An earlier payload lacks ``AppointmentId``: it is the appointment id the row is stored under. And that
    version put the Graph id into ``SelfServiceAppointmentId`` and ``Id`` when Graph's value was the
    all-zero GUID or missing (appointments staff created); such a value (a Graph id, never a GUID) becomes
    the zero GUID, what Graph returns for them. Its ``ServiceNotes``/``AdditionalInfo`` may be the service's
    text standing in for none of the appointment's own; nothing stored tells which, so they stay (the next
    read of the appointment by id replaces the payload)."""
    data = dict(payload)
    # Fields added since (all optional in the contract) get their empty values, so a flow's reference to
    # them resolves on every event.
    for name, empty in (("ChangedFields", []), ("IsTest", False), ("Previous", empty_previous()),
                        ("CancelledBy", "")):
        data.setdefault(name, empty)
    if is_current_payload(data):
        return data
    data["AppointmentId"] = appointment_id
    if appointment_id and data.get("SelfServiceAppointmentId") == appointment_id:
        data["SelfServiceAppointmentId"] = _ZERO_GUID
        if data.get("Id") == appointment_id:
            data["Id"] = _ZERO_GUID
    return data


# ---- what changed, and the sample ----------------------------------------------------------------------

# The payload fields an Updated event's ChangedFields may name: what a flow maker sees of the appointment
# (ids, the cancel reason and our bookkeeping fields are not changes of it).
CHANGE_TRACKED: Final = (
    "StartTime", "EndTime", "Duration", "StaffMembers", "ServiceId", "ServiceName", "Customers", "CustomerName",
    "CustomerEmail", "CustomerPhone", "CustomerNotes", "CustomerTimeZone", "CustomerLocation", "CustomerId",
    "CustomQuestionAnswers", "ServiceNotes", "AdditionalInfo", "JoinWebURL", "MaxAttendeesCount",
    "FilledAttendeesCount", "IsSMSNotificationsEnabled",
)


def _comparable(name: str, value: Any) -> Any:
    """A field's value as compared: staff by id and customers as sets (Graph's order is not meaningful)."""
    if name == "StaffMembers":
        return sorted({as_str(as_dict(m).get("Id")) for m in as_list(value)})
    if isinstance(value, list):
        return sorted(json.dumps(v, sort_keys=True, ensure_ascii=False) for v in value)
    return value


def _staff_member(member: Mapping[str, Any]) -> StaffMember:
    return {"DisplayName": as_str(member.get("DisplayName")), "EmailAddress": as_str(member.get("EmailAddress")),
            "Id": as_str(member.get("Id"))}


def with_change_details(payload: Mapping[str, Any], previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``payload`` as an event carries it: with ``previous`` (the appointment's last state, an Updated event),
    ``ChangedFields`` names the ``CHANGE_TRACKED`` fields that differ and ``Previous`` holds the earlier times,
    staff and service; without it (Created, Cancelled) both are empty."""
    data = dict(payload)
    data["ChangedFields"], data["Previous"] = [], empty_previous()
    if previous is not None:
        before = dict(previous)
        data["ChangedFields"] = [name for name in CHANGE_TRACKED if name in before
                                 and _comparable(name, before.get(name)) != _comparable(name, data.get(name))]
        data["Previous"] = {
            "Duration": as_int(before.get("Duration")) or 0, "EndTime": as_str(before.get("EndTime")),
            "ServiceId": as_str(before.get("ServiceId")), "ServiceName": as_str(before.get("ServiceName")),
            "StaffMembers": [_staff_member(m) for m in as_dicts(before.get("StaffMembers"))],
            "StartTime": as_str(before.get("StartTime")),
        }
    return data


def sample_appointment_data(change_type: str, now: datetime) -> AppointmentData:
    """A made-up appointment, every field filled, ``IsTest`` true: what *Send a test event to this flow* posts,
    so a flow maker sees the dynamic content without booking anything. ``change_type`` (Created, Updated,
    Cancelled) decides whether it carries a cancel reason or change details."""
    start = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    location: CustomerLocation = {"DisplayName": "Customer's home", "PhysicalAddress": {
        "City": "Seattle", "CountryOrRegion": "USA", "PostalCode": "98101", "State": "WA", "Street": "1 Sample St"}}
    answer: CustomQuestion = {"Answer": "English", "AnswerOptions": ["English", "Japanese"], "IsRequired": True,
                              "Question": "Preferred language (sample)", "QuestionID": _ZERO_GUID,
                              "SelectedOptions": [0]}
    staff: StaffMember = {"DisplayName": "Sample staff member", "EmailAddress": "staff@example.invalid",
                          "Id": _ZERO_GUID}
    customer: CustomerData = {"Email": "customer@example.invalid", "Id": _ZERO_GUID, "Location": location,
                              "Name": "Sample customer", "Notes": "A note from the customer (sample)",
                              "TimeZone": "America/Los_Angeles", "Answers": [answer]}
    data: AppointmentData = {
        "AdditionalInfo": "Information for the customer (sample)", "AppointmentId": "sample-appointment-id",
        "CancelReason": "Cancelled for the test (sample)" if change_type == "Cancelled" else "",
        "CancelledBy": "staff@example.invalid" if change_type == "Cancelled" else "",
        "ChangedFields": [], "CustomerEmail": customer["Email"], "CustomerId": customer["Id"],
        "CustomerLocation": location, "CustomerName": customer["Name"], "CustomerNotes": customer["Notes"],
        "CustomerPhone": "+1 206 555 0100", "CustomerTimeZone": customer["TimeZone"],
        "CustomQuestionAnswers": [answer], "Customers": [customer], "Duration": 30,
        "EndTime": iso_utc(start + timedelta(minutes=30)), "FilledAttendeesCount": 1, "Id": _ZERO_GUID,
        "IsSMSNotificationsEnabled": False, "IsTest": True, "JoinWebURL": "", "MaxAttendeesCount": 1,
        "Previous": empty_previous(), "SelfServiceAppointmentId": _ZERO_GUID, "ServiceId": _ZERO_GUID,
        "ServiceName": "Sample service", "ServiceNotes": "A note for the staff (sample)", "StaffMembers": [staff],
        "StartTime": iso_utc(start), "TrackingData": "",
    }
    if change_type == "Updated":
        data["ChangedFields"] = ["StartTime", "EndTime"]
        data["Previous"] = {"Duration": 30, "EndTime": iso_utc(start - timedelta(minutes=30)), "ServiceId": _ZERO_GUID,
                            "ServiceName": "Sample service", "StaffMembers": [staff],
                            "StartTime": iso_utc(start - timedelta(hours=1))}
    return data


# ---- change detection --------------------------------------------------------------------------------

# Snapshots store fingerprints: a new version makes every stored one differ, and each appointment the next
# reconcile reads by id then looks Updated. Change it only with what counts as a change. Ids are not hashed
# (an appointment's never change), and ServiceNotes/AdditionalInfo are hashed as the appointment has them
# (content_fingerprint maps without the business's services, so the service's text never stood in there):
# neither AppointmentId nor dropping the service's notes from payloads changed any v1 fingerprint.
FINGERPRINT_VERSION: Final = "v1"


def content_fingerprint(appointment: Mapping[str, Any]) -> str:
    """A stable hash of what a flow maker would care about in an appointment: times, staff, customers with
    their notes, answers and locations, service, notes, additional information, online link and service
    location. Bookkeeping (``lastUpdatedDateTime``, ``createdDateTime``, ``@odata.*``, etags) and fields no
    flow sees are left out, so a touch that changes nothing visible is a no-op, not an Updated event.

    Normalised so equal content hashes equal: times compared as UTC instants (``…Z`` vs ``+09:00`` vs a
    zone name), null = missing = "", staff and customers as sets (Graph's order is not meaningful), answers
    by question. Compare fingerprints of appointments read the same way (``GET`` by id): listings omit
    customers and notes. The result starts with ``FINGERPRINT_VERSION`` so a future change of this
    function can be told apart from a change of the appointment.
    """
    appt = as_dict(appointment)
    # Reuse the mapping (without lookups: names of staff or questions changing in the business is not a
    # change of this appointment) so "what counts" cannot drift from "what a flow sees".
    data = to_appointment_data(appt)
    customers = [
        {**c, "Answers": sorted(c["Answers"], key=lambda a: (a["QuestionID"], a["Question"], a["Answer"]))}
        for c in data["Customers"]
    ]
    infos = customer_infos(appt)
    customer_phones = sorted(as_str(info.get("phone")) for info in infos)
    # Selections as Graph wrote them: without the business's questions the mapping cannot turn option texts
    # into indexes, and a changed choice must still count.
    selections = sorted(
        [as_str(info.get("customerId")), as_str(a.get("questionId")),
         sorted(as_str(o) for o in as_list(a.get("selectedOptions")))]
        for info in infos
        for a in as_dicts(info.get("customQuestionAnswers"))
    )
    content = {
        "start": data["StartTime"],
        "end": data["EndTime"],
        "duration": data["Duration"],
        "staff": sorted({m["Id"] for m in data["StaffMembers"]}),
        "customers": sorted(customers, key=lambda c: json.dumps(c, sort_keys=True)),
        "customerPhones": customer_phones,
        "selections": selections,
        "customerTimeZone": as_str(appt.get("customerTimeZone")),
        "serviceId": data["ServiceId"],
        "serviceName": data["ServiceName"],
        "serviceNotes": data["ServiceNotes"],
        "additionalInformation": data["AdditionalInfo"],
        "joinWebUrl": data["JoinWebURL"],
        "isLocationOnline": as_bool(appt.get("isLocationOnline")),
        "serviceLocation": location_data(appt.get("serviceLocation")),
        "maximumAttendeesCount": data["MaxAttendeesCount"],
        "smsNotificationsEnabled": data["IsSMSNotificationsEnabled"],
    }
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"{FINGERPRINT_VERSION}:{hashlib.sha256(canonical.encode()).hexdigest()}"
