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

Idle: each timer of the app on its own (``bench._stack.TIMERS``), on a 5 s schedule with the mailboxes
registered and nothing changing; its storage transactions, Graph requests and telemetry items per run, times its
runs per hour at the shipped schedule (from the settings' defaults): per hour, and over the mailboxes per idle
mailbox-hour. Runs are counted from the end of the timer's first run, so what a first run does once (the delta
check starts every mailbox's round: a full synchronization) is left out: the figures are steady state. A timer
whose run lasts its period (the reminders' timer waits for what falls due) runs on its shipped schedule instead.
Graph requests are counted as Graph counts them (each request of a JSON batch) and as HTTP requests (a batch
once). The host's queue polling with nothing to do is per instance, not per mailbox: counted apart, per
instance-hour.

This machine has 2 cores for the host, Azurite, the sandbox and the bench: the knee is a floor for one Flex
Consumption instance (2,048 MB has one vCPU of its own and storage on other machines), not its ceiling.

    python -m bench.capacity --quick                 # ~5 minutes: 10 mailboxes, 10 s steps
    python -m bench.capacity                         # 20 mailboxes x 2 flows, 20 s steps, up to 64 changes/s
    python -m bench.capacity --idle-only             # ~9 minutes: the timers only, no ramp
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

from bench._stack import (
    ADMIN,
    FIXED_TIMERS,
    QUEUE_FUNCTIONS,
    TIMERS,
    Stack,
    disabled,
    flow_body,
    measured_on,
    percentile,
    print_table,
    stack,
    webhook_url,
)
from bench._storage_meter import StorageMeter, summary
from bench.end_to_end import Receiver
from bench.telemetry import METRIC_INTERVAL_S, Sink

KNEE_P99_SECONDS = 5.0
ALL_TIMERS = (*TIMERS, *FIXED_TIMERS)
IDLE_SCHEDULE_SECONDS = 5
# A resync run's reconciles take seconds: runs 5 s apart would overlap (its hints deferred behind the last run's
# leases, some mailboxes read twice), which runs 6 hours apart never do.
IDLE_SCHEDULE_SECONDS_OF = {"resync_mailboxes": 20}
# The queue functions a timer's idle run needs (the resync's hints are reconciled), and the queue each polls; the
# others are off while a timer is measured, so their polls (per instance, counted apart) are not in its figures.
NEEDS = {"resync_mailboxes": ("reconcile_mailbox",)}
POLLS = {"reconcile_mailbox": "mailbox-changes"}

_EXECUTED = re.compile(r"Executed 'Functions\.(\w+)' \(.*?duration=(\d+)ms")
Reading = tuple[Counter[tuple[str, str, str]], int, int, Counter[str], Counter[str], int]


@dataclass
class Costs:
    """What a stretch of time cost: storage transactions by kind, Graph requests (as Graph counts them: each
    request of a JSON batch; and HTTP requests: a batch once), telemetry items and bytes by kind, function
    executions and their summed duration (from the host's log)."""

    storage: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    graph: int = 0
    graph_http: int = 0
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
        # Graph's own routes (not Entra's token and key routes), less the bench's bookings.
        logged = [e for e in self.sandbox.requests_since(0) if e["path"].startswith("/v1.0/")
                  and not (e["method"] == "POST" and e["path"].endswith("/appointments"))]
        graph = sum(1 for e in logged if e["path"] != "/v1.0/$batch")
        http = sum(1 for e in logged if not str(e.get("clientRequestId") or "").startswith("batched:"))
        items, sizes = self.sink.snapshot()
        return self.meter.snapshot(), graph, http, items, sizes, len(self.host.log)

    def between(self, before: Reading, after: Reading) -> Costs:
        ran = _EXECUTED.findall(self.host.log[before[5]:after[5]])
        return Costs(after[0] - before[0], after[1] - before[1], after[2] - before[2], after[3] - before[3],
                     after[4] - before[4], len(ran), sum(float(ms) for _, ms in ran))


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


def ramp(args: argparse.Namespace) -> tuple[list[Step], Costs]:
    """The ramp's steps, and the metric rows of the export interval after it."""
    mailboxes = [f"capacity-{i}@contoso.test" for i in range(args.mailboxes)]
    with stack() as s, Receiver() as receiver, Sink() as sink:
        assert s.sandbox is not None
        s.sandbox.clone_businesses(mailboxes)
        meter = StorageMeter(s.azurite).start()
        host = s.start_host(**_host_settings(sink, meter), **disabled(*ALL_TIMERS))
        register(s, host, receiver, mailboxes, args.flows)
        meters = Meters(s, meter, sink, host)
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
    return steps, tail


def _host_settings(sink: Sink, meter: StorageMeter) -> dict[str, str]:
    return {"AzureWebJobsStorage": meter.connection_string,
            "APPLICATIONINSIGHTS_CONNECTION_STRING": sink.connection_string,
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true"}


def idle(args: argparse.Namespace) -> tuple[dict[str, tuple[Costs, int]], float]:
    """Each timer alone: its costs from the end of its first run to the end of its last, and the runs between
    (the first run's one-off work, such as the delta check starting its rounds, is not counted). And the queue
    polls per hour of the host with every timer off and nothing to do."""
    mailboxes = [f"capacity-idle-{i}@contoso.test" for i in range(args.mailboxes)]
    found: dict[str, tuple[Costs, int]] = {}
    with stack() as s, Receiver() as receiver, Sink() as sink:
        assert s.sandbox is not None
        s.sandbox.clone_businesses(mailboxes)
        meter = StorageMeter(s.azurite).start()
        host = s.start_host(**_host_settings(sink, meter), **disabled(*ALL_TIMERS))
        meters = Meters(s, meter, sink, host)
        register(s, host, receiver, mailboxes, args.flows)
        time.sleep(1)
        quiet0 = meters.mark()
        time.sleep(args.idle_polls)
        polls = meters.between(quiet0, meters.read()).storage
        print("  idle polls per second: " + ", ".join(f"{k} {v / args.idle_polls:.2f}"
                                                       for k, v in summary(polls).items()), flush=True)
        host.stop()
        for timer in args.timers:
            found[timer] = _idle_timer(host, meters, timer, args.idle_runs, polls, args.idle_polls)
    return found, sum(polls.values()) * 3600 / args.idle_polls


def _idle_timer(host: Any, meters: Meters, timer: str, runs: int, polls: Counter[tuple[str, str, str]],
                polled_for: float) -> tuple[Costs, int]:
    """One timer's costs over ``runs`` runs after its first, less the polls of the queues it needed (at the
    rate of ``polls`` over ``polled_for`` seconds)."""
    schedule, period = _schedule(timer)
    needs = NEEDS.get(timer, ())
    host.start({**disabled(*(f for f in (*ALL_TIMERS, *QUEUE_FUNCTIONS) if f != timer and f not in needs)),
                "AzureWebJobs." + timer + ".Disabled": "false", TIMERS[timer].setting: schedule,
                "RESYNC_SPREAD_MINUTES": "0"})
    done = _runs(host, timer)
    _wait_runs(host, timer, done + 1, 60 + 2 * period)
    time.sleep(1)
    before, began = meters.mark(), time.monotonic()
    _wait_runs(host, timer, done + 1 + runs, 60 + (runs + 1) * period)
    time.sleep(2)  # the run's queued work (a resync's reconciles) done
    costs = meters.between(before, meters.read())
    elapsed = time.monotonic() - began
    for kind, n in polls.items():
        if kind[0] == "queue" and kind[1] in {POLLS[f] for f in needs}:
            costs.storage[kind] = max(0, costs.storage[kind] - round(n * elapsed / polled_for))
    host.stop()
    kinds = ", ".join(f"{k} {v / runs:.1f}" for k, v in list(summary(costs.storage).items())[:5])
    items = ", ".join(f"{k} {v / runs:.2f}" for k, v in costs.telemetry.most_common(4) if k != "devhost polls")
    print(f"  {timer}: {runs} runs on {schedule!r}; per run: storage {kinds or '-'}; telemetry {items or '-'}",
          flush=True)
    return costs, runs


def _schedule(timer: str) -> tuple[str, float]:
    return measured_on(timer, IDLE_SCHEDULE_SECONDS_OF.get(timer, IDLE_SCHEDULE_SECONDS))


def _runs(host: Any, timer: str) -> int:
    return len(re.findall(rf"Executed 'Functions\.{timer}' \(", host.log))


def _wait_runs(host: Any, timer: str, count: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while _runs(host, timer) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{timer} did not run {count} times; host log: {host.log_file}")
        time.sleep(0.2)


def report_ramp(args: argparse.Namespace, steps: list[Step], tail: Costs) -> None:
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
    total = Costs(sum((s.costs.storage for s in counted), Counter()), sum(s.costs.graph for s in counted),
                  sum(s.costs.graph_http for s in counted))
    items = sum(s.costs.items for s in counted) + tail.items * share
    size = sum(s.costs.bytes for s in counted) + tail.bytes * share
    runs = sum(s.costs.executions for s in counted)
    busy = sum(s.costs.execution_ms for s in counted)
    print(f"per change (steps up to the knee, {changes} changes, {args.flows} flows each): "
          f"{sum(total.storage.values()) / changes:.1f} storage transactions, {total.graph / changes:.2f} Graph calls "
          f"({total.graph_http / changes:.2f} HTTP requests), {items / changes:.2f} telemetry items "
          f"({size / changes:,.0f} bytes), {runs / changes:.2f} executions ({busy / changes:.0f} ms of execution)")
    kinds = list(summary(total.storage).items())[:10]
    print("  storage by kind: " + ", ".join(f"{k} {v / changes:.2f}" for k, v in kinds))


def report_idle(args: argparse.Namespace, polls_per_hour: float, timers: dict[str, tuple[Costs, int]]) -> None:
    print(f"idle host, nothing to do: {polls_per_hour:,.0f} storage transactions per instance-hour (queue polls)")
    print(f"\ntimers with {args.mailboxes} idle mailboxes ({args.flows} flows each), per run (steady state: "
          "the first run not counted)")
    print_table(["timer", "measured on", "runs/h shipped", "storage tx/run", "Graph/run", "HTTP/run", "items/run",
                 "bytes/run", "executions/run", "execution ms/run"],
                [[timer, _schedule(timer)[0], TIMERS[timer].per_hour,
                  *(v / n for v in _figures(costs))] for timer, (costs, n) in timers.items()])
    rows = []
    for timer, (costs, n) in timers.items():
        per_hour = [v * TIMERS[timer].per_hour / n for v in _figures(costs)]
        rows.append([timer, *per_hour, *(v / args.mailboxes for v in per_hour)])
    rows.append(["total", *(sum(r[k] for r in rows) for k in range(1, 15))])
    print(f"\nper hour at the shipped schedules: the whole app with {args.mailboxes} mailboxes, then per idle "
          "mailbox-hour (the app's figure over the mailboxes: each run's fixed part shared by them)")
    print_table(["timer", "storage tx/h", "Graph/h", "HTTP/h", "items/h", "bytes/h", "executions/h",
                 "execution ms/h", "storage tx/mbx-h", "Graph/mbx-h", "HTTP/mbx-h", "items/mbx-h", "bytes/mbx-h",
                 "executions/mbx-h", "execution ms/mbx-h"], rows)


def _figures(costs: Costs) -> list[float]:
    """Storage transactions, Graph requests (Graph-counted, HTTP), telemetry items and bytes, executions and
    their milliseconds."""
    return [sum(costs.storage.values()), costs.graph, costs.graph_http, costs.items, costs.bytes, costs.executions,
            costs.execution_ms]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 mailboxes, 10 s steps, up to 32 changes/s")
    parser.add_argument("--idle-only", action="store_true", help="only the timers (and the idle polls): no ramp")
    parser.add_argument("--mailboxes", type=int, default=20)
    parser.add_argument("--flows", type=int, default=2, help="AppointmentCreated flows per mailbox")
    parser.add_argument("--step", type=float, default=20.0, help="seconds each rate is held")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for a step's deliveries")
    parser.add_argument("--max-rate", type=float, default=64.0)
    parser.add_argument("--idle-polls", type=float, default=20.0, help="seconds of idle host to count polls over")
    parser.add_argument("--idle-runs", type=int, default=3, help="runs of each timer to count")
    parser.add_argument("--timers", nargs="*", choices=list(TIMERS), default=list(TIMERS),
                        help="the timers to measure idle (default: all)")
    args = parser.parse_args(argv)
    if args.quick:
        args.mailboxes, args.step, args.drain, args.max_rate, args.idle_polls, args.idle_runs = 10, 10, 20, 32, 10, 2
    if not args.idle_only:
        print(f"capacity: one host, {args.mailboxes} mailboxes x {args.flows} flows, rates doubling from 1/s, "
              f"{args.step:g} s each, until change -> flow p99 > {KNEE_P99_SECONDS:g} s")
        steps, tail = ramp(args)
    print(f"idle: each timer alone, {args.mailboxes} mailboxes x {args.flows} flows, {args.idle_runs} runs each")
    timers, polls = idle(args)
    print()
    if not args.idle_only:
        report_ramp(args, steps, tail)
    report_idle(args, polls, timers)


if __name__ == "__main__":
    main()
