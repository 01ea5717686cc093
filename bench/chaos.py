"""Chaos: the whole chain under one fault at a time, counted delivery by delivery.

Each fault class gets a fresh stack: Azurite (data on disk, so a restart is an outage and not a wipe), the
Graph sandbox (own process), the local host with every function of the app (``bench._chaos_host``, which can
SIGKILL itself at chosen points) and a receiver standing in for Power Automate. ``--mailboxes`` clones of the
demo clinic each get 5 flows through the real registration API — 2 AppointmentCreated, 2 AppointmentUpdated,
1 AppointmentDeleted — and 4 appointments made before the flows (1:1 and group; the baseline records them
silently). While the fault is on, each mailbox gets 6 changes spread over ``--window`` seconds: 2 bookings
(1:1, and group with two customers), 2 moves and 2 cancellations of the earlier appointments (1:1 and group).
Then the fault is healed and the bench waits until every expected delivery arrived and every queue is empty.

What a flow must get: each Created flow a Created delivery of every booking, each Updated flow an Updated
delivery carrying the new StartTime of every move, each Deleted flow a delivery of every cancellation. Columns:

==========  ==========================================================================================
lost        expected deliveries that never arrived (the target is 0 on every row)
new-key     deliveries of one (appointment, flow, trigger) under more than one Idempotency-Key: duplicates
            a flow cannot recognise (target 0)
same-key    repeats under the same key: at-least-once delivery, which a flow recognises (allowed)
unexpected  deliveries no change called for, e.g. an event about an appointment from before the flows
max delay   from the Graph write's answer to the first matching delivery, the worst over the row; the last
            column divides it by the fault-free row's (``none``) of the same run
poison      messages left in the three poison queues at the end (target 0) + QueueMessagePoisoned events
==========  ==========================================================================================

Scaled where production time would make a row take hours: the outbox sweep runs every 10 s and takes over
events left un-fanned-out for 15 s (every 5 min, after 1 min on Azure), a queue message held by a killed
host reappears after 10 s (the runtime's lease: 10 min), the reconcile lease of the slow-Graph row is 4 s
(60 s), a timer's listener lock held by a killed host runs out after 15 s and another host tries every 2 s
(1 minute each), and the resync, off in every row but the one for dropped notifications (where nothing else can
notice them), runs every minute there (hourly on Azure). The renewal timer is off: subscriptions outlive
every row. So a row's max delay is the scaled one; on Azure, add the difference.

    python -m bench.chaos                                   # every fault class, 60 s windows
    python -m bench.chaos --only graph-503,host-kill --window 15 --mailboxes 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import quote

import httpx
import uvicorn
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench._stack import ADMIN, Stack, disabled, flow_body, print_table, stack, webhook_url
from devhost.processes import free_port, stop_process, wait_for_port
from shared.adapters.storage import MAILBOX_TABLE, QUEUES, poison_queue
from shared.records.outbox import PENDING

FLOW_TRIGGERS = ("AppointmentCreated", "AppointmentCreated", "AppointmentUpdated", "AppointmentUpdated",
                 "AppointmentDeleted")
GRAPH_READS = ("/v1.0/solutions/bookingBusinesses/*", "/v1.0/users/*")
LONG_NOTE = "Allergies and history. " * 1739 + "end"  # 40,000 characters
EMOJI_NOTE = "\N{GRINNING FACE}" * 9000  # 9,000 characters, 18,000 UTF-16 code units
CALLBACK_TIMEOUT_SECONDS = 30  # shared.adapters.callback_client.REQUEST_TIMEOUT
EVENT_LINES = ("QueueMessagePoisoned", "AppointmentNotStored", "dead-lettered")


# ---- Power Automate's stand-in ------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    flow: str
    at: float
    key: str
    trigger: str
    appointment: str
    start: str


# A flow's behaviour: given the time, (status, seconds to wait before answering).
Behaviour = Callable[[float], tuple[int, float]]


def answers(status: int = 202, delay: float = 0.0) -> Behaviour:
    return lambda now: (status, delay)


class Receiver:
    """Records every 2xx-answered delivery (flow, key, trigger, appointment, start); behaviours per flow."""

    def __init__(self) -> None:
        self.port = free_port()
        self.deliveries: list[Delivery] = []
        self.attempts: Counter[str] = Counter()
        self.behaviour: dict[str, Behaviour] = {}
        self.lock = threading.Lock()

        async def flow(request: Request) -> Response:
            name = request.path_params["name"]
            body = await request.body()
            status, wait = self.behaviour.get(name, answers())(time.monotonic())
            if wait:
                await asyncio.sleep(wait)
            payload = json.loads(body)
            with self.lock:
                self.attempts[name] += 1
                if 200 <= status < 300:
                    self.deliveries.append(Delivery(
                        name, time.monotonic(), request.headers.get("idempotency-key", ""),
                        request.headers.get("x-bookings-trigger", ""), str(payload.get("AppointmentId", "")),
                        str(payload.get("StartTime", ""))))
            return Response(status_code=status, headers={"Retry-After": "3"} if status == 429 else None)

        app = Starlette(routes=[Route("/flows/{name}", flow, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="off", timeout_keep_alive=60))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        wait_for_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/flows/{name}?sig=chaos-signature-not-for-logs"

    def snapshot(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)


# ---- one row: the stack, the flows, the workload, the accounting ---------------------------------------


@dataclass
class Flow:
    name: str
    mailbox: str
    trigger: str
    gone: bool = False  # answers 410 on purpose: Power Automate deleted it


@dataclass
class Expectation:
    flow: str
    trigger: str
    appointment: str
    start: str  # for Updated: the StartTime the delivery must carry
    made_at: float


@dataclass
class Run:
    """One fault class's run: its stack, host, flows, and what the workload did."""

    stack: Stack
    receiver: Receiver
    mailboxes: list[str]
    host_env: dict[str, str]
    host_module: str = "bench._chaos_host"
    host: Any = None
    flows: list[Flow] = field(default_factory=list)
    expectations: list[Expectation] = field(default_factory=list)
    changes: int = 0
    kills: int = 0  # SIGKILLs: by the bench and by the host's kill points
    restarts: int = 0
    notes: list[str] = field(default_factory=list)
    graph: httpx.Client | None = None
    services: dict[str, tuple[str, str]] = field(default_factory=dict)  # mailbox -> (1:1, group) service ids
    customers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # mailbox -> its customer records
    before: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # mailbox -> appointments made early
    slot: int = 0
    others: list[Any] = field(default_factory=list)  # the hosts besides ``host`` of a several-host row

    def host_logs(self) -> str:
        return "".join(h.log for h in (self.host, *self.others))

    # -- the host, kept alive --

    def start_host(self, **env: str) -> None:
        if self.host is None:
            self.host = self.stack.start_host(module=self.host_module, **self.host_env, **env)
        else:
            self.host.start(env)

    def supervise(self) -> None:
        """A host that died (its own kill point) is started again, as the Functions runtime would."""
        if self.host.process is not None and self.host.process.poll() is not None:
            self.host.process = None
            self.kills += 1
            self.restart_host()

    def restart_host(self) -> None:
        self.restarts += 1
        self.host.start({"CHAOS_KILL_POINTS": self.kill_points if self.kills < self.kill_budget else ""})

    kill_points: str = ""  # CHAOS_KILL_POINTS of the host from the fault window on (bench._chaos_host)
    kill_budget: int = 8  # then the host runs without kill points, so that the row can end

    def arm_kill_points(self, points: str) -> None:
        """From now on the host dies at ``points`` (not during the set-up: a registration must not fail)."""
        self.kill_points = points
        self.host.stop()
        self.restart_host()

    def kill_host(self) -> None:
        if self.host.process is not None and self.host.process.poll() is None:
            self.host.process.send_signal(signal.SIGKILL)
            self.host.process.wait(10)
            self.host.process = None
            self.kills += 1
            self.restart_host()

    # -- Graph writes (the bench is the Bookings user) --

    def _when(self) -> datetime:
        self.slot += 1
        base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=3)
        return base + timedelta(hours=self.slot)

    @staticmethod
    def _times(start: datetime, minutes: int = 30) -> dict[str, Any]:
        def t(x: datetime) -> dict[str, str]:
            return {"dateTime": x.replace(tzinfo=None).isoformat(), "timeZone": "UTC"}
        return {"startDateTime": t(start), "endDateTime": t(start + timedelta(minutes=minutes))}

    def book(self, mailbox: str, group: bool, note: str = "first visit") -> dict[str, Any]:
        assert self.graph is not None
        one, many = self.services[mailbox]
        n = self.slot + 1
        customers = [{"@odata.type": "#microsoft.graph.bookingCustomerInformation", "name": f"Chaos {n}-{k}",
                      "emailAddress": f"chaos{n}.{k}@example.test", "notes": note} for k in range(2 if group else 1)]
        if group:  # Bookings requires a customer record for each customer of a group appointment
            for customer, known in zip(customers, self.customers[mailbox], strict=False):
                customer.update(customerId=known["id"], name=known["displayName"], emailAddress=known["emailAddress"])
        body = {"serviceId": many if group else one, "customers": customers, **self._times(self._when()),
                **({"maximumAttendeesCount": 10} if group else {})}
        r = self.graph.post(f"/{mailbox}/appointments", json=body)
        if r.is_error:
            raise SystemExit(f"booking in {mailbox} refused: {r.status_code} {r.text}")
        return dict(r.json())

    def expect(self, mailbox: str, trigger: str, appointment: str, start: str = "") -> None:
        made = time.monotonic()
        self.changes += 1
        for flow in self.flows:
            if flow.mailbox == mailbox and flow.trigger == trigger:
                self.expectations.append(Expectation(flow.name, trigger, appointment, start, made))

    def booking(self, mailbox: str, group: bool, note: str = "first visit") -> None:
        appointment = self.book(mailbox, group, note)
        self.expect(mailbox, "AppointmentCreated", appointment["id"])

    def move(self, mailbox: str, appointment: dict[str, Any]) -> None:
        assert self.graph is not None
        new_start = self._when() + timedelta(days=30)
        r = self.graph.patch(f"/{mailbox}/appointments/{quote(appointment['id'], safe='')}",
                             json=self._times(new_start))
        r.raise_for_status()
        self.expect(mailbox, "AppointmentUpdated", appointment["id"], new_start.replace(tzinfo=None).isoformat() + "Z")

    def cancel(self, mailbox: str, appointment: dict[str, Any]) -> None:
        assert self.graph is not None
        r = self.graph.post(f"/{mailbox}/appointments/{quote(appointment['id'], safe='')}/cancel",
                            json={"cancellationMessage": "Chaos cancelled it."})
        r.raise_for_status()
        self.expect(mailbox, "AppointmentDeleted", appointment["id"])

    def workload(self) -> list[Callable[[], None]]:
        """The fault window's changes, interleaved over the mailboxes."""
        steps: list[Callable[[], None]] = []
        for index in range(6):
            for m in self.mailboxes:
                early = self.before[m]
                steps.append([partial(self.booking, m, group=False), partial(self.booking, m, group=True),
                              partial(self.move, m, early[0]), partial(self.move, m, early[2]),
                              partial(self.cancel, m, early[1]), partial(self.cancel, m, early[3])][index])
        return steps

    # -- the quiet end --

    def queue_lengths(self) -> dict[str, int]:
        lengths = {}
        for name in (*QUEUES, *(poison_queue(q) for q in QUEUES)):
            with QueueClient.from_connection_string(self.stack.connection_string, name) as queue:
                lengths[name] = queue.get_queue_properties().approximate_message_count
        return lengths

    def pending_outbox_rows(self) -> int:
        with TableClient.from_connection_string(self.stack.connection_string, MAILBOX_TABLE) as table:
            return sum(1 for _ in table.query_entities(f"State eq '{PENDING}'", select=["State"]))

    def unmet(self) -> list[Expectation]:
        got = self.receiver.snapshot()
        return [e for e in self.live_expectations() if _first_match(e, got) is None]

    def live_expectations(self) -> list[Expectation]:
        gone = {f.name for f in self.flows if f.gone}
        return [e for e in self.expectations if e.flow not in gone]


def _first_match(expectation: Expectation, deliveries: list[Delivery]) -> Delivery | None:
    for d in deliveries:
        if d.flow == expectation.flow and d.appointment == expectation.appointment \
                and _trigger_of(d) == expectation.trigger and (not expectation.start or d.start == expectation.start):
            return d
    return None


def _trigger_of(delivery: Delivery) -> str:
    return {"Created": "AppointmentCreated", "Updated": "AppointmentUpdated", "Deleted": "AppointmentDeleted",
            "Cancelled": "AppointmentDeleted"}.get(delivery.trigger, delivery.trigger)


# ---- fault classes --------------------------------------------------------------------------------------


@dataclass
class Fault:
    """One fault class: what it changes in the host's settings, and what it does at the window's start,
    at each tick of it (seconds since start) and at its end."""

    name: str
    description: str
    start: Callable[[Run], None] = lambda run: None
    tick: Callable[[Run, float], None] = lambda run, elapsed: None
    stop: Callable[[Run], None] = lambda run: None
    host_env: dict[str, str] = field(default_factory=dict)
    persistent_storage: bool = False
    extra_bookings: Callable[[Run], list[Callable[[], None]]] = lambda run: []
    note: str = ""
    hosts: int = 1  # > 1: that many hosts of the app share the storage, behind a round-robin proxy (see below)


def _add_fault(run: Run, **rule: Any) -> None:
    assert run.stack.sandbox is not None
    run.stack.sandbox.control("POST", "faults", {"count": None, **rule})


def _clear_faults(run: Run) -> None:
    assert run.stack.sandbox is not None
    run.stack.sandbox.http.delete("/_sandbox/faults").raise_for_status()


def _graph_storm(status: int) -> Callable[[Run], None]:
    def start(run: Run) -> None:
        for path in GRAPH_READS:
            _add_fault(run, method="GET", path=path, status=status, retryAfter=10)
    return start


def _slow_graph(latency_ms: int) -> Callable[[Run], None]:
    def start(run: Run) -> None:
        _add_fault(run, method="GET", path="/v1.0/solutions/bookingBusinesses/*/calendarView", latencyMs=latency_ms)
    return start


def _at_moments(fractions: tuple[float, ...], window: Callable[[], float],
                action: Callable[[Run], None]) -> Callable[[Run, float], None]:
    """Call ``action`` once each time the window passes one of ``fractions`` of its length."""
    done: dict[int, set[float]] = defaultdict(set)

    def tick(run: Run, elapsed: float) -> None:
        for fraction in fractions:
            if fraction not in done[id(run)] and elapsed >= fraction * window():
                done[id(run)].add(fraction)
                action(run)
    return tick


def _restart_storage(run: Run) -> None:
    """An outage of the storage account: stopped (SIGTERM: Azurite saves what it acknowledged, as Azure
    Storage never loses an acknowledged write), 3 s without storage, then back with the same data."""
    assert run.stack.azurite.process is not None
    stop_process(run.stack.azurite.process)
    run.stack.azurite.process = None
    time.sleep(3)
    run.stack.azurite.start()


def _flows(run: Run, pick: Callable[[Flow], bool], behaviour: Behaviour) -> None:
    for flow in run.flows:
        if pick(flow):
            run.receiver.behaviour[flow.name] = behaviour


def _until(end: Callable[[], float], failing: tuple[int, float], then: tuple[int, float] = (202, 0.0)) -> Behaviour:
    return lambda now: failing if now < end() else then


def faults(window: Callable[[], float]) -> list[Fault]:
    """Every fault class, in the order the table prints them (``window()``: the window's length, s)."""
    started: dict[str, float] = {}

    def mark(name: str) -> Callable[[Run], None]:
        def start(run: Run) -> None:
            started[name] = time.monotonic()
        return start

    def end(name: str) -> Callable[[], float]:
        return lambda: started.get(name, math.inf) + window()

    def flows_failing(name: str, status: int, delay: float, pick: Callable[[Flow], bool]) -> Callable[[Run], None]:
        def start(run: Run) -> None:
            mark(name)(run)
            _flows(run, pick, _until(end(name), (status, delay)))
        return start

    return [
        Fault("none", "no fault: the reference row"),
        Fault("graph-429", "GET on Bookings and calendar routes answers 429 Retry-After: 10",
              start=_graph_storm(429), stop=_clear_faults),
        Fault("graph-503", "GET on Bookings and calendar routes answers 503 Retry-After: 10",
              start=_graph_storm(503), stop=_clear_faults),
        Fault("graph-slower-than-lease", "every calendarView takes 6 s; the reconcile lease is 4 s",
              start=_slow_graph(6000), stop=_clear_faults, host_env={"CHAOS_RECONCILE_LEASE_SECONDS": "4"},
              note="reconcile lease 4 s (60 s on Azure)"),
        Fault("storage-restart", "Azurite stopped and back 3 s later, twice, while calendarView takes 1.5 s",
              start=_slow_graph(1500), tick=_at_moments((0.3, 0.7), window, _restart_storage), stop=_clear_faults,
              persistent_storage=True),
        Fault("host-kill", "host SIGKILLed at random moments and at kill points (before/after commit, "
              "mid-fan-out, after a delivery's 2xx)",
              start=lambda run: run.arm_kill_points(
                  "before_commit:0.15,after_commit:0.3,after_enqueue:0.04,after_post:0.04"),
              tick=_at_moments(tuple(sorted(random.uniform(0.05, 0.95) for _ in range(3))), window,
                               lambda run: run.kill_host()),
              note="queue lease 10 s (10 min on Azure); outbox sweep every 10 s, stale after 15 s (5 min, 1 min)"),
        Fault("flows-5xx", "one Created flow per mailbox answers 503, one Updated flow 429 Retry-After: 3",
              start=lambda run: (flows_failing("flows-5xx", 503, 0, lambda f: f.name.endswith("-0"))(run),
                                 _flows(run, lambda f: f.name.endswith("-2"),
                                        _until(end("flows-5xx"), (429, 0.0))))),
        Fault("flows-timeout", f"one Created flow per mailbox answers after {CALLBACK_TIMEOUT_SECONDS + 5} s "
              f"(the app waits {CALLBACK_TIMEOUT_SECONDS} s)",
              start=flows_failing("flows-timeout", 503, CALLBACK_TIMEOUT_SECONDS + 5, lambda f: f.name.endswith("-0"))),
        Fault("flows-410", "each mailbox's Deleted flow answers 410 Gone (Power Automate deleted it)",
              start=lambda run: [setattr(f, "gone", True) or run.receiver.behaviour.__setitem__(f.name, answers(410))
                                 for f in run.flows if f.trigger == "AppointmentDeleted"],
              note="gone flows' deliveries are not expected; the bench checks they were unregistered"),
        Fault("notifications-duplicated", "every change notification batch is delivered twice",
              start=lambda run: _add_fault(run, kind="duplicateNotifications"), stop=_clear_faults),
        Fault("notifications-reordered", "every change notification batch is held 1.5-3 s (out of order)",
              start=lambda run: _add_fault(run, kind="delayNotifications", latencyMs=3000), stop=_clear_faults),
        Fault("notifications-dropped", "every change notification is dropped, nothing says so",
              start=lambda run: _add_fault(run, kind="dropNotifications"), stop=_clear_faults,
              host_env={"RESYNC_SCHEDULE": "0 */1 * * * *", "RESYNC_SPREAD_MINUTES": "0",
                        "AzureWebJobs.resync_mailboxes.Disabled": "false"},
              note="the delta check off: only the resync can notice, every minute here (every 6 hours on Azure, "
                   "where the delta check finds it first: notifications-dropped-delta)"),
        Fault("lifecycle-missed", "every change notification is dropped and a 'missed' lifecycle event sent",
              start=lambda run: _add_fault(run, kind="dropNotifications", sendMissed=True), stop=_clear_faults),
        Fault("oversized", "a 40,000-character note and a 9,000-emoji note booked next to the others",
              extra_bookings=lambda run: [lambda: run.booking(run.mailboxes[0], group=False, note=LONG_NOTE),
                                          lambda: run.booking(run.mailboxes[0], group=False, note=EMOJI_NOTE)]),
        *several_host_faults(window),
        subscription_removed_silently(),
        subscription_removed_silently_delta(),
        notifications_dropped_delta(),
    ]


# ---- several hosts of the app (Flex Consumption scaled out) ------------------------------------------------
#
# Flex Consumption runs as many instances as the load asks for, all on one storage account. The rows below
# run N local hosts of the app on one Azurite, with a round-robin proxy in front of them as the app's public
# URL (PUBLIC_BASE_URL), so Graph's change notifications, validations and lifecycle events are spread across
# hosts, as the platform's front end spreads requests; queue messages go to whichever host polls first. The
# hosts share one host id, so each timer runs on one of them (devhost.singleton: the runtime's listener lock,
# scaled from 60 s to 15 s, another host trying every 2 s). One host, the first started and so the holder of
# every timer lock, is SIGKILLed mid-window and stays dead (an instance lost for good): what it held (queue
# messages, timer locks, HTTP requests in flight) must be taken over by the others.

SHARED_HOST_ID = "chaos-several-hosts"


class RoundRobin:
    """The app's front end: each request to the next live host in turn (a host that refuses connections is
    skipped, as a load balancer drops an instance that stopped answering)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.backends: list[str] = []
        self.turn = 0

        async def forward(request: Request) -> Response:
            body = await request.body()
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
            async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
                for _ in range(len(self.backends)):
                    self.turn += 1
                    backend = self.backends[self.turn % len(self.backends)]
                    try:
                        r = await client.request(request.method, backend + request.url.path, params=request.url.query,
                                                 content=body, headers=headers)
                    except httpx.ConnectError:
                        continue
                    dropped = ("content-length", "content-encoding", "transfer-encoding")
                    return Response(r.content, r.status_code,
                                    {k: v for k, v in r.headers.items() if k.lower() not in dropped})
            return Response(status_code=502)

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        app = Starlette(routes=[Route("/{path:path}", forward, methods=methods)])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for_port(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def start_several_hosts(run: Run, count: int) -> RoundRobin:
    """``count - 1`` hosts started before ``run.host`` (so one of them holds the timer locks), all behind a proxy."""
    proxy = RoundRobin()
    run.host_env.update({"PUBLIC_BASE_URL": proxy.url, "AzureFunctionsWebHost__hostid": SHARED_HOST_ID})
    run.others = [run.stack.start_host(module=run.host_module, **run.host_env) for _ in range(count - 1)]
    time.sleep(1)  # the first host takes the timer locks before run.host starts
    original = run.start_host

    def start_host(**env: str) -> None:
        original(**env)
        proxy.backends = [h.url for h in (*run.others, run.host)]
    run.start_host = start_host  # type: ignore[method-assign]
    return proxy


def _kill_lock_holder(run: Run) -> None:
    victim = run.others[0]
    if victim.process is not None and victim.process.poll() is None:
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        victim.process = None
        run.kills += 1
        run.notes.append("host 1 (every timer lock's holder) SIGKILLed mid-window, not restarted")


def several_host_faults(window: Callable[[], float]) -> list[Fault]:
    return [Fault(f"{n}-hosts-one-killed", f"{n} hosts on one storage account behind a round-robin proxy; the one "
                  "holding the timer locks SIGKILLed mid-window", hosts=n,
                  tick=_at_moments((0.4,), window, _kill_lock_holder),
                  note="timer lock 15 s (60 s on Azure); queue lease 10 s (10 min)") for n in (2, 3)]


# ---- subscriptions Graph removed without a word (issue 26 §2) ---------------------------------------------

RENEWAL_SCHEDULE_SCALED = "*/10 * * * * *"  # the renewal sweep every 10 s here (RENEWAL_SCHEDULE: 30 min on Azure)


class SilentRemoval:
    """At the window's start Graph removes every mailbox's subscription and tells nobody (no lifecycle
    notification: ``DELETE /_sandbox/subscriptions/{id}``). Only the renewal sweep, comparing Graph's list of
    subscriptions with the rows, can notice; its renewal's 404 re-creates the subscription and resyncs the mailbox.
    Records how long each mailbox went without one."""

    def __init__(self, finder: str = "renewal sweep every 10 s here: bound one period + pacing; every 30 min on "
                                     "Azure") -> None:
        self.finder = finder  # what re-creates the subscriptions in this row, and its bound on Azure
        self.removed_at = 0.0
        self.gone: dict[str, str] = {}  # mailbox -> the removed subscription's id
        self.back: dict[str, float] = {}  # mailbox -> seconds until a new subscription existed
        self.polled = 0.0

    def _look(self, run: Run) -> None:
        assert run.stack.sandbox is not None
        now = time.monotonic()
        for sub in run.stack.sandbox.control("GET", "subscriptions")["value"]:
            mailbox = sub["mailbox"]
            if mailbox in self.gone and mailbox not in self.back and sub["id"] != self.gone[mailbox]:
                self.back[mailbox] = now - self.removed_at
        self.polled = now

    def start(self, run: Run) -> None:
        assert run.stack.sandbox is not None
        for sub in run.stack.sandbox.control("GET", "subscriptions")["value"]:
            if sub["mailbox"] in run.mailboxes:
                run.stack.sandbox.control("DELETE", f"subscriptions/{sub['id']}")
                self.gone[sub["mailbox"]] = sub["id"]
        self.removed_at = time.monotonic()

    def tick(self, run: Run, elapsed: float) -> None:
        if time.monotonic() - self.polled >= 0.5 and len(self.back) < len(self.gone):
            self._look(run)

    def stop(self, run: Run) -> None:
        deadline = time.monotonic() + 120
        while len(self.back) < len(self.gone) and time.monotonic() < deadline:
            self._look(run)
            time.sleep(0.5)
        missing = sorted(set(self.gone) - set(self.back))
        worst = max(self.back.values(), default=math.nan)
        run.notes.append(f"{len(self.back)}/{len(self.gone)} subscriptions re-created, the last after {worst:.1f} s "
                         f"({self.finder})"
                         + (f"; never re-created: {', '.join(missing)}" if missing else ""))
        if missing:
            run.notes.append("lost subscriptions")


def subscription_removed_silently() -> Fault:
    removal = SilentRemoval()
    return Fault("subscription-removed-silently", "every mailbox's Graph subscription removed, no lifecycle "
                 "notification", start=removal.start, tick=removal.tick, stop=removal.stop,
                 host_env={"RENEWAL_SCHEDULE": RENEWAL_SCHEDULE_SCALED,
                           "AzureWebJobs.renew_subscriptions.Disabled": "false"},
                 note="resync off: only the renewal sweep can notice")


def subscription_removed_silently_delta() -> Fault:
    """The same removal with the renewal sweep off: the delta check finds the mailboxes' unannounced changes, and the
    reconcile that delivers them renews each subscription (``ChangeNotNotified``), whose 404 re-creates it."""
    removal = SilentRemoval("found by the delta check, every 10 s here: bound one delta period + a reconcile + the "
                            "renewal task, under 5 min on Azure for a mailbox that changes")
    return Fault("subscription-removed-silently-delta", "every mailbox's Graph subscription removed, no lifecycle "
                 "notification; the renewal sweep does not run", start=removal.start, tick=removal.tick,
                 stop=removal.stop, host_env={"DELTA_CHECK_SCHEDULE": DELTA_CHECK_SCHEDULE_SCALED},
                 note="resync and renewal sweep off: only the delta check's unannounced changes can notice")


# ---- a change whose notification never came, found by the delta check (issue 26 §1) -------------------------

DELTA_CHECK_SCHEDULE_SCALED = "*/10 * * * * *"  # every 10 s here (DELTA_CHECK_SCHEDULE: every 4 min on Azure)


def notifications_dropped_delta() -> Fault:
    return Fault("notifications-dropped-delta", "every change notification is dropped, nothing says so; the delta "
                 "check runs, the resync does not",
                 start=lambda run: _add_fault(run, kind="dropNotifications"), stop=_clear_faults,
                 host_env={"DELTA_CHECK_SCHEDULE": DELTA_CHECK_SCHEDULE_SCALED},
                 note="only the delta check can notice: every 10 s here (every 4 min on Azure: bound 4 min + the "
                      "run, under 5 min at 10,000 mailboxes, bench.delta)")


# ---- running one row -------------------------------------------------------------------------------------


@dataclass
class Row:
    fault: str
    changes: int
    expected: int
    delivered: int
    lost: int
    new_key: int
    same_key: int
    unexpected: int
    max_delay: float
    poison_left: int
    poisoned: int
    notes: list[str]
    gone_kept: int = 0  # flows that answered 410 and are still registered
    kills: int = 0  # host SIGKILLs, by the bench and by kill points

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.new_key == 0 and self.poison_left == 0 and self.gone_kept == 0


def _open_run(s: Any, receiver: Receiver, mailboxes: list[str], host_env: dict[str, str]) -> Run:
    """A run on the stack: the mailboxes cloned from the demo business in the sandbox, a Graph client for the bench's
    own writes, and each mailbox's 1:1 and group service ids."""
    run = Run(s, receiver, mailboxes, host_env)
    sb = s.sandbox
    assert sb is not None
    sb.clone_businesses(mailboxes)
    run.graph = httpx.Client(base_url=f"{sb.graph_url}/solutions/bookingBusinesses", headers=sb.graph_headers(),
                             timeout=60, trust_env=False)
    for m in mailboxes:
        listed = run.graph.get(f"/{m}/services").json()["value"]
        run.services[m] = (next(x["id"] for x in listed if x["maximumAttendeesCount"] == 1),
                           next(x["id"] for x in listed if x["maximumAttendeesCount"] > 1))
    return run


def run_fault(fault: Fault, mailbox_count: int, window: float, drain: float) -> Row:
    mailboxes = [f"chaos-{i}@contoso.test" for i in range(mailbox_count)]
    host_env = {
        **disabled("renew_subscriptions", "resync_mailboxes"),
        "OUTBOX_SWEEP_SCHEDULE": "*/10 * * * * *",
        "CHAOS_STALE_PENDING_SECONDS": "15",
        "DEVHOST_QUEUE_LEASE_SECONDS": "10",
        "AzureFunctionsJobHost__singleton__listenerLockPeriod": "00:00:15",
        "AzureFunctionsJobHost__singleton__listenerLockRecoveryPollingInterval": "00:00:02",
        **fault.host_env,
    }
    with stack(persistent=fault.persistent_storage) as s, Receiver() as receiver:
        run = _open_run(s, receiver, mailboxes, host_env)
        sb = s.sandbox
        for m in mailboxes:
            run.customers[m] = run.graph.get(f"/{m}/customers").json()["value"]
            run.before[m] = [run.book(m, group=k >= 2) for k in range(4)]
        proxy = start_several_hosts(run, fault.hosts) if fault.hosts > 1 else None
        run.start_host()
        admin = {"Authorization": f"Bearer {sb.user_token(ADMIN)}"}
        for m in mailboxes:
            for index, trigger in enumerate(FLOW_TRIGGERS):
                flow = Flow(f"{m.split('@')[0]}-{index}", m, trigger)
                r = httpx.post(webhook_url(run.host.url, m, trigger), headers=admin, timeout=60,
                               json=flow_body(receiver.url(flow.name), trigger))
                r.raise_for_status()
                run.flows.append(flow)
        _wait(lambda: all(f"reconcile {m}: reconciled" in run.host_logs() for m in mailboxes), 90, run,
              "the baseline reconcile of every mailbox")

        steps = run.workload() + fault.extra_bookings(run)
        random.Random(fault.name).shuffle(steps)
        fault.start(run)
        began = time.monotonic()
        due = [began + window * 0.8 * n / max(1, len(steps)) for n in range(len(steps))]
        while (elapsed := time.monotonic() - began) < window:
            while steps and due[len(due) - len(steps)] <= time.monotonic():
                steps.pop(0)()
            fault.tick(run, elapsed)
            run.supervise()
            time.sleep(0.05)
        for step in steps:
            step()
        fault.stop(run)

        def quiet() -> bool:
            return not run.unmet() and not any(run.queue_lengths().values()) and run.pending_outbox_rows() == 0

        if not _wait(quiet, drain, run, None):
            run.notes.append(f"not quiet {drain:g} s after the fault ended")
        time.sleep(3)  # late repeats, if any, are counted too
        run.supervise()
        row = _account(run, fault)
        if proxy is not None:
            proxy.close()
        run.graph.close()
        if run.host.process is not None:
            run.host.stop()
        return row


def _wait(condition: Callable[[], bool], timeout: float, run: Run, what: str | None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.supervise()
        try:
            if condition():
                return True
        except Exception:
            pass
        time.sleep(0.5)
    if what is not None:
        raise SystemExit(f"{what} did not finish within {timeout:g} s; host log: {run.host.log_file}")
    return False


@dataclass
class Tally:
    delivered: int
    delays: list[float]
    new_key: int
    same_key: int
    unexpected: int


def tally(expected: list[Expectation], void: set[str], got: list[Delivery]) -> Tally:
    """Count deliveries against expectations; expectations of flows in ``void`` (gone on purpose) are not
    owed, but deliveries they did get before going are not unexpected either."""
    delays = []
    for e in expected:
        if e.flow not in void and (match := _first_match(e, got)) is not None:
            delays.append(match.at - e.made_at)
    by_item: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for d in got:
        by_item[(d.flow, _trigger_of(d), d.appointment)].append(d.key)
    wanted = {(e.flow, e.trigger, e.appointment) for e in expected}
    return Tally(len(delays), delays, new_key=sum(len(set(keys)) - 1 for keys in by_item.values()),
                 same_key=sum(len(keys) - len(set(keys)) for keys in by_item.values()),
                 unexpected=sum(len(keys) for item, keys in by_item.items() if item not in wanted))


def _account(run: Run, fault: Fault) -> Row:
    live = run.live_expectations()
    counted = tally(run.expectations, {f.name for f in run.flows if f.gone}, run.receiver.snapshot())
    lengths = run.queue_lengths()
    poison_left = sum(n for q, n in lengths.items() if q.endswith("-poison"))
    log = run.host_logs()
    counts = {name: log.count(name) for name in EVENT_LINES}
    notes = list(run.notes)
    if fault.note:
        notes.append(fault.note)
    if run.kills:
        notes.append(f"{run.kills} SIGKILLs ({log.count('chaos: SIGKILL at')} at kill points)")
    gone, left = [f for f in run.flows if f.gone], 0
    if gone:
        admin = {"Authorization": f"Bearer {run.stack.sandbox.user_token(ADMIN)}"}  # type: ignore[union-attr]
        for m in run.mailboxes:
            r = httpx.get(f"{run.host.url}/api/v1/bookingBusinesses/{m}/webhooks", headers=admin, timeout=30)
            r.raise_for_status()
            left += sum(1 for w in r.json()["webhooks"] if w.get("trigger") == "AppointmentDeleted")
        notes.append(f"gone flows unregistered: {len(gone) - left}/{len(gone)}")
    errors = sum(1 for line in log.splitlines() if " ERROR " in line or " CRITICAL " in line)
    if errors:
        notes.append(f"{errors} error lines in the host log")
    for name in ("AppointmentNotStored", "dead-lettered"):
        if counts[name]:
            notes.append(f"{counts[name]} x {name}")
    if any(n for q, n in lengths.items() if not q.endswith("-poison")):
        notes.append("queues not empty: " + ", ".join(f"{q} {n}" for q, n in lengths.items() if n))
    return Row(fault.name, run.changes, len(live), counted.delivered, len(live) - counted.delivered, counted.new_key,
               counted.same_key, counted.unexpected, max(counted.delays, default=math.nan), poison_left,
               counts["QueueMessagePoisoned"], notes, gone_kept=left, kills=run.kills)


# ---- the table ---------------------------------------------------------------------------------------------


def run(names: list[str] | None, mailbox_count: int, window: float, drain: float,
        echo: Callable[[str], None] = print) -> list[Row]:
    classes = faults(lambda: window)
    known = {f.name for f in classes} | {f.name for f in reminder_faults(lambda: window)}
    unknown = set(names or []) - known
    if unknown:
        raise SystemExit(f"unknown fault class(es): {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    rows = []
    for fault in classes:
        if names and fault.name not in names and fault.name != "none":
            continue
        started = time.monotonic()
        row = run_fault(fault, mailbox_count, window, drain)
        rows.append(row)
        echo(f"  {fault.name}: {row.delivered}/{row.expected} delivered, {row.lost} lost, {row.new_key} new-key "
             f"duplicates, {row.poison_left} in poison ({time.monotonic() - started:.0f} s)")
    rows += run_reminder_rows(names, mailbox_count, window, drain, echo)  # the time-relative triggers' rows
    return rows


def print_rows(rows: list[Row]) -> None:
    reference = next((r.max_delay for r in rows if r.fault == "none"), math.nan)
    print_table(["fault", "changes", "expected", "delivered", "lost", "new-key dup", "same-key rep", "unexpected",
                 "max delay s", "poison left", "poisoned", "delay/none"],
                [[r.fault, r.changes, r.expected, r.delivered, r.lost, r.new_key, r.same_key, r.unexpected,
                  r.max_delay, r.poison_left, r.poisoned, r.max_delay / reference] for r in rows])
    for r in rows:
        if r.notes:
            print(f"  {r.fault}: {'; '.join(r.notes)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated fault classes (the 'none' row always runs)")
    parser.add_argument("--mailboxes", type=int, default=3)
    parser.add_argument("--window", type=float, default=60.0, help="seconds each fault lasts")
    parser.add_argument("--drain", type=float, default=300.0, help="seconds to wait for quiet after the fault")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or None
    print(f"chaos: {args.mailboxes} mailboxes x 5 flows, 6 changes per mailbox in each {args.window:g} s fault window")
    rows = run(names, args.mailboxes, args.window, args.drain)
    print()
    print_rows(rows)
    if not all(r.clean for r in rows):
        raise SystemExit(1)


# ---- the time-relative triggers' rows (about to start, has ended) -----------------------------------------
# Their own workload and accounting over the same stack, host, receiver and tally. Per mailbox: flows *about
# to start* ×2 (5 minutes before) and *has ended* ×1 (at the end), registered first; then 3 appointments
# starting 5 minutes and a few seconds after instants spread over the window, and 1 ending at such an instant.
# In the window one of the three is moved to a later instant (its flows must get the new time only: a delivery
# at the old time would be a second key for the same appointment) and one is cancelled before its instant (a
# delivery would be "unexpected"). A row's max delay is the lateness after the instant. The timer runs every 5 s
# here (every minute on Azure; each run fires what is due until the next, each at its instant).

REMINDER_FLOWS = (("AppointmentStarting", 5), ("AppointmentStarting", 5), ("AppointmentEnded", 0))
REMINDER_STEPS = (0.15, 0.35, 0.55, 0.45)  # instants (fractions of the window) of appointments 0-2 and the ending


@dataclass
class ReminderFault:
    name: str
    description: str
    start: Callable[[Run], None] = lambda run: None
    tick: Callable[[Run, float], None] = lambda run, elapsed: None
    stop: Callable[[Run], None] = lambda run: None
    persistent_storage: bool = False
    note: str = ""


def reminder_faults(window: Callable[[], float]) -> list[ReminderFault]:
    kills = tuple(sorted(random.uniform(0.1, 0.9) for _ in range(3)))
    return [
        ReminderFault("reminders-none", "time-relative triggers, no fault: their reference row"),
        ReminderFault("reminders-host-kill", "host SIGKILLed at random moments around the instants and at kill "
                      "points (reminder event created, before its fan-out; fired, due row not deleted; after a 2xx)",
                      start=lambda run: run.arm_kill_points("reminder_event:0.25,reminder_done:0.25,after_post:0.1"),
                      tick=_at_moments(kills, window, lambda run: run.kill_host()),
                      note="queue lease 10 s (10 min on Azure); outbox sweep every 10 s (5 min)"),
        ReminderFault("reminders-storage-restart", "Azurite stopped and back 3 s later, twice, across the instants",
                      tick=_at_moments((0.3, 0.5), window, _restart_storage), persistent_storage=True),
        ReminderFault("reminders-graph-503", "every Graph GET answers 503 Retry-After: 10 from the window's start to "
                      "60% of it, across the first instants",
                      start=_graph_storm(503), tick=_at_moments((0.6,), window, _clear_faults), stop=_clear_faults),
    ]


def _at_instant(run: Run, began: float, fraction: float, window: float) -> tuple[datetime, float]:
    """The wall-clock instant ``fraction`` into the window (whole seconds) and its monotonic twin."""
    instant = (datetime.now(UTC) + timedelta(seconds=began + fraction * window - time.monotonic())).replace(
        microsecond=0)
    return instant, time.monotonic() + (instant - datetime.now(UTC)).total_seconds()


def _reminder_expect(run: Run, mailbox: str, trigger: str, appointment: dict[str, Any], start: datetime,
                     due: float) -> None:
    for flow in run.flows:
        if flow.mailbox == mailbox and flow.trigger == trigger:
            run.expectations.append(Expectation(flow.name, trigger, appointment["id"],
                                                start.replace(tzinfo=None).isoformat() + "Z", due))


def _reminder_book(run: Run, mailbox: str, start: datetime, minutes: int = 30) -> dict[str, Any]:
    assert run.graph is not None
    body = {"serviceId": run.services[mailbox][0], **Run._times(start, minutes),
            "customers": [{"@odata.type": "#microsoft.graph.bookingCustomerInformation", "name": "Chaos Reminder",
                           "emailAddress": "chaos.reminder@example.test"}]}
    r = run.graph.post(f"/{mailbox}/appointments", json=body)
    r.raise_for_status()
    run.changes += 1
    return dict(r.json())


def _reminder_workload(run: Run, began: float, window: float) -> list[tuple[float, Callable[[], None]]]:
    """Book now; return the window's changes (when, what): a move to a later instant, a cancellation."""
    before = timedelta(minutes=5)
    changes: list[tuple[float, Callable[[], None]]] = []
    for m in run.mailboxes:
        booked = []
        for fraction in REMINDER_STEPS[:3]:
            instant, due = _at_instant(run, began, fraction, window)
            booked.append((_reminder_book(run, m, instant + before), instant, due))
        kept, instant, due = booked[2]  # [0] is moved, [1] cancelled, [2] stays
        _reminder_expect(run, m, "AppointmentStarting", kept, instant + before, due)
        moved_to, moved_due = _at_instant(run, began, 0.75, window)

        def move(m: str = m, appointment: dict[str, Any] = booked[0][0], to: datetime = moved_to,
                 due: float = moved_due) -> None:
            assert run.graph is not None
            run.graph.patch(f"/{m}/appointments/{quote(appointment['id'], safe='')}",
                            json=Run._times(to + before)).raise_for_status()
            run.changes += 1
            _reminder_expect(run, m, "AppointmentStarting", appointment, to + before, due)

        def cancel(m: str = m, appointment: dict[str, Any] = booked[1][0]) -> None:
            assert run.graph is not None
            run.graph.post(f"/{m}/appointments/{quote(appointment['id'], safe='')}/cancel",
                           json={"cancellationMessage": "Chaos cancelled it."}).raise_for_status()
            run.changes += 1

        changes += [(0.05, move), (0.08, cancel)]
        end, due = _at_instant(run, began, REMINDER_STEPS[3], window)
        ending = _reminder_book(run, m, end - timedelta(minutes=30))
        _reminder_expect(run, m, "AppointmentEnded", ending, end - timedelta(minutes=30), due)
    return sorted(changes, key=lambda change: change[0])


def _reminder_rows_due(run: Run) -> int:
    """Due rows whose instant has passed: what the timer still owes."""
    now = datetime.now(UTC)
    with TableClient.from_connection_string(run.stack.connection_string, MAILBOX_TABLE) as table:
        return sum(1 for _ in table.query_entities(
            "PartitionKey ge '~due:' and PartitionKey lt '~due;' and FireAt le @now", parameters={"now": now},
            select=["FireAt"]))


def run_reminder_fault(fault: ReminderFault, mailbox_count: int, window: float, drain: float) -> Row:
    mailboxes = [f"chaos-{i}@contoso.test" for i in range(mailbox_count)]
    host_env = {**disabled("renew_subscriptions", "resync_mailboxes"), "OUTBOX_SWEEP_SCHEDULE": "*/10 * * * * *",
                "CHAOS_STALE_PENDING_SECONDS": "15", "DEVHOST_QUEUE_LEASE_SECONDS": "10",
                "REMINDER_SCHEDULE": "*/5 * * * * *"}
    with stack(persistent=fault.persistent_storage) as s, Receiver() as receiver:
        run = _open_run(s, receiver, mailboxes, host_env)
        sb = s.sandbox
        run.start_host()
        admin = {"Authorization": f"Bearer {sb.user_token(ADMIN)}"}
        for m in mailboxes:
            for index, (trigger, offset) in enumerate(REMINDER_FLOWS):
                flow = Flow(f"{m.split('@')[0]}-r{index}", m, trigger)
                r = httpx.post(webhook_url(run.host.url, m, trigger), headers=admin, timeout=60,
                               json={**flow_body(receiver.url(flow.name), trigger), "offsetMinutes": offset})
                r.raise_for_status()
                run.flows.append(flow)
        _wait(lambda: all(f"reconcile {m}: reconciled" in run.host.log for m in mailboxes), 90, run,
              "the baseline reconcile of every mailbox")
        time.sleep(1.5)  # every instant after the flows' registration, in whole seconds
        began = time.monotonic() + 5  # the bookings and their reconciles first
        changes = _reminder_workload(run, began, window)
        while time.monotonic() < began:
            run.supervise()
            time.sleep(0.05)
        fault.start(run)
        while (elapsed := time.monotonic() - began) < window:
            while changes and changes[0][0] * window <= elapsed:
                changes.pop(0)[1]()
            fault.tick(run, elapsed)
            run.supervise()
            time.sleep(0.05)
        fault.stop(run)

        def quiet() -> bool:
            return not run.unmet() and not any(run.queue_lengths().values()) and run.pending_outbox_rows() == 0 \
                and _reminder_rows_due(run) == 0

        if not _wait(quiet, drain, run, None):
            run.notes.append(f"not quiet {drain:g} s after the fault ended")
        time.sleep(6)  # a late repeat, or an old instant firing after all, is counted too
        run.supervise()
        row = _account(run, Fault(fault.name, fault.description, note=fault.note))
        run.graph.close()
        if run.host.process is not None:
            run.host.stop()
        return row


def run_reminder_rows(names: list[str] | None, mailbox_count: int, window: float, drain: float,
                      echo: Callable[[str], None] = print) -> list[Row]:
    rows = []
    for fault in reminder_faults(lambda: window):
        if names and fault.name not in names and fault.name != "reminders-none":
            continue
        if names and not any(n.startswith("reminders-") for n in names):
            continue
        started = time.monotonic()
        row = run_reminder_fault(fault, mailbox_count, window, drain)
        rows.append(row)
        echo(f"  {fault.name}: {row.delivered}/{row.expected} delivered, {row.lost} lost, {row.new_key} new-key "
             f"duplicates, {row.unexpected} unexpected, {row.poison_left} in poison "
             f"({time.monotonic() - started:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
