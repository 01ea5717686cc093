"""Telemetry per appointment change and per idle mailbox-hour: what the Azure Monitor exporter would send.

The local host (``python -m devhost``) runs with APPLICATIONINSIGHTS_CONNECTION_STRING whose ingestion (and live
metrics) endpoint is a sink in this process (``Sink``): the exporter's real envelopes arrive over real HTTP at
``/v2.1/track``, and the sink counts them by table (requests, dependencies, customEvents by name, traces,
customMetrics by name, exceptions) and their bytes (the envelope's JSON, what ingestion bills by, roughly).
Live metrics posts are answered "not subscribed" and not counted (Live Metrics is not ingested).

Per change: one mailbox with ``--flows`` flows, ``--changes`` appointment creations; everything the exporter
sends from the first change until every flow got every change and one metric export interval passed, over the
number of changes. Per idle mailbox-hour: each timer of the app (``bench._stack.TIMERS``, or those ``--timers``
names) is run alone on a 10 s schedule for ``--idle`` seconds with nothing to do (a timer whose run lasts its
period, the reminders', on its shipped schedule), its items counted per run, and scaled to its runs an hour at the
shipped schedule (the settings' defaults).

The devhost polls queues with the Azure SDK in the app's own process, so its polls would be dependencies that
on Azure (the Functions host polls, in .NET) do not exist: the traces its polls start (a receive_messages span
or its GET at their root) are counted apart as "devhost polls", not in the figures. Its delete of each message
it handed to a function is counted with the app's (the Functions host does that on Azure too): the figures are
a little high, not low.

    python -m bench.telemetry [--changes 20] [--flows 1 5] [--sampling 1.0] [--idle 120 [--timers NAME ...]]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench._stack import ADMIN, FIXED_TIMERS, TIMERS, disabled, flow_body, measured_on, print_table, stack, webhook_url
from bench.end_to_end import Receiver
from devhost.processes import free_port, wait_for_port

_TABLE = {"RequestData": "requests", "RemoteDependencyData": "dependencies", "EventData": "customEvents",
          "MessageData": "traces", "MetricData": "customMetrics", "ExceptionData": "exceptions"}
METRIC_INTERVAL_S = 60  # the exporter's default export interval (OTEL_METRIC_EXPORT_INTERVAL 60000 ms)


_POLL = re.compile(r"(\.receive_messages|^GET /[^/]+/[^/]+/messages)$")


def kind(envelope: dict[str, Any], devhost_operations: set[str]) -> str:
    """The table an envelope lands in, with the event's or metric's name ("customEvents DeliverySucceeded")."""
    data = envelope.get("data", {})
    table = _TABLE.get(data.get("baseType", ""), data.get("baseType", "?"))
    base = data.get("baseData", {})
    if table == "customEvents":
        return f"{table} {base.get('name')}"
    if table == "customMetrics":
        return f"{table} {base.get('metrics', [{}])[0].get('name')}"
    if table == "dependencies" and envelope.get("tags", {}).get("ai.operation.id") in devhost_operations:
        return "devhost polls"
    return table


def _devhost_operations(envelopes: list[dict[str, Any]]) -> set[str]:
    """Traces the devhost's queue polling started (a receive_messages span, or its GET, at their root): the app
    never receives from a queue, the Functions host does (in .NET, outside the app's telemetry)."""
    return {e["tags"].get("ai.operation.id") for e in envelopes
            if e.get("data", {}).get("baseType") == "RemoteDependencyData"
            and not e.get("tags", {}).get("ai.operation.parentId")
            and _POLL.search(e["data"]["baseData"].get("name", ""))}


class Sink:
    """Application Insights ingestion's stand-in: counts envelopes (items) and their bytes by kind."""

    def __init__(self, dump: str | None = None) -> None:
        self.port = free_port()
        self.dump = dump  # BENCH_TELEMETRY_DUMP: every envelope, a JSON line each, to see what a figure is made of
        self.envelopes: list[dict[str, Any]] = []
        self.lock = threading.Lock()

        async def track(request: Request) -> Response:
            body = await request.body()
            if request.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            envelopes = json.loads(body)
            with self.lock:
                self.envelopes += envelopes
            return JSONResponse({"itemsReceived": len(envelopes), "itemsAccepted": len(envelopes), "errors": []})

        async def any_path(request: Request) -> Response:
            # The exporter joins the endpoint and "/v2.1/track" as they are ("...//v2.1/track"); Live Metrics
            # posts elsewhere and is told nobody watches.
            if request.url.path.endswith("/track"):
                return await track(request)
            return Response(status_code=200, headers={"x-ms-qps-subscribed": "false"})

        app = Starlette(routes=[Route("/{path:path}", any_path, methods=["GET", "POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Sink:
        self.thread.start()
        wait_for_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        if self.dump:
            with open(self.dump, "a") as out:
                out.writelines(json.dumps(e) + "\n" for e in self.envelopes)

    @property
    def connection_string(self) -> str:
        url = f"http://127.0.0.1:{self.port}/"
        return (f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint={url};"
                f"LiveEndpoint={url}")

    def snapshot(self) -> tuple[Counter[str], Counter[str]]:
        """Items and bytes received so far, by kind."""
        with self.lock:
            envelopes = list(self.envelopes)
        devhost = _devhost_operations(envelopes)
        items: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        for envelope in envelopes:
            k = kind(envelope, devhost)
            items[k] += 1
            sizes[k] += len(json.dumps(envelope, separators=(",", ":")))
        return items, sizes


def _host_settings(sink: Sink, sampling: str | None, **extra: str) -> dict[str, str]:
    settings = {"APPLICATIONINSIGHTS_CONNECTION_STRING": sink.connection_string,
                "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",  # Microsoft's own usage counters: not billed
                **extra}
    if sampling is not None:
        settings["TELEMETRY_SAMPLING_RATIO"] = sampling
    return settings


def changes_run(flows: int, changes: int, sampling: str | None) -> tuple[Counter[str], Counter[str]]:
    """Items and bytes the exporter sent for ``changes`` creations on one mailbox with ``flows`` flows."""
    mailbox = f"bench-tel-{flows}@contoso.test"
    with stack() as s, Receiver() as receiver, Sink(os.environ.get("BENCH_TELEMETRY_DUMP")) as sink:
        sb = s.sandbox
        assert sb is not None
        sb.clone_businesses([mailbox])
        host = s.start_host(**_host_settings(sink, sampling, **disabled("sweep_outbox", "resync_mailboxes",
                                                                         "renew_subscriptions")))
        admin = {"Authorization": f"Bearer {sb.user_token(ADMIN)}"}
        for f in range(flows):
            httpx.post(webhook_url(host.url, mailbox, "AppointmentCreated"), headers=admin, timeout=60,
                       json=flow_body(receiver.url(f"{mailbox}-{f}"), "AppointmentCreated")).raise_for_status()
        graph = httpx.Client(base_url=f"{sb.graph_url}/solutions/bookingBusinesses", headers=sb.graph_headers(),
                             timeout=30, trust_env=False)
        service = next(x["id"] for x in graph.get(f"/{mailbox}/services").json()["value"]
                       if x["maximumAttendeesCount"] == 1)
        # Registration and baseline telemetry out of the way: one full metric interval, then count from zero.
        time.sleep(METRIC_INTERVAL_S + 5)
        items0, bytes0 = sink.snapshot()
        first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
        names = []
        for n in range(changes):
            start = first + timedelta(minutes=30 * n)
            names.append(f"Telemetry Customer {n}")
            graph.post(f"/{mailbox}/appointments", json={
                "serviceId": service, "customers": [{"name": names[-1], "emailAddress": f"t{n}@example.test"}],
                "startDateTime": {"dateTime": start.replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
                "endDateTime": {"dateTime": (start + timedelta(minutes=30)).replace(tzinfo=None).isoformat(),
                                "timeZone": "UTC"}}).raise_for_status()
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with receiver.lock:
                if all(len(receiver.arrivals[k]) >= flows for k in names):
                    break
            time.sleep(0.2)
        time.sleep(METRIC_INTERVAL_S + 10)  # the exporter's next metric export, and its batch of spans and logs
        graph.close()
        items1, bytes1 = sink.snapshot()
        return items1 - items0, bytes1 - bytes0


def idle_run(seconds: float, sampling: str | None, timers: list[str]) -> dict[str, tuple[float, float]]:
    """Items and bytes per run of each timer with one idle mailbox (1 flow), measured on a 10 s schedule (a paced
    one on its shipped schedule). Spans, events and log lines are counted per run; metric rows per export interval
    (60 s), since at the shipped schedules (a minute or more apart) each run's measurements are exported on their
    own."""
    mailbox = "bench-tel-idle@contoso.test"
    found: dict[str, tuple[float, float]] = {}
    for timer in timers:
        schedule, period = measured_on(timer, 10)
        others = [t for t in (*TIMERS, *FIXED_TIMERS) if t != timer]
        with stack() as s, Receiver() as receiver, Sink() as sink:
            sb = s.sandbox
            assert sb is not None
            sb.clone_businesses([mailbox])
            host = s.start_host(**_host_settings(sink, sampling, **disabled(*others), **{
                TIMERS[timer].setting: schedule, "RESYNC_SPREAD_MINUTES": "0"}))
            admin = {"Authorization": f"Bearer {sb.user_token(ADMIN)}"}
            httpx.post(webhook_url(host.url, mailbox, "AppointmentCreated"), headers=admin, timeout=60,
                       json=flow_body(receiver.url("idle"), "AppointmentCreated")).raise_for_status()
            time.sleep(METRIC_INTERVAL_S + 5)
            items0, bytes0 = sink.snapshot()
            time.sleep(seconds)
            items1, bytes1 = sink.snapshot()
            runs, exports = seconds / period, seconds / METRIC_INTERVAL_S
            items, sizes = items1 - items0, bytes1 - bytes0
            per_run = [0.0, 0.0]
            for k in items:
                if k == "devhost polls":
                    continue
                share = exports if k.startswith("customMetrics") else runs
                per_run[0] += items[k] / share
                per_run[1] += sizes[k] / share
            found[timer] = (per_run[0], per_run[1])
    return found


def _print_changes(results: dict[int, tuple[Counter[str], Counter[str]]], changes: int) -> None:
    flows = list(results)
    counted = {f: {k: v for k, v in results[f][0].items() if k != "devhost polls"} for f in flows}
    sizes = {f: {k: v for k, v in results[f][1].items() if k != "devhost polls"} for f in flows}
    kinds = sorted({k for f in flows for k in counted[f]})
    rows: list[list[Any]] = [[k, *(counted[f].get(k, 0) / changes for f in flows)] for k in kinds]
    rows.append(["total (items per change)", *(sum(counted[f].values()) / changes for f in flows)])
    rows.append(["bytes per change", *(sum(sizes[f].values()) / changes for f in flows)])
    print_table(["kind", *(f"{f} flow{'s' if f > 1 else ''}" for f in flows)], rows)
    polls = {f: results[f][0]["devhost polls"] for f in flows}
    print(f"(not counted: devhost queue polls, which the Functions host makes on Azure: {polls})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.telemetry", description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--flows", type=int, nargs="*", default=[1, 5], help="flows per run (none: skip)")
    parser.add_argument("--sampling", default=None, help="TELEMETRY_SAMPLING_RATIO (default: the shipped one)")
    parser.add_argument("--idle", type=float, default=0, help="seconds per timer for the idle figure (0: skip)")
    parser.add_argument("--timers", nargs="*", choices=list(TIMERS), default=list(TIMERS),
                        help="the timers the idle figure measures (default: all)")
    args = parser.parse_args(argv)

    if args.flows:
        print(f"{args.changes} appointment creations, one mailbox, 2 per second; TELEMETRY_SAMPLING_RATIO "
              f"{args.sampling or 'shipped default'}; items the exporter sent, per change")
        _print_changes({flows: changes_run(flows, args.changes, args.sampling) for flows in args.flows},
                       args.changes)
    if args.idle:
        idle = idle_run(args.idle, args.sampling, args.timers)
        rows: list[list[Any]] = [[t, items, b, TIMERS[t].per_hour * items, TIMERS[t].per_hour * b]
                                 for t, (items, b) in idle.items()]
        rows.append(["total per idle hour", "", "", sum(r[3] for r in rows), sum(r[4] for r in rows)])
        print("\nidle host, one mailbox with one flow: per timer run, and per hour at the shipped schedules")
        print_table(["timer", "items/run", "bytes/run", "items/hour", "bytes/hour"], rows)


if __name__ == "__main__":
    main()
