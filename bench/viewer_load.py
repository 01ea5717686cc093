"""A viewer's *List appointments* loops against a real booking's delivery: the issue's scenario, measured.

Real HTTP through the local host (``python -m devhost``, every queue function on, timers off), the Graph sandbox as
Graph and Entra ID in its own process, with Outlook's per app and mailbox limits on (its default: 4 concurrent
requests, 10,000 in 10 minutes). The demo clinic gets ``--appointments`` bookings spread over the next year and one
``AppointmentCreated`` flow (a receiver in this process stands in for Power Automate). Then, twice:

- quiet: ``--bookings`` appointments are booked in the sandbox, one every 2 s, and each one's delivery latency is
  timed (the sandbox's 201 → the flow receiving its AppointmentData);
- viewer load: the same while ``--loops`` loops of a viewer (``viewer@contoso.test``) list the whole year, 20 a
  page, following ``nextLink`` and starting over, as a flow's "Do until" would; a 429 is retried after its
  ``Retry-After``, as Power Automate does.

Figures: delivery latency p50 / max in each phase, and the ratio loaded / quiet (the baseline); the viewer's pages
and 429s from the app; Graph requests in the loaded phase and how many of them Graph throttled (429s in the
sandbox's log). Every Graph request takes ``--graph-latency-ms`` more (a latency fault; Graph's own latency is what
makes 4 concurrent requests a limit). ``--app-root`` runs the host from another checkout of the app (e.g.
``git archive <commit>`` unpacked), to measure the code before a change in the same way.

    python -m bench.viewer_load [--loops 8] [--bookings 8] [--appointments 400] [--graph-latency-ms 80]
                                [--app-root DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench._stack import ADMIN, TIMER_FUNCTIONS, disabled, flow_body, ms, percentile, print_table, stack, webhook_url
from bench.end_to_end import Receiver
from devhost.processes import free_port, wait_for_port

CLINIC = "clinic@contoso.test"
VIEWER = "viewer@contoso.test"


def _book(graph: httpx.Client, service: str, start: datetime, name: str) -> None:
    """Book in the sandbox as the app (the bench has one app registration, so the booking shares the mailbox's
    limits with the app: a 429 is waited out, and the delivery is timed from the 201)."""
    for _ in range(60):
        response = graph.post(f"/{CLINIC}/appointments", json={
            "serviceId": service, "customers": [{"name": name, "emailAddress": "viewer-load@example.test"}],
            "startDateTime": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "endDateTime": {"dateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"),
                            "timeZone": "UTC"}})
        if response.status_code != 429:
            response.raise_for_status()
            return
        time.sleep(float(response.headers.get("Retry-After", "1")))
    raise SystemExit("the sandbox throttled the bench's booking for a minute")


class Viewer:
    """``loops`` threads listing the year page by page until stopped; counts pages and 429s."""

    def __init__(self, url: str, token: str, loops: int) -> None:
        self.first_page, self.token, self.loops = url, token, loops
        self.pages = self.throttled = self.failed = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(loops)]

    def _loop(self) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {self.token}"}, timeout=120, trust_env=False) as c:
            url = self.first_page
            while not self.stop.is_set():
                response = c.get(url)
                with self.lock:
                    if response.status_code == 200:
                        self.pages += 1
                    elif response.status_code == 429:
                        self.throttled += 1
                    else:
                        self.failed += 1
                if response.status_code == 429:
                    self.stop.wait(float(response.headers.get("Retry-After", "1")))
                    continue
                url = (response.json().get("nextLink") if response.status_code == 200 else None) or self.first_page

    def __enter__(self) -> Viewer:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(150)


def _deliveries(graph: httpx.Client, receiver: Receiver, service: str, first: datetime, phase: str,
                count: int) -> list[float]:
    booked: dict[str, float] = {}
    for n in range(count):
        name = f"Viewer load {phase} {n}"
        _book(graph, service, first + timedelta(days=400 + n, hours=9), name)
        booked[name] = time.perf_counter()
        time.sleep(2)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with receiver.lock:
            if all(receiver.arrivals.get(name) for name in booked):
                break
        time.sleep(0.1)
    with receiver.lock:
        return [min(t for _, t in receiver.arrivals[name]) - at if receiver.arrivals.get(name) else float("inf")
                for name, at in booked.items()]


def _start_host(s: Any, app_root: Path | None) -> Any:
    settings = disabled(*TIMER_FUNCTIONS)
    if app_root is None:
        return s.start_host(**settings)
    from testing.hosting import HostProcess

    class OtherCheckout(HostProcess):
        """``python -m devhost`` run from ``app_root`` itself: its devhost imports its ``shared``, not ours."""

        def start(self, env: dict[str, str] | None = None) -> HostProcess:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "devhost", "--app-dir", str(self.app_dir), "--port", str(self.port)],
                cwd=self.app_dir, env={**os.environ, **self.env}, stdout=self.log_file.open("a"),
                stderr=subprocess.STDOUT)
            wait_for_port(self.port, timeout=30, process=self.process)
            return self

    port = free_port()
    env = s.app_settings(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", **settings)
    host = OtherCheckout(app_root.resolve(), port, env=env, log_dir=s.log_dir / "host-other")
    host.log_file.parent.mkdir(parents=True, exist_ok=True)
    s.hosts.append(host.start())
    return host


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.viewer_load", description=__doc__.splitlines()[0])
    parser.add_argument("--loops", type=int, default=8)
    parser.add_argument("--bookings", type=int, default=8)
    parser.add_argument("--appointments", type=int, default=400)
    parser.add_argument("--app-root", type=Path, default=None)
    parser.add_argument("--graph-latency-ms", type=int, default=80,
                        help="added to every Graph request (the sandbox answers in microseconds, Graph does not)")
    args = parser.parse_args(argv)
    first = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    with stack() as s, Receiver() as receiver:
        sb = s.sandbox
        assert sb is not None
        graph = httpx.Client(base_url=f"{sb.graph_url}/solutions/bookingBusinesses", headers=sb.graph_headers(),
                             timeout=60, trust_env=False)
        service = next(x["id"] for x in graph.get(f"/{CLINIC}/services").json()["value"]
                       if x["maximumAttendeesCount"] == 1)
        for n in range(args.appointments):  # spread over the year the viewer lists
            _book(graph, service, first + timedelta(hours=n * 365 * 24 // args.appointments), f"Existing {n}")
        if args.graph_latency_ms:  # in flight that long: what makes Outlook's 4 concurrent requests a limit
            sb.control("POST", "faults", {"path": "/v1.0/*", "latencyMs": args.graph_latency_ms, "count": None})
        host = _start_host(s, args.app_root)
        admin = {"Authorization": f"Bearer {sb.user_token(ADMIN)}"}
        httpx.post(webhook_url(host.url, CLINIC, "AppointmentCreated"), headers=admin, timeout=60,
                   json=flow_body(receiver.url("flow"), "AppointmentCreated")).raise_for_status()
        deadline = time.monotonic() + 180  # the baseline reconcile (what it reads is never delivered)
        while f"reconcile {CLINIC}: reconciled" not in host.log:
            if time.monotonic() > deadline:
                raise SystemExit("the baseline reconcile did not finish within 180 s")
            time.sleep(0.2)
        time.sleep(2)
        quiet = _deliveries(graph, receiver, service, first, "quiet", args.bookings)
        listing = (f"{host.url}/api/v1/bookingBusinesses/{CLINIC}/appointments?"
                   f"startDateTime={first.isoformat().replace('+00:00', 'Z')}&"
                   f"endDateTime={(first + timedelta(days=366)).isoformat().replace('+00:00', 'Z')}&top=20")
        sb.clear_request_log()
        began = time.perf_counter()
        with Viewer(listing, sb.user_token(VIEWER), args.loops) as viewer:
            time.sleep(3)  # the loops at full speed first
            loaded = _deliveries(graph, receiver, service, first + timedelta(days=100), "loaded", args.bookings)
        seconds = time.perf_counter() - began
        log = [e for e in sb.requests_since(0) if e["path"].startswith("/v1.0")]
        graph.close()
    throttled = sum(1 for e in log if e["status"] == 429)
    rows = [[name, len(v), sum(1 for x in v if x == float("inf")), ms(percentile(v, 50)), ms(max(v)),
             percentile(v, 50) / percentile(quiet, 50)]
            for name, v in (("quiet (baseline)", quiet), (f"{args.loops} viewer loops", loaded))]
    print(f"app: {args.app_root or 'this checkout'}; {args.appointments} appointments over a year, "
          f"{args.bookings} bookings per phase")
    print_table(["delivery of a booking", "bookings", "not in 120 s", "p50 ms", "max ms", "p50 / quiet p50"], rows)
    print(f"viewer, {seconds:.0f} s: {viewer.pages} pages, {viewer.throttled} x 429 from the app, "
          f"{viewer.failed} other failures; Graph requests {len(log)} ({len(log) / seconds:.0f}/s), "
          f"{throttled} throttled by Graph (429)")


if __name__ == "__main__":
    main()
