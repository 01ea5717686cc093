"""*List appointments* paged by a cursor, Graph = the sandbox over real HTTP, the route called as the Functions
runtime calls it: every appointment exactly once across pages whatever is booked or cancelled between two page
requests, Graph's calendar read in windows from the cursor (calls per page the same for a month's range as for
half a year's), and a nextLink that was changed is a 400 in the JSON shape, never a 5xx or another listing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
import httpx
import pytest

from shared.endpoints.appointments import APPOINTMENTS_ROUTE, appointments
from shared.services import bookings, bookings_directory

CLINIC = "clinic@contoso.test"
BASE = "http://127.0.0.1:7071/api/"
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=30)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def listing(clean_env, sandbox):
    bookings_directory.forget_cached()
    bookings.forget_cached()
    token = sandbox.user_token("viewer@contoso.test")

    async def page(params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        path = APPOINTMENTS_ROUTE.replace("{smtp}", CLINIC)
        response = await appointments(func.HttpRequest("GET", BASE + path, headers={"authorization": f"Bearer {token}"},
                                                       params=params, route_params={"smtp": CLINIC}, body=b""))
        return response.status_code, json.loads(response.get_body())
    return page


def graph(sandbox) -> httpx.Client:
    return httpx.Client(base_url=f"{sandbox.graph_url}/solutions/bookingBusinesses/{CLINIC}",
                        headers=sandbox.graph_headers(), timeout=30)


def book(client: httpx.Client, service_id: str, start: datetime, minutes: int = 30) -> str:
    created = client.post("/appointments", json={
        "serviceId": service_id, "startDateTime": {"dateTime": iso(start)[:-1], "timeZone": "UTC"},
        "endDateTime": {"dateTime": iso(start + timedelta(minutes=minutes))[:-1], "timeZone": "UTC"},
        "customers": [{"@odata.type": "#microsoft.graph.bookingCustomerInformation", "name": "Page Test"}]})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def next_params(link: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(link).query))


def calendar_views(sandbox) -> list[dict]:
    return [r for r in sandbox.requests(method="GET") if r["path"].endswith("/calendarView")]


async def test_every_appointment_once_across_pages_while_bookings_land_between_them(listing, sandbox) -> None:
    with graph(sandbox) as client:
        service = client.get("/services").json()["value"][0]["id"]
        first = [book(client, service, DAY + timedelta(hours=h)) for h in range(8, 18)]
        params = {"startDateTime": iso(DAY), "endDateTime": iso(DAY + timedelta(days=1)), "top": "3"}
        status, body = await listing(params)
        assert status == 200, body
        seen = [a["AppointmentId"] for a in body["value"]]
        # Between two page requests: one booked before the cursor (skip-based paging would show the third
        # appointment again), one after it, and one not yet listed cancelled.
        early = book(client, service, DAY + timedelta(hours=7))
        late = book(client, service, DAY + timedelta(hours=17, minutes=30))
        assert client.post(f"/appointments/{first[5]}/cancel", json={"cancellationMessage": "x"}).status_code == 204
        pages = 1
        while "nextLink" in body:
            status, body = await listing(next_params(body["nextLink"]))
            assert status == 200, body
            seen += [a["AppointmentId"] for a in body["value"]]
            pages += 1
    assert len(seen) == len(set(seen)), seen  # nobody twice
    assert seen == [*first[:5], *first[6:], late] and early not in seen  # in start order, each once
    assert pages <= 5


async def test_graph_calls_per_page_do_not_grow_with_the_range(listing, sandbox) -> None:
    """One appointment every sixth day for 180 days: the first page of a 30-day range and of a 180-day range read
    the same calendar views, each a window from the cursor on (a whole-range listing reads the half year for every
    page)."""
    with graph(sandbox) as client:
        service = client.get("/services").json()["value"][0]["id"]
        for day in range(0, 180, 6):
            book(client, service, DAY + timedelta(days=day, hours=10))
    counts = {}
    for days in (30, 180):
        sandbox.control("DELETE", "requests")
        params = {"startDateTime": iso(DAY), "endDateTime": iso(DAY + timedelta(days=days)), "top": "5"}
        status, body = await listing(params)
        assert status == 200 and body["value"] and body["nextLink"], body
        views = calendar_views(sandbox)
        counts[days] = len(views)
        for view in views:  # each a window from the cursor on, never the whole range
            query = dict(parse_qsl(view["query"]))
            span = datetime.fromisoformat(query["end"]) - datetime.fromisoformat(query["start"])
            assert span < timedelta(days=30), query
    assert counts[30] == counts[180] <= 3
    # The whole half year, page by page: every page bounded, every appointment once.
    sandbox.control("DELETE", "requests")
    params = {"startDateTime": iso(DAY), "endDateTime": iso(DAY + timedelta(days=180)), "top": "50"}
    seen, pages = [], 0
    while params:
        status, body = await listing(params)
        assert status == 200, body
        seen += [a["AppointmentId"] for a in body["value"]]
        pages += 1
        params = next_params(body["nextLink"]) if "nextLink" in body else {}
    assert len(seen) == len(set(seen)) == 30
    assert len(calendar_views(sandbox)) <= 3 * pages


async def test_a_changed_cursor_is_an_invalid_request(listing, sandbox) -> None:
    with graph(sandbox) as client:
        service = client.get("/services").json()["value"][0]["id"]
        for h in range(8, 12):
            book(client, service, DAY + timedelta(hours=h))
    status, body = await listing({"startDateTime": iso(DAY), "endDateTime": iso(DAY + timedelta(days=1)),
                                  "top": "2"})
    assert status == 200
    good = next_params(body["nextLink"])
    cursor = good["after"]
    flipped = cursor[:5] + ("A" if cursor[5] != "A" else "B") + cursor[6:]
    for changed in ({"after": flipped}, {"after": cursor + "x"}, {"after": "not a cursor"}, {"after": "%00"},
                    {"endDateTime": iso(DAY + timedelta(days=2))}, {"top": "3"}, {"after": "eyJ9"},
                    {"after": "WyIyMDMwLTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwiIiw5OTk5OTk5OTk5OTk5OTk5OTk5OTksIngiXQ"}):
        status, refused = await listing(good | changed)
        assert status == 400, (changed, refused)
        error = refused["error"]
        assert error["code"] == "InvalidRequest" and "after" in error["message"] and error["correlationId"]
    assert (await listing(good))[0] == 200
