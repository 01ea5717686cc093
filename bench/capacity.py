"""Capacity of one host: the sustained changes per second before change → flow p99 exceeds 5 s, and what a
change and an idle mailbox-hour cost in storage transactions, Graph calls and telemetry items.

One local host (``python -m devhost``, every function of the app) on Azurite, the Graph sandbox in its own
process, ``--mailboxes`` clones of the demo clinic with ``--flows`` AppointmentCreated flows each, registered
through the real API. Storage transactions are counted by ``bench._storage_meter`` (queues and tables; the
timers' blob leases are not proxied, see below), Graph calls from the sandbox's request log, telemetry items by
``bench.telemetry.Sink`` (the real Azure Monitor exporter's envelopes, at the shipped sampling).

The ramp: appointment creations spread round-robin over the mailboxes at 1, 2, 4, … changes per second, each
rate held for ``--step`` seconds, then the bench waits for that step's deliveries (at most ``--drain`` s).
change → flow is from the sandbox's 201 for the booking to each flow's callback; a delivery that never came
counts as infinitely late. The ramp stops at the first rate whose p99 exceeds 5 s; the knee is the last rate
under it. Per change: the figures over the steps up to the knee. Telemetry per change includes the metric rows
of one export interval after the last step (the exporter sends metrics every 60 s).

Idle: each timer of the app on its own, on a 5 s schedule with the mailboxes registered and nothing changing;
its storage transactions, Graph calls and telemetry items per run (counted between its first and last run),
times its runs per hour at the shipped schedule, over the mailboxes: per idle mailbox-hour. The host's queue
polling with nothing to do is per instance, not per mailbox: counted apart, per instance-hour.

This machine has 2 cores for the host, Azurite, the sandbox and the bench: the knee is a floor for one Flex
Consumption instance (2,048 MB has one vCPU of its own and storage on other machines), not its ceiling.

    python -m bench.capacity --quick                 # ~5 minutes: 10 mailboxes, 10 s steps
    python -m bench.capacity                         # 20 mailboxes x 2 flows, 20 s steps, up to 64 changes/s
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench._stack import ADMIN, Stack, disabled, flow_body, percentile, print_table, stack, webhook_url
from bench._storage_meter import StorageMeter, summary
from bench.end_to_end import Receiver
from bench.telemetry import METRIC_INTERVAL_S, Sink

KNEE_P99_SECONDS = 5.0
# Every timer of the app, its schedule setting and its runs per hour at the shipped schedule (docs/configuration.md).
TIMERS = {"sweep_outbox": ("OUTBOX_SWEEP_SCHEDULE", 12), "measure_queues": ("QUEUE_METRICS_SCHEDULE", 12),
          "resync_mailboxes": ("RESYNC_SCHEDULE", 1), "renew_subscriptions": ("RENEWAL_SCHEDULE", 2),
          "refresh_directory": ("DIRECTORY_REFRESH_SCHEDULE", 6), "export_flows": ("BACKUP_SCHEDULE", 1 / 24)}
ALL_TIMERS = (*TIMERS, "check_credential_expiry")


_EXECUTED = re.compile(r"Executed 'Functions\.(\w+)' \(.*?duration=(\d+)ms")
Reading = tuple[Counter[tuple[str, str, str]], int, Counter[str], Counter[str], int]


@dataclass
class Costs:
    """What a stretch of time cost: storage transactions by kind, Graph calls, telemetry items and bytes by kind,
    function executions and their summed duration (from the host's log)."""

    storage: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    graph: int = 0
    telemetry: Counter[str] = field(default_factory=Counter)
    telemetry_bytes: Counter[str] = field(default_factory=Counter)
    executions: int = 0
    execution_ms: float = 0.0

    @property
    def items(self) -> int:
        return sum(n for k, n in self.telemetry.items() if k != "devhost polls")

    @property
    def bytes(self) -> int:
        return sum(n for k, n in self.telemetry_bytes.items() if k != "devhost polls")


class Meters:
    """The counters, read together: storage, Graph, telemetry, and the host's log (its executions)."""

    def __init__(self, s: Stack, meter: StorageMeter, sink: Sink, host: Any) -> None:
        self.sandbox, self.meter, self.sink, self.host = s.sandbox, meter, sink, host

    def mark(self) -> Reading:
        """The counters now, Graph calls counted from here (the sandbox's log is emptied)."""
        assert self.sandbox is not None
        self.sandbox.clear_request_log()
        return self.read()

    def read(self) -> Reading:
        assert self.sandbox is not None
        calls = sum(1 for e in self.sandbox.requests_since(0) if "oauth2" not in e["path"]
                    and not (e["method"] == "POST" and e["path"].endswith("/appointments")))
        items, sizes = self.sink.snapshot()
        return self.meter.snapshot(), calls, items, sizes, len(self.host.log)

    def between(self, before: Reading, after: Reading) -> Costs:
        ran = _EXECUTED.findall(self.host.log[before[4]:after[4]])
        return Costs(after[0] - before[0], after[1] - before[1], after[2] - before[2], after[3] - before[3],
                     len(ran), sum(float(ms) for _, ms in ran))


@dataclass
class Step:
    rate: float
    changes: int
    deliveries: int
    delivered: int
    p50: float
    p99: float
    costs: Costs


class Ramp:
    """The load: bookings at a given rate over the mailboxes, and the arrival of each at every flow."""

    def __init__(self, s: Stack, receiver: Receiver, mailboxes: list[str], flows: int) -> None:
        assert s.sandbox is not None
        self.receiver, self.mailboxes, self.flows = receiver, mailboxes, flows
        self.graph = httpx.Client(base_url=f"{s.sandbox.graph_url}/solutions/bookingBusinesses",
                                  headers=s.sandbox.graph_headers(), timeout=60, trust_env=False,
                                  limits=httpx.Limits(max_connections=32, max_keepalive_connections=32))
        self.services = {m: next(x["id"] for x in self.graph.get(f"/{m}/services").json()["value"]
                                 if x["maximumAttendeesCount"] == 1) for m in mailboxes}
        self.first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
        self.count = 0
        self.pool = ThreadPoolExecutor(16)

    def _book(self, n: int) -> tuple[str, float]:
        m = self.mailboxes[n % len(self.mailboxes)]
        start = self.first + timedelta(minutes=30 * n)
        name = f"Capacity Customer {n}"
        self.graph.post(f"/{m}/appointments", json={
            "serviceId": self.services[m], "customers": [{"name": name, "emailAddress": f"cap{n}@example.test"}],
            "startDateTime": {"dateTime": start.replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
            "endDateTime": {"dateTime": (start + timedelta(minutes=30)).replace(tzinfo=None).isoformat(),
                            "timeZone": "UTC"}}).raise_for_status()
        return name, time.perf_counter()

    def run(self, rate: float, seconds: float, drain: float) -> tuple[int, list[float], int]:
        """Changes made, change → flow latency of each delivery that came, deliveries missing after ``drain``."""
        total = max(1, round(rate * seconds))
        began = time.perf_counter()
        futures = []
        for k in range(total):
            time.sleep(max(0.0, began + k / rate - time.perf_counter()))
            futures.append(self.pool.submit(self._book, self.count))
            self.count += 1
        changed = dict(f.result() for f in futures)
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and self._missing(changed):
            time.sleep(0.2)
        with self.receiver.lock:
            latencies = [at - changed[name] for name in changed for _, at in self.receiver.arrivals.get(name, [])]
        return total, latencies, self._missing(changed)

    def _missing(self, changed: dict[str, float]) -> int:
        with self.receiver.lock:
            return sum(max(0, self.flows - len(self.receiver.arrivals.get(name, []))) for name in changed)

    def close(self) -> None:
        self.pool.shutdown()
        self.graph.close()


def register(s: Stack, host: Any, receiver: Receiver, mailboxes: list[str], flows: int) -> None:
    assert s.sandbox is not None
    admin = {"Authorization": f"Bearer {s.sandbox.user_token(ADMIN)}"}
    for m in mailboxes:
        for f in range(flows):
            httpx.post(webhook_url(host.url, m, "AppointmentCreated"), headers=admin, timeout=60,
                       json=flow_body(receiver.url(f"{m}-{f}"), "AppointmentCreated")).raise_for_status()
    # The baselines: a reconcile per mailbox, then nothing left queued (with Application Insights on, the app's
    # INFO lines go to the exporter, not to the host's log; its executions are still logged).
    deadline = time.monotonic() + 120
    while _runs(host, "reconcile_mailbox") < len(mailboxes) or _queued(s, "mailbox-changes"):
        if time.monotonic() > deadline:
            raise SystemExit(f"the baseline reconcile of every mailbox did not finish; host log: {host.log_file}")
        time.sleep(0.5)
    time.sleep(2)


def _queued(s: Stack, queue: str) -> int:
    from azure.storage.queue import QueueClient

    with QueueClient.from_connection_string(s.connection_string, queue) as client:
        return int(client.get_queue_properties().approximate_message_count)


def ramp(args: argparse.Namespace) -> tuple[list[Step], Costs, float]:
    """The ramp's steps, the metric rows of the export interval after it, and the idle polls per hour."""
    mailboxes = [f"capacity-{i}@contoso.test" for i in range(args.mailboxes)]
    with stack() as s, Receiver() as receiver, Sink() as sink:
        assert s.sandbox is not None
        s.sandbox.clone_businesses(mailboxes)
        meter = StorageMeter(s.azurite).start()
        host = s.start_host(**_host_settings(sink, meter), **disabled(*ALL_TIMERS))
        register(s, host, receiver, mailboxes, args.flows)
        meters = Meters(s, meter, sink, host)
        time.sleep(3)
        quiet0 = meters.mark()
        time.sleep(args.idle_polls)
        polls = meters.between(quiet0, meters.read())
        polls_per_hour = sum(polls.storage.values()) * 3600 / args.idle_polls
        load = Ramp(s, receiver, mailboxes, args.flows)
        steps: list[Step] = []
        rate = 1.0
        while rate <= args.max_rate:
            before = meters.mark()
            changes, latencies, missing = load.run(rate, args.step, args.drain)
            values = latencies + [math.inf] * missing
            step = Step(rate, changes, changes * args.flows, len(latencies), percentile(values, 50),
                        percentile(values, 99), meters.between(before, meters.read()))
            steps.append(step)
            print(f"  {rate:g} changes/s: p50 {step.p50:.2f} s, p99 {step.p99:.2f} s, "
                  f"{step.delivered}/{step.deliveries} delivered", flush=True)
            if step.p99 > KNEE_P99_SECONDS:
                break
            rate *= 2
        load.close()
        tail0 = meters.mark()
        time.sleep(METRIC_INTERVAL_S + 10)  # the exporter's next metric export, and its batch of spans and logs
        tail = meters.between(tail0, meters.read())
    return steps, tail, polls_per_hour


def _host_settings(sink: Sink, meter: StorageMeter) -> dict[str, str]:
    return {"AzureWebJobsStorage": meter.connection_string,
            "APPLICATIONINSIGHTS_CONNECTION_STRING": sink.connection_string,
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true"}


def idle(args: argparse.Namespace) -> dict[str, tuple[Costs, int]]:
    """Each timer alone on a 5 s schedule: its costs between its first and last run, and the runs between."""
    mailboxes = [f"capacity-idle-{i}@contoso.test" for i in range(args.mailboxes)]
    found: dict[str, tuple[Costs, int]] = {}
    with stack() as s, Receiver() as receiver, Sink() as sink:
        assert s.sandbox is not None
        s.sandbox.clone_businesses(mailboxes)
        meter = StorageMeter(s.azurite).start()
        host = s.start_host(**_host_settings(sink, meter), **disabled(*ALL_TIMERS))
        meters = Meters(s, meter, sink, host)
        register(s, host, receiver, mailboxes, args.flows)
        host.stop()
        for timer, (setting, _) in TIMERS.items():
            others = [t for t in ALL_TIMERS if t != timer]
            host.start({**disabled(*others), "AzureWebJobs." + timer + ".Disabled": "false",
                        setting: "*/5 * * * * *", "RESYNC_SPREAD_MINUTES": "0"})
            done = _runs(host, timer)
            _wait_runs(host, timer, done + 1)
            time.sleep(1)
            before = meters.mark()
            _wait_runs(host, timer, done + 1 + args.idle_runs)
            time.sleep(2)  # the run's queued work (a resync's reconciles) done
            found[timer] = (meters.between(before, meters.read()), args.idle_runs)
            host.stop()
    return found


def _runs(host: Any, timer: str) -> int:
    return len(re.findall(rf"Executed 'Functions\.{timer}' \(", host.log))


def _wait_runs(host: Any, timer: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while _runs(host, timer) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{timer} did not run {count} times; host log: {host.log_file}")
        time.sleep(0.2)


def report(args: argparse.Namespace, steps: list[Step], tail: Costs, polls_per_hour: float,
           timers: dict[str, tuple[Costs, int]]) -> None:
    good = [s for s in steps if s.p99 <= KNEE_P99_SECONDS]
    knee = good[-1].rate if good else 0.0
    print_table(["changes/s", "changes", "deliveries", "delivered", "p50 s", "p99 s", "p99/5 s", "storage tx/change",
                 "Graph calls/change", "telemetry items/change", "executions/change"],
                [[s.rate, s.changes, s.deliveries, s.delivered, s.p50, s.p99, s.p99 / KNEE_P99_SECONDS,
                  sum(s.costs.storage.values()) / s.changes, s.costs.graph / s.changes, s.costs.items / s.changes,
                  s.costs.executions / s.changes] for s in steps])
    print(f"\nknee: {knee:g} changes/s sustained with change -> flow p99 <= {KNEE_P99_SECONDS:g} s "
          f"({'the next step was over' if len(good) < len(steps) else 'the ramp ended first: the knee is higher'})")
    counted = good or steps
    changes = sum(s.changes for s in counted)
    share = changes / sum(s.changes for s in steps)  # of the metric rows exported after the ramp
    total = Costs(sum((s.costs.storage for s in counted), Counter()), sum(s.costs.graph for s in counted))
    items = sum(s.costs.items for s in counted) + tail.items * share
    size = sum(s.costs.bytes for s in counted) + tail.bytes * share
    runs = sum(s.costs.executions for s in counted)
    busy = sum(s.costs.execution_ms for s in counted)
    print(f"per change (steps up to the knee, {changes} changes, {args.flows} flows each): "
          f"{sum(total.storage.values()) / changes:.1f} storage transactions, {total.graph / changes:.2f} Graph calls, "
          f"{items / changes:.2f} telemetry items ({size / changes:,.0f} bytes), {runs / changes:.2f} executions "
          f"({busy / changes:.0f} ms of execution)")
    kinds = list(summary(total.storage).items())[:10]
    print("  storage by kind: " + ", ".join(f"{k} {v / changes:.2f}" for k, v in kinds))
    print(f"idle host, nothing to do: {polls_per_hour:,.0f} storage transactions per instance-hour (queue polls)")
    rows = []
    for timer, (costs, n) in timers.items():
        per_hour = TIMERS[timer][1] / n / args.mailboxes
        rows.append([timer, TIMERS[timer][1], sum(costs.storage.values()) / n, costs.graph / n, costs.items / n,
                     costs.executions / n, sum(costs.storage.values()) * per_hour, costs.graph * per_hour,
                     costs.items * per_hour, costs.bytes * per_hour, costs.executions * per_hour,
                     costs.execution_ms * per_hour])
    rows.append(["total per idle mailbox-hour", "", "", "", "", "",
                 *(sum(r[k] for r in rows) for k in range(6, 12))])
    print(f"\ntimers with {args.mailboxes} idle mailboxes ({args.flows} flows each): per run, and per idle "
          "mailbox-hour at the shipped schedules (each run's fixed part shared by the mailboxes)")
    print_table(["timer", "runs/h", "storage tx/run", "Graph/run", "items/run", "executions/run", "storage tx/mbx-h",
                 "Graph/mbx-h", "items/mbx-h", "bytes/mbx-h", "executions/mbx-h", "execution ms/mbx-h"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 mailboxes, 10 s steps, up to 32 changes/s")
    parser.add_argument("--mailboxes", type=int, default=20)
    parser.add_argument("--flows", type=int, default=2, help="AppointmentCreated flows per mailbox")
    parser.add_argument("--step", type=float, default=20.0, help="seconds each rate is held")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for a step's deliveries")
    parser.add_argument("--max-rate", type=float, default=64.0)
    parser.add_argument("--idle-polls", type=float, default=20.0, help="seconds of idle host to count polls over")
    parser.add_argument("--idle-runs", type=int, default=3, help="runs of each timer to count")
    args = parser.parse_args(argv)
    if args.quick:
        args.mailboxes, args.step, args.drain, args.max_rate, args.idle_polls, args.idle_runs = 10, 10, 20, 32, 10, 2
    print(f"capacity: one host, {args.mailboxes} mailboxes x {args.flows} flows, rates doubling from 1/s, "
          f"{args.step:g} s each, until change -> flow p99 > {KNEE_P99_SECONDS:g} s")
    steps, tail, polls = ramp(args)
    timers = idle(args)
    print()
    report(args, steps, tail, polls, timers)


if __name__ == "__main__":
    main()
