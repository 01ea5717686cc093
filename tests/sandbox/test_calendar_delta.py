"""``/users/{id}/calendarView/delta`` as Graph documents it: rounds, paging, ``@removed``, 410 for a lost token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from graph_sandbox import SandboxServer

CLINIC = "clinic@contoso.test"
START = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
END = (datetime.now(UTC) + timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _round(graph: httpx.Client, url: str, **headers: str) -> tuple[list[dict[str, Any]], str, int]:
    """Every item of a round, its deltaLink and how many requests it took."""
    items, requests = [], 0
    while True:
        r = graph.get(url, headers=headers)
        requests += 1
        assert r.status_code == 200, r.text
        body = r.json()
        assert not ("@odata.nextLink" in body and "@odata.deltaLink" in body)
        items += body["value"]
        if "@odata.deltaLink" in body:
            return items, body["@odata.deltaLink"], requests
        url = body["@odata.nextLink"]


def _first(graph: httpx.Client, **headers: str) -> tuple[list[dict[str, Any]], str, int]:
    return _round(graph, f"/users/{CLINIC}/calendarView/delta?startDateTime={START}&endDateTime={END}", **headers)


def test_a_full_round_pages_then_an_unchanged_calendar_answers_one_empty_page(sb: SandboxServer, graph) -> None:
    listed = graph.get(f"/users/{CLINIC}/calendarView", params={"startDateTime": START, "endDateTime": END}).json()
    items, delta_link, requests = _first(graph, Prefer="odata.maxpagesize=2")
    assert {e["id"] for e in items} == {e["id"] for e in listed["value"]} and len(items) == 4
    assert requests == 2  # pages of two, the last with the deltaLink
    assert "$deltatoken=" in delta_link and "startDateTime" not in delta_link  # the window is in the token
    again, _, requests = _round(graph, delta_link)
    assert (again, requests) == ([], 1)


def test_changes_and_removals_since_the_token(sb: SandboxServer, graph) -> None:
    _, delta_link, _ = _first(graph)
    staff_meeting = sb.control("POST", f"mailboxes/{CLINIC}/events", {
        "subject": "Staff meeting", "start": "2027-06-01T09:00:00", "end": "2027-06-01T10:00:00"})
    business = f"/solutions/bookingBusinesses/{CLINIC}"
    appointments = graph.get(f"{business}/appointments").json()["value"]
    cancelled = appointments[0]["id"]
    events_before = {e["id"] for e in _first(graph)[0]}
    assert graph.post(f"{business}/appointments/{cancelled}/cancel", json={"cancellationMessage": "x"}).status_code \
        == 204
    changes, next_link, _ = _round(graph, delta_link)
    removed = [c for c in changes if "@removed" in c]
    assert [c["id"] for c in changes if "@removed" not in c] == [staff_meeting["id"]]
    assert len(removed) == 1 and removed[0]["@removed"] == {"reason": "deleted"}
    assert removed[0]["id"] in events_before and removed[0]["id"] not in {e["id"] for e in _first(graph)[0]}
    assert _round(graph, next_link)[0] == []


def test_a_token_the_service_dropped_answers_410(sb: SandboxServer, graph) -> None:
    _, delta_link, _ = _first(graph)
    sb.control("POST", "delta", {"expireMailbox": CLINIC})
    r = graph.get(delta_link)
    assert r.status_code == 410 and r.json()["error"]["code"] == "SyncStateNotFound"


def test_the_token_cache_is_bounded_per_mailbox(sb: SandboxServer, graph) -> None:
    _, oldest, _ = _first(graph)
    for _ in range(3):  # the default cache keeps three tokens per mailbox
        _first(graph)
    assert graph.get(oldest).status_code == 410


def test_a_window_is_required_select_is_refused_and_calendars_read_is_needed(sb: SandboxServer, graph) -> None:
    assert graph.get(f"/users/{CLINIC}/calendarView/delta").status_code == 400
    r = graph.get(f"/users/{CLINIC}/calendarView/delta?startDateTime={START}&endDateTime={END}&$select=subject")
    assert r.status_code == 400
    sb.control("POST", "apps/a99b0000-0000-4000-8000-000000000002/roles", {"roles": ["Bookings.Read.All"]})
    plain = httpx.get(f"{sb.graph_url}/users/{CLINIC}/calendarView/delta?startDateTime={START}&endDateTime={END}",
                      headers=sb.graph_headers(), trust_env=False)
    assert plain.status_code == 403
