"""*Create an appointment* within bounds and safe to retry, through the local host with Graph = the sandbox (real
HTTP both ways). Issue 25: a probe booking in year 1 made the business unreadable; a create Graph stored but did
not answer was booked again by Power Automate's retry; a taken slot was answered 500."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.test_actions import booking, call, graph, in_a_week, services

CREATE = "*/appointments"


def posts(sandbox) -> list[dict]:
    return [r for r in sandbox.requests(method="POST") if r["path"].endswith("/appointments")]


def booked_for(sandbox, email: str) -> list[str]:
    """Ids of the clinic's appointments whose customer is ``email`` (read by id: listings omit customers)."""
    ids = [a["id"] for a in graph(sandbox, "appointments")["value"]]
    return [i for i in ids if any(c.get("emailAddress") == email for c in graph(sandbox, f"appointments/{i}")
                                  .get("customers") or [])]


def error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code and body["message"] and body["remedy"] and body["correlationId"]
    return body


@pytest.mark.parametrize(("fields", "named"), [
    ({"startDateTime": "0001-01-01T00:00:00Z"}, "startDateTime"),
    ({"endDateTime": "2126-01-01T00:00:00Z"}, "endDateTime"),  # a 100-year length
    ({"startDateTime": "9999-12-31T23:00:00Z"}, "startDateTime"),
    ({"customerName": "Ada\u0000"}, "customerName"),
])
def test_a_probe_booking_is_refused_before_graph_and_the_business_stays_readable(app_host, sandbox, fields,
                                                                                  named) -> None:
    refused = call(app_host, sandbox, "POST", "appointments", json=booking(services(sandbox)["Initial consultation"],
                                                                           **fields))
    assert named in error(refused, 400, "InvalidRequest")["message"]
    assert posts(sandbox) == []
    start, end = in_a_week()
    for upn in ("admin@contoso.test", "viewer@contoso.test"):
        listed = call(app_host, sandbox, "GET", f"appointments?startDateTime={start}&endDateTime={end}", upn)
        assert listed.status_code == 200, listed.text


def test_a_create_graph_stored_without_answering_is_found_not_booked_again(app_host, sandbox) -> None:
    request = booking(services(sandbox)["Initial consultation"], customerEmail="lost@example.test")
    request["startDateTime"] = request["startDateTime"].replace(":00Z", ":00.250Z")  # Graph keeps whole seconds
    # Graph stores the appointment, then answers 500: the app looks, finds it, and answers 201.
    sandbox.add_fault(method="POST", path=CREATE, status=500, afterHandler=True)
    first = call(app_host, sandbox, "POST", "appointments", json=request)
    assert first.status_code == 201, first.text
    assert booked_for(sandbox, "lost@example.test") == [first.json()["AppointmentId"]]
    # Power Automate resends the same request: answered with the same appointment, Graph not asked to book.
    again = call(app_host, sandbox, "POST", "appointments", json=request)
    assert again.status_code == 201 and again.json()["AppointmentId"] == first.json()["AppointmentId"]
    assert len(posts(sandbox)) == 1


def test_when_graph_could_not_even_be_asked_the_retry_looks_before_it_books(app_host, sandbox) -> None:
    request = booking(services(sandbox)["Initial consultation"], customerEmail="unsure@example.test")
    sandbox.add_fault(method="POST", path=CREATE, afterHandler=True)  # stored, then a gateway timeout
    sandbox.add_fault(method="GET", path="*/calendarView", status=503, count=10)  # and no look is possible
    first = call(app_host, sandbox, "POST", "appointments", json=request)
    error(first, 503, "AppointmentNotBooked")
    assert int(first.headers["Retry-After"]) >= 1
    sandbox.control("DELETE", "faults")
    retried = call(app_host, sandbox, "POST", "appointments", json=request)
    assert retried.status_code == 201, retried.text
    assert booked_for(sandbox, "unsure@example.test") == [retried.json()["AppointmentId"]]
    assert len(posts(sandbox)) == 1  # found by the look, not booked a second time


def test_an_idempotency_key_books_once_and_is_never_reused_for_another_booking(app_host, sandbox) -> None:
    consult = services(sandbox)["Initial consultation"]
    request = booking(consult, customerEmail="keyed@example.test")
    key = {"Idempotency-Key": "run-08585-item-3"}
    first = call(app_host, sandbox, "POST", "appointments", json=request, headers=key)
    second = call(app_host, sandbox, "POST", "appointments", json=request, headers=key)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["AppointmentId"] == second.json()["AppointmentId"] and len(posts(sandbox)) == 1
    other = call(app_host, sandbox, "POST", "appointments", json={**request, "customerNotes": "other"}, headers=key)
    error(other, 422, "IdempotencyKeyReused")
    # Distinct keys are distinct bookings, even of the same thing (a flow booking two seats on purpose).
    group = services(sandbox)["Group wellness class"]
    seats = [call(app_host, sandbox, "POST", "appointments", json=booking(group, customerEmail="seats@example.test"),
                  headers={"Idempotency-Key": f"seat-{n}"}) for n in (1, 2)]
    assert [s.status_code for s in seats] == [201, 201]
    assert seats[0].json()["AppointmentId"] != seats[1].json()["AppointmentId"]
    bad = call(app_host, sandbox, "POST", "appointments", json=request, headers={"Idempotency-Key": "a b\tc"})
    error(bad, 400, "InvalidRequest")


def test_graphs_refusals_say_whether_retrying_helps_in_english_and_japanese(app_host, sandbox) -> None:
    consult = services(sandbox)["Initial consultation"]
    member = next(iter(consult["staffMemberIds"]))
    taken = booking(consult, staffMemberId=member, customerEmail="first@example.test")
    assert call(app_host, sandbox, "POST", "appointments", json=taken).status_code == 201
    # The same slot and staff member again: Graph answers 500 (as users report), the app sees the slot taken.
    sandbox.add_fault(method="POST", path=CREATE, status=500)
    clash = call(app_host, sandbox, "POST", "appointments", json={**taken, "customerEmail": "second@example.test"},
                 headers={"Accept-Language": "ja"})
    assert "再送しても結果は変わりません" in error(clash, 409, "AppointmentSlotTaken")["remedy"]
    sandbox.add_fault(method="POST", path=CREATE, status=409, message="The staff member is busy.")
    conflict = call(app_host, sandbox, "POST", "appointments", json=booking(consult, customerEmail="c@example.test"))
    assert "will not help" in error(conflict, 409, "AppointmentSlotTaken")["remedy"]
    sandbox.add_fault(method="POST", path=CREATE, status=400, message="Outside business hours.")
    rejected = call(app_host, sandbox, "POST", "appointments", json=booking(consult, customerEmail="r@example.test"))
    assert "will not help" in error(rejected, 400, "AppointmentRejected")["remedy"]
    # A 500 right after the taken one (it ends as this starts): the slot is free, so retrying helps.
    sandbox.add_fault(method="POST", path=CREATE, status=500)
    adjacent = call(app_host, sandbox, "POST", "appointments", json={
        **taken, "customerEmail": "next@example.test", "startDateTime": taken["startDateTime"][:11] + "10:30:00Z"})
    error(adjacent, 503, "AppointmentNotBooked")
    # A 500 on a free slot, and throttling: nothing booked, retrying helps (and then books once).
    free = booking(consult, customerEmail="free@example.test", startDateTime=taken["startDateTime"][:11] + "14:00:00Z")
    for status in (500, 429):
        sandbox.add_fault(method="POST", path=CREATE, status=status, retryAfter=3)
        refused = call(app_host, sandbox, "POST", "appointments", json=free, headers={"Accept-Language": "ja"})
        assert "再試行すると解決します" in error(refused, 503, "AppointmentNotBooked")["remedy"]
        assert refused.headers["Retry-After"] == "3"
    retried = call(app_host, sandbox, "POST", "appointments", json=free)
    assert retried.status_code == 201, retried.text
    assert booked_for(sandbox, "free@example.test") == [retried.json()["AppointmentId"]]


def test_the_same_booking_sent_twice_at_once_is_made_once(app_host, sandbox) -> None:
    request = booking(services(sandbox)["Initial consultation"], customerEmail="twice@example.test")
    sandbox.add_fault(method="POST", path=CREATE, latencyMs=1500)  # the first is still booking when the second comes
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: call(app_host, sandbox, "POST", "appointments", json=request), range(2)))
    assert sorted(a.status_code for a in answers) == [201, 429], [a.text for a in answers]
    busy = next(a for a in answers if a.status_code == 429)
    error(busy, 429, "AppointmentBookingInProgress")
    assert int(busy.headers["Retry-After"]) >= 1  # Power Automate retries a 429 after it
    made = next(a for a in answers if a.status_code == 201).json()["AppointmentId"]
    retried = call(app_host, sandbox, "POST", "appointments", json=request)
    assert retried.status_code == 201 and retried.json()["AppointmentId"] == made
    assert booked_for(sandbox, "twice@example.test") == [made] and len(posts(sandbox)) == 1
