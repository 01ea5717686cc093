"""The connector's actions through the local host, Graph = the sandbox (real HTTP both ways): get, list
(paged), create, list services and staff; who may call them (Bookings roles); errors in the JSON shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from graph_sandbox.config import APP_READ_ROLES, DEFAULT_CLIENT_ID
from tests.appointment_data.conftest import assert_valid

CLINIC = "clinic@contoso.test"


def call(host, sandbox, method: str, path: str, upn: str | None = "admin@contoso.test", headers: dict | None = None,
         **kwargs) -> httpx.Response:
    headers = {**({"Authorization": f"Bearer {sandbox.user_token(upn)}"} if upn else {}), **(headers or {})}
    url = path if path.startswith("http") else f"{host.url}/api/v1/bookingBusinesses/{CLINIC}/{path}"
    return httpx.request(method, url, headers=headers, timeout=60, **kwargs)


def graph(sandbox, path: str) -> dict:
    url = f"{sandbox.graph_url}/solutions/bookingBusinesses/{CLINIC}/{path}"
    return httpx.get(url, headers=sandbox.graph_headers(), timeout=30).json()


def services(sandbox) -> dict[str, dict]:
    return {s["displayName"]: s for s in graph(sandbox, "services")["value"]}


def in_a_week() -> tuple[str, str]:
    now = datetime.now(UTC).replace(microsecond=0)
    return now.isoformat().replace("+00:00", "Z"), (now + timedelta(days=7)).isoformat().replace("+00:00", "Z")


def test_services_and_staff_are_listed_for_every_staff_role_but_guests(app_host, sandbox) -> None:
    expected = {s["id"] for s in graph(sandbox, "services")["value"]}
    for upn in ("admin@contoso.test", "viewer@contoso.test", "scheduler@contoso.test", "member@contoso.test"):
        listed = call(app_host, sandbox, "GET", "services", upn)
        assert listed.status_code == 200, listed.text
        assert {s["id"] for s in listed.json()["value"]} == expected
    consult = next(s for s in listed.json()["value"] if s["displayName"] == "Initial consultation")
    assert consult["durationMinutes"] == 30 and consult["maximumAttendeesCount"] == 1
    staff = call(app_host, sandbox, "GET", "staffMembers", "viewer@contoso.test").json()["value"]
    # Graph hides scheduler and teamMember without the Prefer header; the app asks with it.
    assert {m["emailAddress"]: m["role"] for m in staff} == {
        "admin@contoso.test": "administrator", "viewer@contoso.test": "viewer",
        "scheduler@contoso.test": "scheduler", "member@contoso.test": "teamMember"}
    refused = call(app_host, sandbox, "GET", "services", "outsider@contoso.test")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "BookingsRoleNotAllowed"
    assert call(app_host, sandbox, "GET", "services", None).status_code == 401
    # The actions' business dropdown offers the clinic to each of them (the triggers' only to its administrator).
    dropdown = f"{app_host.url}/api/v1/bookingBusinessesUserAsStaff"
    for upn in ("viewer@contoso.test", "scheduler@contoso.test", "member@contoso.test"):
        assert call(app_host, sandbox, "GET", dropdown, upn).json() == {
            "mailboxes": [{"displayName": "Contoso Clinic", "email": CLINIC}]}, upn
        assert call(app_host, sandbox, "GET", dropdown.replace("Staff", "Admin"), upn).json() == {"mailboxes": []}
    assert call(app_host, sandbox, "GET", dropdown, "outsider@contoso.test").json() == {"mailboxes": []}


def test_get_an_appointment_is_the_triggers_payload(app_host, sandbox) -> None:
    listing = graph(sandbox, "appointments")["value"]
    one = next(a for a in listing if a["maximumAttendeesCount"] == 1)
    got = call(app_host, sandbox, "GET", f"appointments/{one['id']}", "viewer@contoso.test")
    assert got.status_code == 200, got.text
    data = got.json()
    assert_valid(data)
    full = graph(sandbox, f"appointments/{one['id']}")
    assert data["AppointmentId"] == one["id"] and data["CustomerName"] == full["customers"][0]["name"]
    assert data["CustomerNotes"] == (full["customers"][0]["notes"] or "")  # listings lack it; GET by id has it
    assert data["StaffMembers"][0]["DisplayName"]  # names resolved from the staff list
    missing = call(app_host, sandbox, "GET", "appointments/AAMkNoSuchAppointment=")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "AppointmentNotFound"
    # Graph answers 400 for an id it cannot parse: still no such appointment, never a 5xx.
    sandbox.add_fault(method="GET", path="*/appointments/not-an-id", status=400, code="ErrorInvalidIdMalformed")
    malformed = call(app_host, sandbox, "GET", "appointments/not-an-id")
    assert malformed.status_code == 404 and malformed.json()["error"]["code"] == "AppointmentNotFound"


def test_list_appointments_pages_with_next_links(app_host, sandbox) -> None:
    start, end = in_a_week()
    expected = [a["id"] for a in graph(sandbox, f"calendarView?start={start}&end={end}")["value"]]
    assert len(expected) >= 3
    url, seen, pages = f"appointments?startDateTime={start}&endDateTime={end}&top=2", [], 0
    while url:
        page = call(app_host, sandbox, "GET", url, "member@contoso.test")
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["value"]) <= 2
        for item in body["value"]:
            assert_valid(item)
        seen += [a["AppointmentId"] for a in body["value"]]
        url, pages = body.get("nextLink"), pages + 1
        assert url is None or url.startswith(app_host.url)  # Power Automate follows it with the connection
    assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen))
    assert pages == (len(expected) + 1) // 2
    bad = call(app_host, sandbox, "GET", f"appointments?startDateTime={end}&endDateTime={start}")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "InvalidRequest"


def booking(service: dict, **fields) -> dict:
    start = (datetime.now(UTC) + timedelta(days=3)).replace(hour=10, minute=0, second=0, microsecond=0)
    return {"serviceId": service["id"], "startDateTime": start.isoformat().replace("+00:00", "Z"),
            "customerName": "Grace Hopper", "customerEmail": "grace@example.test", "customerNotes": "first visit",
            **fields}


def test_a_scheduler_books_an_appointment(app_host, sandbox) -> None:
    consult = services(sandbox)["Initial consultation"]
    member = next(iter(consult["staffMemberIds"]))
    created = call(app_host, sandbox, "POST", "appointments", "scheduler@contoso.test",
                   json=booking(consult, staffMemberId=member, serviceNotes="bring the forms"))
    assert created.status_code == 201, created.text
    data = created.json()
    assert_valid(data)
    assert data["CustomerName"] == "Grace Hopper" and data["CustomerNotes"] == "first visit"
    assert data["Duration"] == 30 and data["ServiceName"] == "Initial consultation"  # the service's length
    assert [m["Id"] for m in data["StaffMembers"]] == [member] and data["ServiceNotes"] == "bring the forms"
    stored = graph(sandbox, f"appointments/{data['AppointmentId']}")
    assert stored["customers"][0]["emailAddress"] == "grace@example.test"
    # The app created it app-only, with a write permission the create page lists.
    posts = [r for r in sandbox.requests(method="POST") if r["path"].endswith("/appointments")]
    assert len(posts) == 1


@pytest.mark.parametrize(("upn", "status", "code"), [
    ("viewer@contoso.test", 403, "BookingsRoleNotAllowed"),
    ("member@contoso.test", 403, "BookingsRoleNotAllowed"),
    ("outsider@contoso.test", 403, "BookingsRoleNotAllowed"),
    (None, 401, "Unauthenticated"),
])
def test_who_may_not_book_is_refused_in_the_json_shape(app_host, sandbox, upn, status, code) -> None:
    response = call(app_host, sandbox, "POST", "appointments", upn, json=booking(services(sandbox)[
        "Initial consultation"]), headers={"Accept-Language": "ja"} if upn else None)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["remedy"] and error["correlationId"]
    assert not [r for r in sandbox.requests(method="POST") if r["path"].endswith("/appointments")]


def test_a_group_service_books_known_customers_and_adds_new_ones(app_host, sandbox) -> None:
    """Bookings books only customers it knows into a service taking several (the create page): the action looks
    the customer up by email, and adds one it does not know yet."""
    group = services(sandbox)["Group wellness class"]
    known = graph(sandbox, "customers")["value"][0]
    before = len(graph(sandbox, "customers")["value"])
    booked = call(app_host, sandbox, "POST", "appointments", json=booking(group, customerEmail=known["emailAddress"]))
    assert booked.status_code == 201, booked.text
    assert booked.json()["Customers"][0]["Id"] == known["id"]  # looked up by email
    assert len(graph(sandbox, "customers")["value"]) == before
    new = call(app_host, sandbox, "POST", "appointments", json=booking(group, customerEmail="new@example.test",
                                                                       customerName="Nova Newcomer"))
    assert new.status_code == 201, new.text
    (customer,) = [c for c in graph(sandbox, "customers")["value"] if c["emailAddress"] == "new@example.test"]
    assert customer["displayName"] == "Nova Newcomer" and new.json()["Customers"][0]["Id"] == customer["id"]
    assert new.json()["Customers"][0]["Name"] == "Nova Newcomer"


def test_what_bookings_refuses_says_why(app_host, sandbox) -> None:
    group = services(sandbox)["Group wellness class"]
    nobody = call(app_host, sandbox, "POST", "appointments", json=booking(group, customerEmail=""))
    assert nobody.status_code == 400 and nobody.json()["error"]["code"] == "AppointmentRejected"
    for body in ({"serviceId": "no-such-service", "startDateTime": "2030-01-01T09:00:00Z"},
                 booking(group, endDateTime="2000-01-01T00:00:00Z"), {"startDateTime": "soon"}):
        refused = call(app_host, sandbox, "POST", "appointments", json=body)
        assert refused.status_code == 400 and refused.json()["error"]["code"] in ("AppointmentRejected",
                                                                                 "InvalidRequest"), body


def test_without_the_write_permission_the_error_says_which(app_host, sandbox) -> None:
    # The app's grant without ENABLE_CANCEL_WITH_REASON: Graph's own permission check refuses the create.
    sandbox.control("POST", f"/apps/{DEFAULT_CLIENT_ID}/roles", {"roles": list(APP_READ_ROLES)})
    response = call(app_host, sandbox, "POST", "appointments", json=booking(services(sandbox)["Initial consultation"]))
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "GraphPermissionMissing"
    assert "BookingsAppointment.ReadWrite.All" in response.json()["error"]["remedy"]
