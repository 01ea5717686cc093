"""Hand-written Graph JSON, shaped as ``GET /solutions/bookingBusinesses/{id}/appointments/{id}`` and the
business's list endpoints return it (camelCase, ``dateTimeTimeZone``, ISO 8601 durations, ``location``).

Builders take what a test varies and fill the rest with realistic values; ``appointment`` returns a
1:1 appointment unless told otherwise. Shapes follow the Graph v1.0 resource pages (bookingAppointment,
bookingCustomerInformation, bookingQuestionAnswer — whose ``selectedOptions`` are option *texts* —,
bookingStaffMember, bookingService, bookingCustomQuestion).
"""

from __future__ import annotations

import copy
from typing import Any

ZERO_GUID = "00000000-0000-0000-0000-000000000000"
STAFF_ADA = "4c5f0c1e-0000-4000-8000-00000000000a"
STAFF_BEN = "4c5f0c1e-0000-4000-8000-00000000000b"
Q_REASON = "9a1e0000-0000-4000-8000-000000000001"
Q_LANGUAGE = "9a1e0000-0000-4000-8000-000000000002"
SERVICE_CONSULT = "5e7a0000-0000-4000-8000-000000000001"
SERVICE_CLASS = "5e7a0000-0000-4000-8000-000000000002"


def dttz(date_time: str, zone: str = "UTC") -> dict[str, str]:
    return {"@odata.type": "#microsoft.graph.dateTimeTimeZone", "dateTime": date_time, "timeZone": zone}


def staff_member(staff_id: str, name: str, email: str, role: str = "administrator") -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.bookingStaffMember",
        "id": staff_id,
        "displayName": name,
        "emailAddress": email,
        "role": role,
        "timeZone": "Tokyo Standard Time",
        "useBusinessHours": True,
        "workingHours": [],
    }


STAFF = [
    staff_member(STAFF_ADA, "Ada Lovelace", "ada@contoso.test"),
    staff_member(STAFF_BEN, "Ben Okri", "ben@contoso.test", "teamMember"),
]


def question(qid: str, text: str, options: list[str]) -> dict[str, Any]:
    return {
        "id": qid,
        "displayName": text,
        "answerInputType": "radioButton" if options else "text",
        "answerOptions": list(options),
        "createdDateTime": "2026-01-05T10:00:00Z",
        "lastUpdatedDateTime": "2026-01-05T10:00:00Z",
    }


QUESTIONS = [
    question(Q_REASON, "Reason for visit", []),
    question(Q_LANGUAGE, "Preferred language", ["English", "日本語", "Español"]),
]


def service(
    service_id: str = SERVICE_CONSULT,
    name: str = "Initial consultation",
    max_attendees: int = 1,
    required: dict[str, bool] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    required = {Q_REASON: True, Q_LANGUAGE: False} if required is None else required
    return {
        "id": service_id,
        "displayName": name,
        "defaultDuration": "PT30M",
        "maximumAttendeesCount": max_attendees,
        "notes": "Service-wide notes for staff.",
        "additionalInformation": "Service-wide information for customers.",
        "customQuestions": [{"questionId": qid, "isRequired": req} for qid, req in required.items()],
        "staffMemberIds": [STAFF_ADA, STAFF_BEN],
        **extra,
    }


SERVICES = [service(), service(SERVICE_CLASS, "Group class", 12)]


def answer(qid: str, text: str = "", selected: list[Any] | None = None, **snapshot: Any) -> dict[str, Any]:
    """A bookingQuestionAnswer. ``snapshot`` adds the question's own properties (question, answerOptions,
    isRequired, answerInputType) the way Graph embeds them; leave them out to test the lookups."""
    return {
        "@odata.type": "#microsoft.graph.bookingQuestionAnswer",
        "questionId": qid,
        "answer": text,
        "selectedOptions": list(selected or []),
        **snapshot,
    }


def location(display: str = "Home", **address: str) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.location",
        "displayName": display,
        "locationType": "default",
        "uniqueIdType": "unknown",
        "address": {
            "@odata.type": "#microsoft.graph.physicalAddress",
            "street": address.get("street", ""),
            "city": address.get("city", ""),
            "state": address.get("state", ""),
            "countryOrRegion": address.get("countryOrRegion", ""),
            "postalCode": address.get("postalCode", ""),
        },
        "coordinates": {},
    }


def customer(
    customer_id: str,
    name: str,
    email: str,
    *,
    phone: str = "",
    notes: str | None = None,
    time_zone: str = "Tokyo Standard Time",
    where: dict[str, Any] | None = None,
    answers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.bookingCustomerInformation",
        "customerId": customer_id,
        "name": name,
        "emailAddress": email,
        "phone": phone,
        "notes": notes,
        "timeZone": time_zone,
        "location": where,
        "customQuestionAnswers": list(answers or []),
    }


HANAKO = customer(
    "c0000000-0000-4000-8000-000000000001",
    "山田 花子",
    "hanako@example.test",
    phone="+81 3 5555 0100",
    notes="Prefers the afternoon.",
    where=location("Home", street="1-1 Chiyoda", city="Chiyoda-ku", state="Tokyo", countryOrRegion="Japan",
                   postalCode="100-0001"),
    answers=[answer(Q_REASON, "Knee pain"), answer(Q_LANGUAGE, "", ["日本語"])],
)


def appointment(**overrides: Any) -> dict[str, Any]:
    """A 1:1 appointment as Graph returns it by id; ``overrides`` replace top-level properties."""
    body: dict[str, Any] = {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#solutions/bookingBusinesses('clinic%40contoso.test')/appointments/$entity",
        "@odata.etag": 'W/"xyz"',
        "id": "AAMkADc7zF4J0AAA=",
        "selfServiceAppointmentId": "d2c5a1e6-2b36-4b8e-9f3c-7a5d1c0b9e11",
        "additionalInformation": "Please bring your insurance card.",
        "isLocationOnline": True,
        "joinWebUrl": "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0",
        "anonymousJoinWebUrl": None,
        "customerTimeZone": "Tokyo Standard Time",
        "serviceId": SERVICE_CONSULT,
        "serviceName": "Initial consultation",
        "duration": "PT30M",
        "preBuffer": "PT5M",
        "postBuffer": "PT0S",
        "priceType": "fixedPrice",
        "price": 50.0,
        "serviceNotes": "Check the previous X-ray.",
        "optOutOfCustomerEmail": False,
        "staffMemberIds": [STAFF_ADA],
        "startDateTime": dttz("2026-11-25T09:00:00.0000000Z"),
        "endDateTime": dttz("2026-11-25T09:30:00.0000000Z"),
        "serviceLocation": location("Contoso Clinic", street="1 Main St", city="Seattle", state="WA",
                                    countryOrRegion="USA", postalCode="98101"),
        "reminders": [],
        "maximumAttendeesCount": 1,
        "filledAttendeesCount": 1,
        "smsNotificationsEnabled": True,
        "isCustomerAllowedToManageBooking": True,
        "appointmentLabel": "",
        "createdDateTime": "2026-11-20T08:00:00.1234567Z",
        "lastUpdatedDateTime": "2026-11-20T08:00:00.1234567Z",
        "customers": [copy.deepcopy(HANAKO)],
        # Graph's deprecated single-customer properties, still present in its JSON.
        "customerId": HANAKO["customerId"],
        "customerName": HANAKO["name"],
        "customerEmailAddress": HANAKO["emailAddress"],
        "customerPhone": HANAKO["phone"],
        "customerNotes": HANAKO["notes"],
        "customerLocation": copy.deepcopy(HANAKO["location"]),
    }
    body.update(copy.deepcopy(overrides))
    return body


def group_appointment(customers: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    return appointment(
        **{
            "serviceId": SERVICE_CLASS,
            "serviceName": "Group class",
            "maximumAttendeesCount": 12,
            "filledAttendeesCount": len(customers),
            "selfServiceAppointmentId": ZERO_GUID,
            "staffMemberIds": [STAFF_ADA, STAFF_BEN],
            "customers": customers,
            "customerId": None,
            "customerName": None,
            "customerEmailAddress": None,
            "customerPhone": None,
            "customerNotes": None,
            "customerLocation": None,
            **overrides,
        }
    )
