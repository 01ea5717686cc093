"""Bookings and calendar events as Graph documents them, against the seeded demo tenant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from graph_sandbox import SandboxServer
from graph_sandbox.config import DEFAULT_APP_ROLES

from .test_permissions import delegated_token

CLINIC = "clinic@contoso.test"
B = f"/solutions/bookingBusinesses/{CLINIC}"


def _all_pages(graph: httpx.Client, url: str, **kw: Any) -> tuple[list[dict], int]:
    items, pages = [], 0
    while url and pages < 50:
        body = graph.get(url, **kw).raise_for_status().json()
        kw = {}  # the nextLink carries every option (httpx params would replace its query)
        items += body["value"]
        pages += 1
        url = body.get("@odata.nextLink")
    return items, pages


def _service(graph: httpx.Client, group: bool) -> dict:
    services = graph.get(f"{B}/services").json()["value"]
    return next(s for s in services if (s["maximumAttendeesCount"] > 1) == group)


def _new_appointment(graph: httpx.Client, **extra: Any) -> dict:
    service = _service(graph, group=False)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    body = {
        "@odata.type": "#microsoft.graph.bookingAppointment",
        "serviceId": service["id"],
        "startDateTime": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "endDateTime": {"dateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "customers": [{"name": "Walk In", "emailAddress": "walk.in@example.test", "notes": "New patient"}],
        **extra,
    }
    r = graph.post(f"{B}/appointments", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_list_businesses_returns_only_id_and_display_name(sb: SandboxServer, graph: httpx.Client) -> None:
    # On behalf of a user: app-only listing is refused by default (tests/sandbox/test_permissions.py).
    headers = {"Authorization": f"Bearer {delegated_token(sb, 'admin@contoso.test', ['Bookings.Read.All'])}"}
    body = graph.get("/solutions/bookingBusinesses", headers=headers).json()
    assert body["@odata.context"].endswith("$metadata#bookingBusinesses")
    assert {b["id"] for b in body["value"]} == {CLINIC, "salon@contoso.test"}
    assert all(set(b) == {"id", "displayName"} for b in body["value"])
    assert "@odata.nextLink" not in body  # documented: not paged
    found = graph.get("/solutions/bookingBusinesses", params={"query": "salon"}, headers=headers).json()["value"]
    assert [b["id"] for b in found] == ["salon@contoso.test"]


@pytest.mark.parametrize("smtp", ["clinic@contoso.test", "CLINIC@Contoso.Test", "clinic%40contoso.test"])
def test_business_by_smtp_is_case_insensitive(graph: httpx.Client, smtp: str) -> None:
    body = graph.get(f"/solutions/bookingBusinesses/{smtp}").json()
    assert body["id"] == CLINIC and body["displayName"] == "Contoso Clinic"
    assert body["publicUrl"] == f"https://book.ms/b/{CLINIC}"


def test_unknown_business_is_a_graph_error_with_inner_error(graph: httpx.Client) -> None:
    r = graph.get("/solutions/bookingBusinesses/nobody@contoso.test", headers={"client-request-id": "my-id-1"})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] and err["message"]
    assert err["innerError"]["client-request-id"] == "my-id-1" == r.headers["client-request-id"]
    assert err["innerError"]["request-id"] == r.headers["request-id"]
    datetime.fromisoformat(err["innerError"]["date"])


def test_staff_roles_hide_new_enum_members_without_prefer(graph: httpx.Client) -> None:
    plain = {s["emailAddress"]: s["role"] for s in graph.get(f"{B}/staffMembers").json()["value"]}
    assert plain == {
        "admin@contoso.test": "administrator",
        "viewer@contoso.test": "viewer",
        "scheduler@contoso.test": "unknownFutureValue",
        "member@contoso.test": "unknownFutureValue",
    }
    r = graph.get(f"{B}/staffMembers", headers={"Prefer": "include-unknown-enum-members"})
    assert r.headers["Preference-Applied"] == "include-unknown-enum-members"
    full = {s["emailAddress"]: s["role"] for s in r.json()["value"]}
    assert full["scheduler@contoso.test"] == "scheduler" and full["member@contoso.test"] == "teamMember"
    one = next(s for s in r.json()["value"] if s["role"] == "scheduler")
    assert graph.get(f"{B}/staffMembers/{one['id']}").json()["role"] == "unknownFutureValue"
    got = graph.get(
        f"{B}/staffMembers/{one['id']}", headers={"Prefer": "odata.maxpagesize=5, include-unknown-enum-members"}
    )
    assert got.json()["role"] == "scheduler"


def test_appointments_page_with_next_link(graph: httpx.Client) -> None:
    everything = graph.get(f"{B}/appointments").json()["value"]
    assert len(everything) == 4
    items, pages = _all_pages(graph, f"{B}/appointments", params={"$top": 1})
    assert pages == 4
    assert [a["id"] for a in items] == [a["id"] for a in everything]
    first = graph.get(f"{B}/appointments", params={"$top": 3}).json()
    assert len(first["value"]) == 3
    assert "$skiptoken=" in first["@odata.nextLink"] and "$top=3" in first["@odata.nextLink"]
    assert first["@odata.nextLink"].startswith(str(graph.base_url).removesuffix("/v1.0/") + "/v1.0/")


def test_server_default_page_size_applies_without_top(sb: SandboxServer, graph: httpx.Client) -> None:
    sb.sandbox.config.default_page_size = 2
    try:
        items, pages = _all_pages(graph, f"{B}/appointments")
    finally:
        sb.sandbox.config.default_page_size = 100
    assert (len(items), pages) == (4, 2)


def test_bad_paging_options_are_400(graph: httpx.Client) -> None:
    assert graph.get(f"{B}/appointments", params={"$top": "x"}).status_code == 400
    assert graph.get(f"{B}/appointments", params={"$skiptoken": "!!"}).status_code == 400


def test_listing_omits_what_only_get_by_id_returns(graph: httpx.Client) -> None:
    listed = graph.get(f"{B}/appointments").json()["value"]
    for item in listed:
        assert item["customers"] == [] and item["serviceNotes"] is None and item["customerNotes"] is None
    one_to_one = next(
        a
        for a in listed
        if a["maximumAttendeesCount"] == 1 and a["selfServiceAppointmentId"] != "00000000-0000-0000-0000-000000000000"
    )
    full = graph.get(f"{B}/appointments/{one_to_one['id']}").json()
    assert full["@odata.context"].endswith("/appointments/$entity")
    assert full["customers"][0]["notes"] == "Allergic to latex."
    assert full["customerNotes"] == "Allergic to latex."
    assert full["serviceNotes"] == "Bring previous X-ray results."
    assert full["additionalInformation"] == "Please arrive 10 minutes early."
    answers = {a["question"]: a for a in full["customers"][0]["customQuestionAnswers"]}
    assert (
        answers["Reason for visit"]["answer"] == "Lower back pain" and answers["Reason for visit"]["isRequired"] is True
    )
    assert answers["Preferred language"]["answerOptions"] == ["English", "Japanese", "Spanish"]
    assert answers["Preferred language"]["selectedOptions"] == [0]
    for key in (
        "staffMemberIds",
        "joinWebUrl",
        "isLocationOnline",
        "maximumAttendeesCount",
        "filledAttendeesCount",
        "smsNotificationsEnabled",
        "selfServiceAppointmentId",
        "createdDateTime",
        "lastUpdatedDateTime",
    ):
        assert key in full
    assert full["startDateTime"]["timeZone"] == "UTC" and full["startDateTime"]["dateTime"].endswith(".0000000Z")
    assert full["duration"] == "PT30M"


def test_group_appointment_has_every_customer_with_answers(graph: httpx.Client) -> None:
    listed = graph.get(f"{B}/appointments").json()["value"]
    group = next(a for a in listed if a["maximumAttendeesCount"] == 10 and a["filledAttendeesCount"] == 2)
    full = graph.get(f"{B}/appointments/{group['id']}").json()
    assert [c["name"] for c in full["customers"]] == ["Adele Vance", "Bob Kelly"]
    assert all(c["customQuestionAnswers"][0]["question"] == "Experience level" for c in full["customers"])
    assert len(full["staffMemberIds"]) == 2
    assert full["customerName"] is None  # the deprecated single-customer fields stay empty for groups
    assert full["selfServiceAppointmentId"] == "00000000-0000-0000-0000-000000000000"


def test_calendar_view_requires_start_and_end(graph: httpx.Client) -> None:
    for params in ({}, {"start": "2030-01-01T00:00:00Z"}, {"end": "2030-01-01T00:00:00Z"}):
        r = graph.get(f"{B}/calendarView", params=params)
        assert r.status_code == 400 and r.json()["error"]["code"] == "BadRequest"


def test_calendar_view_filters_by_overlap(graph: httpx.Client) -> None:
    tomorrow = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    window = {"start": tomorrow.isoformat(), "end": (tomorrow + timedelta(days=1)).isoformat()}
    day_one = graph.get(f"{B}/calendarView", params=window).json()
    assert day_one["@odata.context"].endswith("/calendarView")
    assert len(day_one["value"]) == 2
    offset = {
        "start": (tomorrow - timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%S-08:00"),
        "end": "2100-01-01T00:00:00Z",
    }
    assert len(graph.get(f"{B}/calendarView", params=offset).json()["value"]) == 4
    assert (
        graph.get(f"{B}/calendarView", params={"start": "2000-01-01T00:00:00Z", "end": "2000-01-02T00:00:00Z"}).json()[
            "value"
        ]
        == []
    )


def test_create_get_update_delete_and_the_mirrored_event(graph: httpx.Client) -> None:
    created = _new_appointment(graph, serviceNotes="first visit")
    appt_id = created["id"]
    assert created["serviceName"] == "Initial consultation"
    assert created["selfServiceAppointmentId"] == "00000000-0000-0000-0000-000000000000"  # created by staff
    events = graph.get(f"/users/{CLINIC}/events").json()["value"]
    event = next(
        e
        for e in events
        if e["subject"] == "Initial consultation"
        and e["attendees"][0]["emailAddress"]["address"] == "walk.in@example.test"
    )
    assert event["id"] != appt_id
    assert graph.get(f"/users/{CLINIC}/events/{event['id']}").status_code == 200

    new_start = datetime.fromisoformat(created["startDateTime"]["dateTime"]) + timedelta(hours=1)
    patch = {
        "startDateTime": {"dateTime": new_start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "endDateTime": {
            "dateTime": (new_start + timedelta(minutes=45)).strftime("%Y-%m-%dT%H:%M:%S"),
            "timeZone": "UTC",
        },
        "serviceNotes": "moved",
    }
    r = graph.patch(f"{B}/appointments/{appt_id}", json=patch)
    assert r.status_code == 204 and r.content == b""
    got = graph.get(f"{B}/appointments/{appt_id}").json()
    assert got["serviceNotes"] == "moved" and got["duration"] == "PT45M"
    assert (
        graph.get(f"/users/{CLINIC}/events/{event['id']}")
        .json()["end"]["dateTime"]
        .startswith((new_start + timedelta(minutes=45)).strftime("%Y-%m-%dT%H:%M:%S"))
    )

    assert graph.delete(f"{B}/appointments/{appt_id}").status_code == 204
    assert graph.get(f"{B}/appointments/{appt_id}").status_code == 404
    assert graph.get(f"/users/{CLINIC}/events/{event['id']}").status_code == 404


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "Tokyo Standard Time"])  # IANA and Windows ids, as Graph
def test_times_in_other_zones_are_returned_in_utc(graph: httpx.Client, zone: str) -> None:
    service = _service(graph, group=False)
    body = {
        "serviceId": service["id"],
        "startDateTime": {"dateTime": "2031-03-03T09:00:00", "timeZone": zone},
        "endDateTime": {"dateTime": "2031-03-03T09:30:00", "timeZone": zone},
    }
    created = graph.post(f"{B}/appointments", json=body).json()
    assert created["startDateTime"] == {"dateTime": "2031-03-03T00:00:00.0000000Z", "timeZone": "UTC"}


def test_cancel_needs_a_message_and_removes_appointment_and_event(sb: SandboxServer, graph: httpx.Client) -> None:
    created = _new_appointment(graph)
    assert graph.post(f"{B}/appointments/{created['id']}/cancel", json={}).status_code == 400
    events_before = len(graph.get(f"/users/{CLINIC}/events").json()["value"])
    r = graph.post(f"{B}/appointments/{created['id']}/cancel", json={"cancellationMessage": "Doctor is ill"})
    assert r.status_code == 204
    assert graph.get(f"{B}/appointments/{created['id']}").status_code == 404
    assert len(graph.get(f"/users/{CLINIC}/events").json()["value"]) == events_before - 1
    record = sb.control("GET", "cancellations")["value"][-1]
    assert record["appointmentId"] == created["id"] and record["cancellationMessage"] == "Doctor is ill"


@pytest.mark.parametrize(
    "extra",
    [
        {"serviceId": "nope"},
        {"staffMemberIds": ["not-a-staff-id"]},
        {"startDateTime": {"dateTime": "2031-01-01T10:00:00", "timeZone": "Mars/Olympus"}},
        {"unknownProperty": 1},
    ],
)
def test_invalid_appointments_are_400(graph: httpx.Client, extra: dict) -> None:
    service = _service(graph, group=False)
    body = {
        "serviceId": service["id"],
        "startDateTime": {"dateTime": "2031-01-01T10:00:00", "timeZone": "UTC"},
        "endDateTime": {"dateTime": "2031-01-01T10:30:00", "timeZone": "UTC"},
        **extra,
    }
    r = graph.post(f"{B}/appointments", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "BadRequest"


def test_group_appointment_needs_known_customer_ids(graph: httpx.Client) -> None:
    """The create page: for a service taking several customers, "If the customer ID is not valid, that customer
    won't be included in the appointment object"."""
    service = _service(graph, group=True)
    body = {
        "serviceId": service["id"],
        "startDateTime": {"dateTime": "2031-01-01T10:00:00", "timeZone": "UTC"},
        "endDateTime": {"dateTime": "2031-01-01T11:00:00", "timeZone": "UTC"},
        "customers": [{"name": "No Id"}, {"name": "Made-up id", "customerId": "no-such-customer"}],
    }
    left_out = graph.post(f"{B}/appointments", json=body)
    assert left_out.status_code == 201, left_out.text
    assert left_out.json()["customers"] == [] and left_out.json()["filledAttendeesCount"] == 0
    customers = graph.get(f"{B}/customers").json()["value"]
    body["customers"] = [{"customerId": c["id"]} for c in customers[:3]]
    created = graph.post(f"{B}/appointments", json=body).json()
    assert created["filledAttendeesCount"] == 3 and created["maximumAttendeesCount"] == 10
    assert {c["name"] for c in created["customers"]} == {c["displayName"] for c in customers[:3]}


def test_users_resolve_by_upn_and_object_id(sb: SandboxServer, graph: httpx.Client) -> None:
    # Reading a user needs User.Read.All, which the app is not granted by default.
    denied = graph.get(f"/users/{CLINIC}")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "Authorization_RequestDenied"
    app = sb.sandbox.config.apps[0]
    sb.control("POST", f"apps/{app.client_id}/roles", {"roles": [*app.roles, "User.Read.All"]})
    try:
        graph.headers["Authorization"] = f"Bearer {sb.app_token()}"
        user = graph.get(f"/users/{CLINIC}").json()
    finally:
        sb.control("POST", f"apps/{app.client_id}/roles", {"roles": [r for r in app.roles if r != "User.Read.All"]})
    assert user["userPrincipalName"] == CLINIC
    assert graph.get(f"/users/{user['id']}").json()["id"] == user["id"]
    assert len(graph.get(f"/users/{user['id']}/events").json()["value"]) == 4
    assert graph.get("/users/nobody@contoso.test/events").status_code == 404


def test_app_permissions_are_checked_per_route(sb: SandboxServer, graph: httpx.Client) -> None:
    app = sb.sandbox.config.apps[0]
    saved = list(app.roles)
    sb.control("POST", f"apps/{app.client_id}/roles", {"roles": ["Bookings.Read.All"]})
    try:
        headers = {"Authorization": f"Bearer {sb.app_token()}"}
        assert graph.get(f"{B}/appointments", headers=headers).status_code == 200
        r = graph.delete(f"{B}/appointments/whatever", headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "ErrorAccessDenied"
        assert graph.get(f"/users/{CLINIC}/events", headers=headers).status_code == 403
    finally:
        sb.control("POST", f"apps/{app.client_id}/roles", {"roles": saved})


def test_unknown_graph_segment_is_400_bad_request(graph: httpx.Client) -> None:
    r = graph.get("/solutions/nothingHere")
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadRequest"


def test_listing_businesses_app_only_follows_the_stricter_reading_unless_switched(
    sb: SandboxServer, graph: httpx.Client
) -> None:
    r = graph.get("/solutions/bookingBusinesses")
    assert r.status_code == 403 and r.json()["error"]["code"] == "ErrorAccessDenied"
    assert graph.get(f"/solutions/bookingBusinesses/{CLINIC}").status_code == 200
    sb.control("POST", "permissions", {"appCanListBusinesses": True})
    assert graph.get("/solutions/bookingBusinesses").status_code == 200


def test_mailbox_calendar_view_needs_a_window_and_filters(graph: httpx.Client) -> None:
    r = graph.get(f"/users/{CLINIC}/calendarView")
    assert r.status_code == 400 and r.json()["error"]["code"] == "ErrorInvalidParameter"
    tomorrow = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    window = {"startDateTime": tomorrow.isoformat(), "endDateTime": (tomorrow + timedelta(days=1)).isoformat()}
    assert len(graph.get(f"/users/{CLINIC}/calendarView", params=window).json()["value"]) == 2
    assert len(graph.get(f"/users/{CLINIC}/events").json()["value"]) == 4


def test_seed_restores_app_roles(sb: SandboxServer) -> None:
    app = sb.sandbox.config.apps[0]
    sb.control("POST", f"apps/{app.client_id}/roles", {"roles": []})
    sb.seed()
    assert set(app.roles) == set(DEFAULT_APP_ROLES)


def test_customers_can_be_created_and_are_then_known_to_group_appointments(graph: httpx.Client) -> None:
    """bookingbusiness-post-customers: 201 with the new bookingCustomer; a group appointment then books it."""
    created = graph.post(f"{B}/customers", json={"@odata.type": "#microsoft.graph.bookingCustomer",
                                                 "displayName": "Nova Newcomer", "emailAddress": "nova@example.test"})
    assert created.status_code == 201, created.text
    customer = created.json()
    assert customer["id"] and customer["displayName"] == "Nova Newcomer"
    assert customer["id"] in {c["id"] for c in graph.get(f"{B}/customers").json()["value"]}
    assert graph.post(f"{B}/customers", json={"emailAddress": "x@example.test"}).status_code == 400
    assert graph.post(f"{B}/customers", json={"displayName": "X", "shoeSize": 42}).status_code == 400
    body = {"serviceId": _service(graph, group=True)["id"], "customers": [{"customerId": customer["id"]}],
            "startDateTime": {"dateTime": "2031-01-01T10:00:00", "timeZone": "UTC"},
            "endDateTime": {"dateTime": "2031-01-01T11:00:00", "timeZone": "UTC"}}
    booked = graph.post(f"{B}/appointments", json=body).json()
    assert [c["name"] for c in booked["customers"]] == ["Nova Newcomer"]
