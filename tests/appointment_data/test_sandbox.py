"""Every appointment of the Graph sandbox's demo tenant, read over real HTTP (list, then GET by id, as the
reconcile worker does), maps to a payload the connector schema accepts and that matches, field by field,
the sandbox's own source data — plus a group appointment with three customers booked through the API in
a non-UTC zone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest

from graph_sandbox.testing import SandboxServer
from shared.contracts.appointment_data import to_appointment_data

from .conftest import assert_valid

ZERO_GUID = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer() as sb:
        yield sb


class GraphReader:
    """Reads like the app does: paged lists (following @odata.nextLink) and GET by id."""

    def __init__(self, sb: SandboxServer) -> None:
        self.sb = sb
        self.headers = sb.graph_headers(Prefer="include-unknown-enum-members")

    def get(self, url: str) -> dict[str, Any]:
        r = self.sb.http.get(url if url.startswith("http") else self.sb.graph_url + url, headers=self.headers)
        r.raise_for_status()
        return dict(r.json())

    def list(self, path: str) -> list[dict[str, Any]]:
        items, url = [], self.sb.graph_url + path
        while url:
            page = self.get(url)
            items += page["value"]
            url = page.get("@odata.nextLink")
        return items

    def business_path(self, smtp: str) -> str:
        return f"/solutions/bookingBusinesses/{quote(smtp)}"

    def mapped(self, smtp: str, appointment_id: str) -> Any:
        base = self.business_path(smtp)
        full = self.get(f"{base}/appointments/{quote(appointment_id, safe='')}")
        data = to_appointment_data(
            full,
            services=self.list(f"{base}/services"),
            staff=self.list(f"{base}/staffMembers"),
            questions=self.list(f"{base}/customQuestions"),
        )
        return data


def utc(dttz: dict[str, str]) -> str:
    """The source's instant, formatted independently of the module under test."""
    dt = datetime.fromisoformat(dttz["dateTime"].replace("0000000Z", "+00:00"))
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expected_answers(business: Any, service: dict[str, Any], source_customer: dict[str, Any]) -> list[dict[str, Any]]:
    required = {q["questionId"]: q["isRequired"] for q in service["customQuestions"]}
    out = []
    for a in source_customer["customQuestionAnswers"]:
        question = business.questions[a["questionId"]]
        options = question["answerOptions"]
        # The sandbox stores selections as indexes, Graph documents them as texts: accept either.
        selected = [s if isinstance(s, int) else options.index(s) for s in a["selectedOptions"]]
        out.append({
            "Answer": a["answer"] or ", ".join(options[i] for i in selected),
            "AnswerOptions": options,
            "IsRequired": required.get(a["questionId"], False),
            "Question": question["displayName"],
            "QuestionID": a["questionId"],
            "SelectedOptions": selected,
        })
    return out


def expected_customer(business: Any, service: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    loc = c.get("location") or {}
    address = loc.get("address") or {}
    return {
        "Email": c["emailAddress"] or "",
        "Id": c["customerId"] or "",
        "Location": {"DisplayName": loc.get("displayName") or "", "PhysicalAddress": {
            "City": address.get("city", ""), "CountryOrRegion": address.get("countryOrRegion", ""),
            "PostalCode": address.get("postalCode", ""), "State": address.get("state", ""),
            "Street": address.get("street", "")}},
        "Name": c["name"] or "",
        "Notes": c["notes"] or "",
        "TimeZone": c["timeZone"] or "",
        "Answers": expected_answers(business, service, c),
    }


def compare_with_source(business: Any, source: dict[str, Any], data: Any) -> None:
    assert_valid(data)
    service = business.services[source["serviceId"]]
    start, end = source["startDateTime"], source["endDateTime"]
    assert (data["StartTime"], data["EndTime"]) == (utc(start), utc(end))
    minutes = (datetime.fromisoformat(utc(end).replace("Z", "+00:00"))
               - datetime.fromisoformat(utc(start).replace("Z", "+00:00"))).total_seconds() / 60
    assert data["Duration"] == minutes
    # Graph's ids as Graph has them: the zero GUID for appointments staff created, never the Graph id.
    assert data["Id"] == data["SelfServiceAppointmentId"] == (source["selfServiceAppointmentId"] or "")
    assert data["AppointmentId"] == source["id"]
    assert (data["ServiceId"], data["ServiceName"]) == (service["id"], service["displayName"])
    assert data["ServiceNotes"] == (source["serviceNotes"] or "")
    assert data["AdditionalInfo"] == (source["additionalInformation"] or "")
    assert data["JoinWebURL"] == (source["joinWebUrl"] or "")
    assert data["IsSMSNotificationsEnabled"] == source["smsNotificationsEnabled"]
    assert data["MaxAttendeesCount"] == source["maximumAttendeesCount"]
    assert data["FilledAttendeesCount"] == len(source["customers"])
    assert data["StaffMembers"] == [
        {"DisplayName": business.staff[i]["displayName"], "EmailAddress": business.staff[i]["emailAddress"], "Id": i}
        for i in source["staffMemberIds"]
    ]
    customers = [expected_customer(business, service, c) for c in source["customers"]]
    assert data["Customers"] == customers
    if source["maximumAttendeesCount"] > 1:
        assert (data["CustomerName"], data["CustomerEmail"], data["CustomQuestionAnswers"]) == ("", "", [])
    else:
        (one,) = customers
        assert (data["CustomerName"], data["CustomerEmail"], data["CustomerId"]) == (one["Name"], one["Email"],
                                                                                     one["Id"])
        assert (data["CustomerNotes"], data["CustomerLocation"]) == (one["Notes"], one["Location"])
        assert data["CustomerPhone"] == source["customers"][0]["phone"]
        assert data["CustomerTimeZone"] == source["customerTimeZone"]
        assert data["CustomQuestionAnswers"] == one["Answers"]
    assert data["CancelReason"] == ""


def test_every_demo_appointment_maps_and_matches_the_sandbox_data(sandbox: SandboxServer) -> None:
    graph = GraphReader(sandbox)
    seen: dict[str, int] = {"one_to_one": 0, "group": 0, "answers": 0, "by_staff": 0, "self_service": 0}
    # Every business of the demo tenant (listing them through Graph needs a user: the app reads app-only).
    for smtp in sorted(sandbox.sandbox.state.businesses):
        business = sandbox.sandbox.state.business(smtp)
        listed = graph.list(f"{graph.business_path(smtp)}/appointments")
        assert {a["id"] for a in listed} == set(business.appointments)
        for item in listed:
            data = graph.mapped(smtp, item["id"])
            source = business.appointments[item["id"]]
            compare_with_source(business, source, data)
            seen["group" if source["maximumAttendeesCount"] > 1 else "one_to_one"] += 1
            seen["answers"] += sum(len(c["Answers"]) for c in data["Customers"])
            seen["by_staff" if data["SelfServiceAppointmentId"] == ZERO_GUID else "self_service"] += 1
    # The demo data must exercise what this test claims to check.
    assert seen["one_to_one"] >= 2 and seen["group"] >= 2 and seen["answers"] >= 4, seen
    assert seen["by_staff"] >= 2 and seen["self_service"] >= 1, seen


def test_group_of_three_booked_in_a_local_zone(sandbox: SandboxServer) -> None:
    graph = GraphReader(sandbox)
    smtp = "clinic@contoso.test"
    base = graph.business_path(smtp)
    group = next(s for s in graph.list(f"{base}/services") if s["maximumAttendeesCount"] > 1)
    question_id = group["customQuestions"][0]["questionId"]
    options = next(q for q in graph.list(f"{base}/customQuestions") if q["id"] == question_id)["answerOptions"]
    people = graph.list(f"{base}/customers")[:3]
    assert len(people) == 3
    body = {
        "serviceId": group["id"],
        "startDateTime": {"dateTime": "2026-12-01T18:00:00.0000000", "timeZone": "Asia/Tokyo"},
        "endDateTime": {"dateTime": "2026-12-01T19:15:00.0000000", "timeZone": "Asia/Tokyo"},
        "staffMemberIds": group["staffMemberIds"][:1],
        "maximumAttendeesCount": group["maximumAttendeesCount"],
        "customers": [
            {"customerId": p["id"], "notes": f"note {n}", "timeZone": "Tokyo Standard Time",
             "customQuestionAnswers": [{"questionId": question_id, "answer": "",
                                        "selectedOptions": [options[n % len(options)]]}]}
            for n, p in enumerate(people)
        ],
    }
    r = sandbox.http.post(sandbox.graph_url + base + "/appointments", json=body, headers=graph.headers)
    assert r.status_code == 201, r.text
    created = r.json()
    data = graph.mapped(smtp, created["id"])
    business = sandbox.sandbox.state.business(smtp)
    compare_with_source(business, business.appointments[created["id"]], data)
    # 18:00-19:15 in Tokyo (UTC+9, no DST).
    assert (data["StartTime"], data["EndTime"], data["Duration"]) == (
        "2026-12-01T09:00:00Z", "2026-12-01T10:15:00Z", 75)
    assert [c["Notes"] for c in data["Customers"]] == ["note 0", "note 1", "note 2"]
    assert [c["Answers"][0]["SelectedOptions"] for c in data["Customers"]] == [[n % len(options)] for n in range(3)]


def test_staff_created_appointment_without_notes_whose_service_has_notes(sandbox: SandboxServer) -> None:
    """Created through Graph (by staff, as an app does): the zero GUID in Id/SelfServiceAppointmentId, the
    Graph id in AppointmentId, and no notes of its own stays no notes, whatever its service says."""
    graph = GraphReader(sandbox)
    smtp = "clinic@contoso.test"
    base = graph.business_path(smtp)
    service = next(s for s in sandbox.sandbox.state.business(smtp).services.values()
                   if s["maximumAttendeesCount"] == 1)
    saved = service["notes"], service["additionalInformation"]
    service["notes"], service["additionalInformation"] = "Service-wide staff notes.", "Service-wide information."
    created: dict[str, Any] = {}
    try:
        listed = next(s for s in graph.list(f"{base}/services") if s["id"] == service["id"])
        assert (listed["notes"], listed["additionalInformation"]) == (
            "Service-wide staff notes.", "Service-wide information.")  # Graph shows the service's text
        body = {
            "serviceId": service["id"],
            "startDateTime": {"dateTime": "2026-12-02T09:00:00.0000000", "timeZone": "UTC"},
            "endDateTime": {"dateTime": "2026-12-02T09:30:00.0000000", "timeZone": "UTC"},
            "customers": [{"@odata.type": "#microsoft.graph.bookingCustomerInformation", "name": "Walk In",
                           "emailAddress": "walk.in@example.test"}],
        }
        r = sandbox.http.post(sandbox.graph_url + base + "/appointments", json=body, headers=graph.headers)
        assert r.status_code == 201, r.text
        created = r.json()
        data = graph.mapped(smtp, created["id"])
        assert_valid(data)
        assert data["Id"] == data["SelfServiceAppointmentId"] == ZERO_GUID
        assert data["AppointmentId"] == created["id"]
        assert (data["ServiceNotes"], data["AdditionalInfo"]) == ("", "")
    finally:
        service["notes"], service["additionalInformation"] = saved
        if created:
            sandbox.http.delete(f"{sandbox.graph_url}{base}/appointments/{quote(created['id'], safe='')}",
                                headers=graph.headers)
