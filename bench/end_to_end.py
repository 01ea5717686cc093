"""End-to-end latency: from an appointment change in the Graph sandbox to the flow's callback, p50/p99.

Everything real: the Graph sandbox (own process) books the appointment and notifies; the local host
(``python -m devhost``, every function on) acknowledges, reconciles (Graph calendarView + GET by id, snapshot
diff, outbox) and delivers; a receiver in this process stands in for Power Automate and notes the arrival
time of each AppointmentData. ``--mailboxes`` clones of the demo clinic each get ``--flows`` flows registered
through the real registration API with the sandbox admin's token (callbacks on loopback: the local settings
allow them). The changes are appointment **creations** (1:1, a unique customer name each), ``--changes`` of
them spread round-robin over the mailboxes at ``--rate`` per second; each fans out to every flow.

Latency of a change = from the sandbox's 201 for the booking to the first flow receiving it, and to the last
of its flows receiving it. Graph calls per notification burst = the app's Graph requests in the sandbox's
log during the run (the bench's own bookings and token requests left out) over the change-notification
POSTs the sandbox made. Baseline, same run: a bare httpx POST of a payload to the same receiver.

Storage transactions (what Azure bills) are counted by a proxy between the host and Azurite
(``bench._storage_meter``): per change during the run, by queue and operation, and the host's idle rate
(queue polls per minute with nothing to do, measured before the changes). A delivery's first attempt is
made by fan-out right after the reconcile, its queued message only a safety net (put + delete, where a
delivery through the queue costs put + delete and a share of a get, and waits up to the 2 s polling
interval).

    python -m bench.end_to_end [--changes 100] [--mailboxes 5] [--flows 5] [--rate 5]
    python -m bench.end_to_end --changes 500 --mailboxes 20                        # the issue's figure
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench._stack import ADMIN, flow_body, ms, percentile, print_table, stack, webhook_url
from bench._storage_meter import StorageMeter, summary
from devhost.processes import free_port, wait_for_port


class Receiver:
    """Power Automate's stand-in: records (customer name, flow, arrival time) of each callback, answers 202."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: dict[str, list[tuple[str, float]]] = defaultdict(list)
        self.lock = threading.Lock()

        async def flow(request: Request) -> Response:
            payload = await request.json()
            with self.lock:
                self.arrivals[str(payload.get("CustomerName"))].append((request.path_params["name"],
                                                                         time.perf_counter()))
            return Response(status_code=202)

        app = Starlette(routes=[Route("/flows/{name}", flow, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        wait_for_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/flows/{name}?sig=bench-signature-not-for-logs"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.end_to_end", description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--mailboxes", type=int, default=5)
    parser.add_argument("--flows", type=int, default=5, help="AppointmentCreated flows per mailbox")
    parser.add_argument("--rate", type=float, default=5.0, help="changes per second")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the last delivery")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle host to count polls over")
    args = parser.parse_args(argv)

    mailboxes = [f"bench-e2e-{i}@contoso.test" for i in range(args.mailboxes)]
    with stack() as s, Receiver() as receiver:
        sb = s.sandbox
        assert sb is not None
        sb.clone_businesses(mailboxes)
        meter = StorageMeter(s.azurite).start()
        host = s.start_host(AzureWebJobsStorage=meter.connection_string)
        admin = {"Authorization": f"Bearer {sb.user_token(ADMIN)}"}
        for m in mailboxes:
            for f in range(args.flows):
                r = httpx.post(webhook_url(host.url, m, "AppointmentCreated"), headers=admin, timeout=60,
                               json=flow_body(receiver.url(f"{m}-{f}"), "AppointmentCreated"))
                r.raise_for_status()
        deadline = time.monotonic() + 60
        while sum(host.log.count(f"reconcile {m}: reconciled") > 0 for m in mailboxes) < len(mailboxes):
            if time.monotonic() > deadline:
                raise SystemExit("the baseline reconcile of every mailbox did not finish within 60 s")
            time.sleep(0.2)

        graph = httpx.Client(base_url=f"{sb.graph_url}/solutions/bookingBusinesses", headers=sb.graph_headers(),
                             timeout=30, trust_env=False)
        services = {m: next(x["id"] for x in graph.get(f"/{m}/services").json()["value"]
                            if x["maximumAttendeesCount"] == 1) for m in mailboxes}
        time.sleep(3)  # the registrations' and baselines' last work
        idle_from = meter.snapshot()
        time.sleep(args.idle)
        idle = meter.snapshot() - idle_from
        sb.clear_request_log()
        sb.control("DELETE", "notifications")
        run_from = meter.snapshot()
        changed: dict[str, float] = {}
        first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
        began = time.perf_counter()
        for n in range(args.changes):
            time.sleep(max(0.0, began + n / args.rate - time.perf_counter()))
            m = mailboxes[n % len(mailboxes)]
            start = first + timedelta(minutes=30 * n)
            name = f"Bench Customer {n}"
            r = graph.post(f"/{m}/appointments", json={
                "serviceId": services[m], "customers": [{"name": name, "emailAddress": f"c{n}@example.test"}],
                "startDateTime": {"dateTime": start.replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
                "endDateTime": {"dateTime": (start + timedelta(minutes=30)).replace(tzinfo=None).isoformat(),
                                "timeZone": "UTC"}})
            r.raise_for_status()
            changed[name] = time.perf_counter()
        wait_until = time.monotonic() + args.timeout
        while time.monotonic() < wait_until:
            with receiver.lock:
                done = sum(len(receiver.arrivals[k]) >= args.flows for k in changed)
            if done == len(changed):
                break
            time.sleep(0.2)
        time.sleep(2)  # let late reconciles finish their Graph calls before counting them
        run = meter.snapshot() - run_from
        run_seconds = time.perf_counter() - began
        requests = sb.requests_since(0)
        notification_posts = len(sb.control("GET", "notifications", kind="change")["value"])
        graph.close()

        # Baseline: a bare POST round trip of an AppointmentData-sized payload to the same receiver.
        body = {"CustomerName": "baseline", "Id": "x" * 36, "ServiceName": "Initial consultation",
                "StaffMembers": [], "Customers": [], "AdditionalInfo": "y" * 400}
        bare: list[float] = []
        with httpx.Client(trust_env=False, timeout=30) as client:
            client.post(receiver.url("baseline"), json=body)
            for _ in range(args.changes):
                t = time.perf_counter()
                client.post(receiver.url("baseline"), json=body).raise_for_status()
                bare.append(time.perf_counter() - t)

    first_flow, all_flows, missing = [], [], 0
    for name, at in changed.items():
        times = sorted(t for _, t in receiver.arrivals.get(name, []))
        if len(times) < args.flows:
            missing += 1
        if times:
            first_flow.append(times[0] - at)
            all_flows.append(times[-1] - at)
    duplicates = sum(max(0, len(v) - args.flows) for k, v in receiver.arrivals.items() if k in changed)
    base = percentile(bare, 50)
    app_calls = [e for e in requests if "oauth2" not in e["path"]
                 and not (e["method"] == "POST" and e["path"].endswith("/appointments"))]
    by_kind: dict[str, int] = defaultdict(int)
    for e in app_calls:
        kind = "calendarView" if "calendarview" in e["path"].lower() else \
            "GET appointment" if "/appointments/" in e["path"] else f"{e['method']} other"
        by_kind[kind] += 1

    print(f"{args.changes} appointment creations over {args.mailboxes} mailboxes x {args.flows} flows, "
          f"{args.rate:g}/s; local host (all functions), Azurite in memory, sandbox in its own process")
    rows = [[name, len(v), ms(percentile(v, 50)), ms(percentile(v, 99)), percentile(v, 50) / base,
             percentile(v, 99) / base] for name, v in (
        ("change -> first flow", first_flow), (f"change -> all {args.flows} flows", all_flows),
        ("baseline: bare httpx POST", bare))]
    print_table(["path", "samples", "p50 ms", "p99 ms", "p50/base", "p99/base"], rows)
    print(f"\nchanges not delivered to every flow within {args.timeout:g} s: {missing}; extra deliveries "
          f"(at-least-once duplicates): {duplicates}")
    print(f"Graph calls by the app: {len(app_calls)} ({', '.join(f'{k} {v}' for k, v in sorted(by_kind.items()))}) "
          f"for {notification_posts} change-notification POSTs: "
          f"{len(app_calls) / max(1, notification_posts):.2f} per notification POST, "
          f"{len(app_calls) / max(1, args.changes):.2f} per change")

    polls = sum(n for (service, _, op), n in idle.items() if service == "queue" and op == "get")
    print(f"\nstorage transactions, idle host: {sum(idle.values())} in {args.idle:g} s "
          f"({polls * 60 / args.idle:.0f} queue polls/min over {len({k[1] for k in idle if k[0] == 'queue'})} queues)")
    deliveries = args.changes * args.flows
    per_queue = {k: v for k, v in summary(run).items() if k.startswith("queue deliveries")}
    print(f"storage transactions during the run ({run_seconds:.0f} s): {sum(run.values())}, "
          f"{sum(run.values()) / max(1, args.changes):.1f} per change; deliveries queue: "
          f"{', '.join(f'{k.split()[-1]} {v}' for k, v in per_queue.items())} for {deliveries} deliveries "
          f"({sum(per_queue.values()) / max(1, deliveries):.2f} per delivery, polls included)")
    print("by kind: " + ", ".join(f"{k} {v}" for k, v in list(summary(run).items())[:12]))
    p99 = percentile(first_flow, 99) * 1000 if first_flow else float("inf")
    print(f"change -> first flow p99: {p99:.0f} ms (target <= 1200 ms: {'met' if p99 <= 1200 else 'NOT met'})")


if __name__ == "__main__":
    main()
