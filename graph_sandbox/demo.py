"""The demo tenant seeded on start (issue 4, "Demo data").

``clinic@contoso.test`` ("Contoso Clinic") with staff admin (administrator), viewer (viewer),
scheduler (scheduler) and member (teamMember); ``salon@contoso.test`` administered by admin; the user
``outsider@contoso.test`` on no staff list; a 1:1 service and a group service (max 10) with custom
questions; 1:1 and group appointments with customers, notes and answers, starting tomorrow (UTC) so a
calendarView around "now" finds them. Ids are derived from names, so they are the same on every run.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .appointments import build_appointment, dttz
from .state import Business, graph_timestamp

if TYPE_CHECKING:
    from .app import Sandbox

_NS = uuid.UUID("5a4db0c5-0000-4000-8000-00000000d3e0")
PEOPLE = {
    "admin@contoso.test": "Adele Admin",
    "viewer@contoso.test": "Victor Viewer",
    "scheduler@contoso.test": "Sofia Scheduler",
    "member@contoso.test": "Mateo Member",
    "outsider@contoso.test": "Olga Outsider",
}
MAILBOXES = {"clinic@contoso.test": "Contoso Clinic", "salon@contoso.test": "Contoso Salon"}


def stable_id(*parts: str) -> str:
    return str(uuid.uuid5(_NS, "/".join(parts)))


def _business_data(smtp: str, name: str, business_type: str) -> dict[str, Any]:
    now = graph_timestamp()
    hours = [
        {"day": day, "timeSlots": [{"startTime": "09:00:00.0000000", "endTime": "17:00:00.0000000"}]}
        for day in ("monday", "tuesday", "wednesday", "thursday", "friday")
    ]
    return {
        "id": smtp,
        "displayName": name,
        "businessType": business_type,
        "phone": "+1 206 555 0100",
        "email": smtp,
        "webSiteUrl": f"https://contoso.test/{smtp.split('@')[0]}",
        "defaultCurrencyIso": "USD",
        "isPublished": True,
        "publicUrl": f"https://book.ms/b/{smtp}",
        "languageTag": "en-US",
        "address": {
            "street": "1 Main St",
            "city": "Seattle",
            "state": "WA",
            "countryOrRegion": "USA",
            "postalCode": "98101",
        },
        "businessHours": hours,
        "schedulingPolicy": {
            "timeSlotInterval": "PT30M",
            "minimumLeadTime": "PT1H",
            "maximumAdvance": "P90D",
            "sendConfirmationsToOwner": True,
            "allowStaffSelection": True,
        },
        "createdDateTime": now,
        "lastUpdatedDateTime": now,
    }


def _staff(smtp: str, email: str, role: str) -> dict[str, Any]:
    now = graph_timestamp()
    return {
        "@odata.type": "#microsoft.graph.bookingStaffMember",
        "id": stable_id(smtp, "staff", email),
        "displayName": PEOPLE[email],
        "emailAddress": email,
        "role": role,
        "timeZone": "UTC",
        "useBusinessHours": True,
        "availabilityIsAffectedByPersonalCalendar": False,
        "isEmailNotificationEnabled": True,
        "membershipStatus": "active",
        "workingHours": [],
        "createdDateTime": now,
        "lastUpdatedDateTime": now,
    }


def _question(smtp: str, name: str, kind: str, options: list[str]) -> dict[str, Any]:
    now = graph_timestamp()
    return {
        "id": stable_id(smtp, "question", name),
        "displayName": name,
        "answerInputType": kind,
        "answerOptions": options,
        "createdDateTime": now,
        "lastUpdatedDateTime": now,
    }


def _service(
    smtp: str,
    name: str,
    minutes: int,
    max_attendees: int,
    questions: list[tuple[str, bool]],
    staff: list[str],
    online: bool,
) -> dict[str, Any]:
    now = graph_timestamp()
    return {
        "id": stable_id(smtp, "service", name),
        "displayName": name,
        "description": f"{name} at {MAILBOXES[smtp]}",
        "defaultDuration": f"PT{minutes}M",
        "defaultPrice": 50.0,
        "defaultPriceType": "fixedPrice",
        "maximumAttendeesCount": max_attendees,
        "isHiddenFromCustomers": False,
        "isLocationOnline": online,
        "smsNotificationsEnabled": False,
        "notes": "",
        "additionalInformation": "",
        "preBuffer": "PT0S",
        "postBuffer": "PT0S",
        "staffMemberIds": staff,
        "customQuestions": [{"questionId": qid, "isRequired": req} for qid, req in questions],
        "defaultLocation": {
            "displayName": MAILBOXES[smtp],
            "address": {
                "street": "1 Main St",
                "city": "Seattle",
                "state": "WA",
                "countryOrRegion": "USA",
                "postalCode": "98101",
            },
        },
        "defaultReminders": [],
        "languageTag": "en-US",
        "webUrl": f"https://book.ms/b/{smtp}/s/{stable_id(smtp, 'service', name)}",
        "createdDateTime": now,
        "lastUpdatedDateTime": now,
    }


def _customer(smtp: str, name: str, email: str, phone: str, city: str) -> dict[str, Any]:
    now = graph_timestamp()
    return {
        "@odata.type": "#microsoft.graph.bookingCustomer",
        "id": stable_id(smtp, "customer", email),
        "displayName": name,
        "emailAddress": email,
        "addresses": [{"street": "", "city": city, "state": "", "countryOrRegion": "", "postalCode": ""}],
        "phones": [{"number": phone, "type": "mobile"}],
        "createdDateTime": now,
        "lastUpdatedDateTime": now,
    }


def _info(
    customer: dict[str, Any], notes: str | None, answers: list[dict[str, Any]], tz: str = "America/Los_Angeles"
) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.bookingCustomerInformation",
        "customerId": customer["id"],
        "name": customer["displayName"],
        "emailAddress": customer["emailAddress"],
        "phone": customer["phones"][0]["number"],
        "notes": notes,
        "timeZone": tz,
        "location": {
            "displayName": "Customer",
            "address": {
                "street": "",
                "city": customer["addresses"][0]["city"],
                "state": "",
                "countryOrRegion": "",
                "postalCode": "",
            },
        },
        "customQuestionAnswers": answers,
    }


def seed(sandbox: Sandbox) -> dict[str, Any]:
    """Reset, then fill the sandbox with the demo tenant. Returns a summary."""
    sandbox.reset_state()
    state = sandbox.state
    for email, name in {**PEOPLE, **MAILBOXES}.items():
        state.add_user(email, name, stable_id("user", email))

    clinic = Business(_business_data("clinic@contoso.test", "Contoso Clinic", "Healthcare"))
    salon = Business(_business_data("salon@contoso.test", "Contoso Salon", "Beauty"))
    state.businesses["clinic@contoso.test"] = clinic
    state.businesses["salon@contoso.test"] = salon

    c = clinic.smtp
    for email, role in (
        ("admin@contoso.test", "administrator"),
        ("viewer@contoso.test", "viewer"),
        ("scheduler@contoso.test", "scheduler"),
        ("member@contoso.test", "teamMember"),
    ):
        s = _staff(c, email, role)
        clinic.staff[s["id"]] = s
    admin_salon = _staff(salon.smtp, "admin@contoso.test", "administrator")
    salon.staff[admin_salon["id"]] = admin_salon

    reason = _question(c, "Reason for visit", "text", [])
    language = _question(c, "Preferred language", "radioButton", ["English", "Japanese", "Spanish"])
    level = _question(c, "Experience level", "radioButton", ["Beginner", "Intermediate", "Advanced"])
    for q in (reason, language, level):
        clinic.questions[q["id"]] = q
    staff_ids = {v["emailAddress"]: k for k, v in clinic.staff.items()}
    consult = _service(
        c,
        "Initial consultation",
        30,
        1,
        [(reason["id"], True), (language["id"], False)],
        [staff_ids["admin@contoso.test"], staff_ids["member@contoso.test"]],
        online=False,
    )
    group = _service(
        c,
        "Group wellness class",
        60,
        10,
        [(level["id"], True)],
        [staff_ids["scheduler@contoso.test"], staff_ids["member@contoso.test"]],
        online=True,
    )
    clinic.services[consult["id"]] = consult
    clinic.services[group["id"]] = group
    haircut = _service(salon.smtp, "Haircut", 45, 1, [], [admin_salon["id"]], online=False)
    salon.services[haircut["id"]] = haircut

    people = [
        _customer(c, "Jordan Miller", "jordan.miller@example.test", "+1 213 555 0199", "Seattle"),
        _customer(c, "Hiro Tanaka", "hiro.tanaka@example.test", "+81 3 5555 0100", "Tokyo"),
        _customer(c, "Adele Vance", "adele.vance@example.test", "+1 213 555 0156", "Redmond"),
        _customer(c, "Bob Kelly", "bob.kelly@example.test", "+1 213 555 0108", "Bellevue"),
    ]
    for p in people:
        clinic.customers[p["id"]] = p
    jordan, hiro, adele, bob = people
    maria = _customer(salon.smtp, "Maria Garcia", "maria.garcia@example.test", "+34 91 555 0100", "Madrid")
    salon.customers[maria["id"]] = maria

    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)

    def at(days: int, hour: int, minutes: int) -> dict[str, Any]:
        start = day + timedelta(days=days, hours=hour)
        return {"startDateTime": dttz(start), "endDateTime": dttz(start + timedelta(minutes=minutes))}

    def ans(q: dict[str, Any], answer: str, selected: list[int] | None = None) -> dict[str, Any]:
        return {"questionId": q["id"], "answer": answer, "selectedOptions": selected or []}

    plans: list[tuple[Business, dict[str, Any]]] = [
        (
            clinic,
            {  # 1:1 booked by the customer on the booking page
                "serviceId": consult["id"],
                **at(0, 9, 30),
                "staffMemberIds": [staff_ids["admin@contoso.test"]],
                "selfServiceAppointmentId": stable_id(c, "self-service", "1"),
                "customers": [
                    _info(jordan, "Allergic to latex.", [ans(reason, "Lower back pain"), ans(language, "English", [0])])
                ],
                "serviceNotes": "Bring previous X-ray results.",
                "additionalInformation": "Please arrive 10 minutes early.",
                "customerTimeZone": "America/Los_Angeles",
                "smsNotificationsEnabled": True,
            },
        ),
        (
            clinic,
            {  # 1:1 online, created by staff
                "serviceId": consult["id"],
                **at(0, 11, 30),
                "staffMemberIds": [staff_ids["member@contoso.test"]],
                "isLocationOnline": True,
                "customers": [
                    _info(
                        hiro,
                        "Prefers video call.",
                        [ans(reason, "Follow-up"), ans(language, "Japanese", [1])],
                        "Asia/Tokyo",
                    )
                ],
                "serviceNotes": "Second visit.",
                "customerTimeZone": "Asia/Tokyo",
            },
        ),
        (
            clinic,
            {  # group class, two hosts, two customers
                "serviceId": group["id"],
                **at(1, 14, 60),
                "staffMemberIds": [staff_ids["scheduler@contoso.test"], staff_ids["member@contoso.test"]],
                "isLocationOnline": True,
                "maximumAttendeesCount": 10,
                "customers": [
                    _info(adele, "First class.", [ans(level, "Beginner", [0])]),
                    _info(bob, None, [ans(level, "Advanced", [2])]),
                ],
                "serviceNotes": "Bring a mat.",
                "additionalInformation": "Join 5 minutes early.",
            },
        ),
        (
            clinic,
            {  # group class next week, one customer so far
                "serviceId": group["id"],
                **at(7, 14, 60),
                "staffMemberIds": [staff_ids["scheduler@contoso.test"]],
                "maximumAttendeesCount": 10,
                "customers": [_info(jordan, None, [ans(level, "Intermediate", [1])])],
            },
        ),
        (
            salon,
            {
                "serviceId": haircut["id"],
                **at(0, 10, 45),
                "staffMemberIds": [admin_salon["id"]],
                "customers": [_info(maria, "Short, please.", [], "Europe/Madrid")],
                "customerTimeZone": "Europe/Madrid",
            },
        ),
    ]
    for business, body in plans:
        appt = build_appointment(business, body)
        business.appointments[appt["id"]] = appt
        sandbox.calendars.mirror_appointment(business, appt)
    return summary(sandbox)


def summary(sandbox: Sandbox) -> dict[str, Any]:
    state = sandbox.state
    return {
        "businesses": [
            {"id": b.smtp, "displayName": b.data["displayName"], "appointments": len(b.appointments)}
            for b in state.businesses.values()
        ],
        "users": [
            {"upn": u.user_principal_name, "id": u.id, "displayName": u.display_name} for u in state.users.values()
        ],
    }


def clone_business(sandbox: Sandbox, source: str, smtp: str, display_name: str | None = None) -> Business:
    """A new business (and its mailbox user) shaped like ``source``: same staff people and roles, services,
    custom questions and customers, under new ids derived from ``smtp``; no appointments. For benchmarks
    that need many mailboxes with the demo's administrators (Graph has no API for creating businesses)."""
    state = sandbox.state
    original = state.business(source)
    if original is None:
        raise KeyError(source)
    smtp = smtp.lower()
    name = display_name or smtp.split("@")[0]
    data = copy.deepcopy(original.data)
    data.update({"id": smtp, "displayName": name, "email": smtp, "publicUrl": f"https://book.ms/b/{smtp}",
                 "webSiteUrl": f"https://contoso.test/{smtp.split('@')[0]}", "createdDateTime": graph_timestamp(),
                 "lastUpdatedDateTime": graph_timestamp()})
    clone = Business(data)
    # Old id -> new id for everything that is referenced by id (services name their staff and questions).
    renamed: dict[str, str] = {}
    for kind in ("staff", "questions", "customers", "services"):
        for old_id in getattr(original, kind):
            renamed[old_id] = stable_id(smtp, kind, old_id)

    def remap(value: Any) -> Any:
        if isinstance(value, str):
            return renamed.get(value, value)
        if isinstance(value, list):
            return [remap(v) for v in value]
        if isinstance(value, dict):
            return {k: remap(v) for k, v in value.items()}
        return value

    for kind in ("staff", "questions", "customers", "services"):
        target = getattr(clone, kind)
        for old_id, item in getattr(original, kind).items():
            target[renamed[old_id]] = remap(copy.deepcopy(item))
    for service in clone.services.values():
        service["webUrl"] = f"https://book.ms/b/{smtp}/s/{service['id']}"
        service["description"] = f"{service['displayName']} at {name}"
        service["defaultLocation"]["displayName"] = name
    state.businesses[smtp] = clone
    if state.find_user(smtp) is None:
        state.add_user(smtp, name, stable_id("user", smtp))
    return clone
