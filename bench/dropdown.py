"""The business dropdown (*GetBusinessesAsAdmin*) at 10, 100 and 1,000 businesses: latency and Graph calls.

Real HTTP through two local hosts (``python -m devhost`` running function_app: two instances sharing one
Azurite), the Graph sandbox as Graph and Entra ID. The tenant is the demo's two businesses plus clones of the
clinic (``POST /_sandbox/businesses``), every one administered by ``admin@contoso.test``, who opens the
dropdown: ``GET /api/v1/bookingBusinessesUserAsAdmin``. Per size, on a fresh index and fresh hosts:

- first call (host A): the index is empty, so the call reads each listed business's staff list once (app-only,
  8 at a time) into it;
- warm, other instance (host B): the index is shared, B's caches are empty: exchange, listing, ``/me``;
- warm, cached (host B again): within the 60 s listing cache, no Graph call;
- the refresh timer's run (this process): every staff list re-read, paced at 10 a second;
- baseline: the same route without a token (401: host + routing + error body), for the ratios.

Graph calls are the sandbox's request log (token requests included). Graph lists at most 500 businesses
(documented, not paged), so at 1,000 the dropdown knows the 500 Graph lists (and any with flows).

With ``--staff`` the call is the actions' dropdown instead (*GetBusinessesAsStaff*,
``/api/v1/bookingBusinessesUserAsStaff``): the same index and the same staff list reads.

    python -m bench.dropdown [--sizes 10,100,1000] [--warm 5] [--staff]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx

from bench._stack import ADMIN, QUEUE_FUNCTIONS, TIMER_FUNCTIONS, disabled, percentile, print_table, stack

ROUTE = "/api/v1/bookingBusinessesUserAsAdmin"
STAFF_ROUTE = "/api/v1/bookingBusinessesUserAsStaff"


def _graph_calls(entries: list[dict[str, Any]]) -> tuple[int, int]:
    """(all Graph and token calls, of which staff listings) in a slice of the sandbox's request log."""
    calls = [e for e in entries if not e["path"].startswith("/_sandbox")]
    return len(calls), sum(1 for e in calls if e["path"].lower().endswith("/staffmembers"))


def _call(url: str, token: str | None) -> tuple[float, int, int]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    started = time.perf_counter()
    response = httpx.get(url + ROUTE, headers=headers, timeout=120, trust_env=False)
    seconds = time.perf_counter() - started
    count = len(response.json().get("mailboxes", [])) if response.status_code == 200 else 0
    return seconds, response.status_code, count


def _measured(s: Any, url: str, token: str | None) -> dict[str, Any]:
    seq = _last_seq(s)
    seconds, status, count = _call(url, token)
    calls, staff = _graph_calls(s.sandbox.requests_since(seq))
    return {"ms": seconds * 1000, "status": status, "listed": count, "calls": calls, "staff": staff}


def _last_seq(s: Any) -> int:
    entries = s.sandbox.control("GET", "requests")["value"]
    return int(entries[-1]["seq"]) if entries else 0


def _in_process(work: Any) -> Any:
    """Run app code in this process on a loop of its own, its storage clients closed afterwards."""
    from shared.adapters.storage import get_store

    async def run() -> Any:
        try:
            return await work()
        finally:
            await get_store().close()

    return asyncio.run(run())


def _refresh(s: Any) -> dict[str, Any]:
    from shared.workers import directory_refresh

    seq = _last_seq(s)
    started = time.perf_counter()
    report = _in_process(directory_refresh.refresh_administrators)
    seconds = time.perf_counter() - started
    calls, staff = _graph_calls(s.sandbox.requests_since(seq))
    return {"ms": seconds * 1000, "status": "-", "listed": len(report.read), "calls": calls, "staff": staff}


def _clear_index() -> None:
    from shared.records import business_admins

    async def clear() -> None:
        await business_admins.forget(await business_admins.read_all())

    _in_process(clear)


def _size(s: Any, size: int, warm: int) -> list[list[Any]]:
    s.sandbox.control("POST", "seed")
    s.sandbox.clone_businesses([f"bench-{i:04d}@contoso.test" for i in range(size - 2)])
    _clear_index()
    quiet = disabled(*QUEUE_FUNCTIONS, *TIMER_FUNCTIONS)
    a, b = s.start_host(**quiet), s.start_host(**quiet)
    try:
        token = s.sandbox.user_token(ADMIN)
        base = [_call(b.url, None)[0] for _ in range(warm)]
        first = _measured(s, a.url, token)
        other = _measured(s, b.url, token)
        cached = [_measured(s, b.url, token) for _ in range(warm)]
        refresh = _refresh(s)
    finally:
        a.stop()
        b.stop()
    base_ms = percentile(base, 50) * 1000
    cached_ms = percentile([c["ms"] for c in cached], 50)
    rows = []
    for name, m in (("first call (empty index)", first), ("warm, other instance", other),
                    ("warm, cached (p50)", {**cached[-1], "ms": cached_ms}), ("refresh run (timer)", refresh)):
        rows.append([size, name, m["status"], m["listed"], m["calls"], m["staff"], round(m["ms"], 1),
                     round(m["ms"] / base_ms, 1)])
    rows.append([size, "baseline: 401 (no token, p50)", 401, 0, 0, 0, round(base_ms, 1), 1.0])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dropdown", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000", help="businesses in the tenant, comma-separated")
    parser.add_argument("--warm", type=int, default=5, help="cached calls (and baseline calls) per size")
    parser.add_argument("--staff", action="store_true", help="the actions' dropdown (GetBusinessesAsStaff)")
    args = parser.parse_args(argv)
    if args.staff:
        global ROUTE
        ROUTE = STAFF_ROUTE
    sizes = [int(x) for x in args.sizes.split(",")]

    rows: list[list[Any]] = []
    with stack() as s:
        assert s.sandbox is not None
        s.use_in_process()  # the refresh timer's run, and clearing the index, from this process
        for size in sizes:
            rows += _size(s, size, args.warm)
    print("two local hosts (one process each) sharing Azurite in memory, Graph sandbox in its own process")
    print_table(["businesses", "call", "status", "listed", "Graph calls", "staff reads", "ms", "ms/base"], rows)
    print("listed: businesses in the answer (the refresh: staff lists read); Graph calls include token requests; "
          "base = p50 of the 401 baseline on the same host")


if __name__ == "__main__":
    main()
