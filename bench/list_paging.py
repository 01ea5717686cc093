"""*List appointments* paged by a cursor: Graph calls per page at a week's range and at a year's, same run.

Real HTTP through the local host (``python -m devhost``), the Graph sandbox as Graph and Entra ID. The demo
clinic gets ``--per-day`` appointments a day for a year (booked straight in the sandbox); a viewer then pages
through *List appointments* (``top`` 20) over the next 7 days and over the next 366 days, following ``nextLink``
as Power Automate does (a 429 from the callers' share of the mailbox is waited out for its ``Retry-After``, and
its calls count for the page). Per range: pages, Graph calls per page (the app's requests in the sandbox's log, token
requests left out), of which calendar views, and the first page's calls; the ratio year / week is what the cursor
is for (1.0: a page costs the same whatever the range).

Baseline, same run: what a page cost when every page listed the whole range (the issue's "each page re-lists the
whole date range"): the calendar view of the range, every Graph page of it, read by this process.

    python -m bench.list_paging [--per-day 1]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from bench._stack import TIMER_FUNCTIONS, disabled, print_table, stack

CLINIC = "clinic@contoso.test"
VIEWER = "viewer@contoso.test"


def _book_a_year(sandbox: Any, per_day: int, first: datetime) -> int:
    headers = sandbox.graph_headers()
    base = f"{sandbox.graph_url}/solutions/bookingBusinesses/{CLINIC}"
    with httpx.Client(base_url=base, headers=headers, timeout=60, trust_env=False) as graph:
        service = graph.get("/services").json()["value"][0]["id"]
        booked = 0
        for day in range(366):
            for n in range(per_day):
                start = first + timedelta(days=day, hours=8 + 2 * n)
                graph.post("/appointments", json={
                    "serviceId": service,
                    "startDateTime": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                    "endDateTime": {"dateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"),
                                    "timeZone": "UTC"}}).raise_for_status()
                booked += 1
    return booked


def _page_through(sandbox: Any, host_url: str, first: datetime, days: int) -> dict[str, Any]:
    token = sandbox.user_token(VIEWER)
    url: str | None = (f"{host_url}/api/v1/bookingBusinesses/{quote(CLINIC, safe='@')}/appointments?"
                       f"startDateTime={first.isoformat().replace('+00:00', 'Z')}&"
                       f"endDateTime={(first + timedelta(days=days)).isoformat().replace('+00:00', 'Z')}&top=20")
    pages, items, calls, views, first_page, refused = 0, 0, 0, 0, 0, 0
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=120, trust_env=False) as client:
        while url:
            seq = _last_seq(sandbox)
            response = client.get(url)
            log = [e for e in sandbox.requests_since(seq) if e["path"].startswith("/v1.0")]
            calls += len(log)  # a refused page's calls too: they are the page's cost
            views += sum(1 for e in log if e["path"].endswith("/calendarView"))
            if response.status_code == 429:  # the callers' share of the mailbox: wait as Power Automate does
                refused += 1
                time.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            response.raise_for_status()
            body = response.json()
            first_page = first_page or len(log)
            pages, items = pages + 1, items + len(body["value"])
            url = body.get("nextLink")
    return {"pages": pages, "items": items, "calls": calls, "views": views, "first": first_page, "refused": refused}


def _whole_range_views(sandbox: Any, first: datetime, days: int) -> int:
    """Graph requests of one calendar view over the whole range (what each page cost before the cursor)."""
    url: str | None = (f"{sandbox.graph_url}/solutions/bookingBusinesses/{CLINIC}/calendarView?"
                       f"start={first.isoformat()}&end={(first + timedelta(days=days)).isoformat()}")
    requests = 0
    with httpx.Client(headers=sandbox.graph_headers(), timeout=60, trust_env=False) as graph:
        while url:
            requests += 1
            url = graph.get(url).json().get("@odata.nextLink")
    return requests


def _last_seq(sandbox: Any) -> int:
    entries = sandbox.control("GET", "requests")["value"]
    return int(entries[-1]["seq"]) if entries else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-day", type=int, default=1)
    args = parser.parse_args(argv)
    first = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=2)
    with stack() as s:
        assert s.sandbox is not None
        booked = _book_a_year(s.sandbox, args.per_day, first)
        host = s.start_host(**disabled("reconcile_mailbox", *TIMER_FUNCTIONS))
        rows, per_page = [], {}
        for days in (7, 366):
            s.sandbox.clear_request_log()
            got = _page_through(s.sandbox, host.url, first, days)
            whole = _whole_range_views(s.sandbox, first, days)
            per_page[days] = got["calls"] / got["pages"]
            rows.append([f"{days} days", got["items"], got["pages"], got["refused"], got["first"], per_page[days],
                         got["views"] / got["pages"], whole, 20 + whole])
        print(f"{booked} appointments over a year ({args.per_day} a day); top 20")
        print_table(["range", "appointments", "pages", "429s (waited)", "first page calls", "calls / page",
                     "views / page",
                     "whole-range view (calls)", "whole-range page (calls)"], rows)
        print(f"calls per page, year / week: {per_page[366] / per_page[7]:.2f}")


if __name__ == "__main__":
    main()
