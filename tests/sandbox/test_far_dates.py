"""Appointments at the ends of the calendar: the sandbox writes every time as Graph does (a four-digit year), so
one appointment in year 1 or 9999 leaves its business readable. Issue 25: a probe booking in year 1 was stored as
"1-01-01T…", which the sandbox's own calendarView could not read back, and every listing of the business failed."""

from __future__ import annotations

import httpx
import pytest

B = "/solutions/bookingBusinesses/clinic@contoso.test"


@pytest.mark.parametrize(("start", "end"), [("0001-01-01T00:00:00", "0001-01-01T00:30:00"),
                                            ("0999-06-01T10:00:00", "0999-06-01T10:30:00"),
                                            ("2030-01-01T00:00:00", "2130-01-01T00:00:00"),
                                            ("9999-12-31T23:00:00", "9999-12-31T23:30:00")])
def test_an_appointment_at_the_ends_of_the_calendar_leaves_its_business_readable(graph: httpx.Client, start: str,
                                                                                   end: str) -> None:
    service = next(s for s in graph.get(f"{B}/services").json()["value"] if s["maximumAttendeesCount"] == 1)
    created = graph.post(f"{B}/appointments", json={
        "serviceId": service["id"], "startDateTime": {"dateTime": start, "timeZone": "UTC"},
        "endDateTime": {"dateTime": end, "timeZone": "UTC"}})
    assert created.status_code == 201, created.text
    assert created.json()["startDateTime"]["dateTime"] == f"{start}.0000000Z"
    for window in ("start=2026-01-01T00:00:00Z&end=2031-01-01T00:00:00Z",
                   "start=0001-01-01T00:00:00Z&end=9999-12-31T23:59:59Z"):
        listed = graph.get(f"{B}/calendarView?{window}")
        assert listed.status_code == 200, listed.text
    assert created.json()["id"] in {a["id"] for a in listed.json()["value"]}
    assert graph.get(f"{B}/appointments/{created.json()['id']}").status_code == 200
