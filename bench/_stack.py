"""What the benches share: the local stack (Azurite, Graph sandbox, local host), bursts, percentiles, tables.

Not a bench itself (the leading underscore keeps ``python -m bench`` from running it).

The Graph sandbox runs as its own process (``python -m graph_sandbox``), not in a thread of the bench:
the bench's client measures latencies, and a sandbox sharing its interpreter (and GIL) would add its
own work to every measured request. The local host is ``python -m devhost`` (``testing.hosting``), as in
the end-to-end tests; Azurite runs in memory on free ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devhost.processes import ROOT, Azurite, free_port, python_module, stop_process, wait_for_port

ADMIN = "admin@contoso.test"
# Every function of function_app that consumes a queue or runs on a timer; benches switch off what would
# disturb their measurement (the local host honours AzureWebJobs.<name>.Disabled like Azure).
QUEUE_FUNCTIONS = ("reconcile_mailbox", "mailbox_changes_poison", "deliveries", "deliveries_poison",
                   "subscription_tasks", "subscription_tasks_poison")


def disabled(*names: str) -> dict[str, str]:
    return {f"AzureWebJobs.{name}.Disabled": "true" for name in names}


@dataclass(frozen=True)
class Timer:
    """A timer of function_app whose schedule is a setting, and its runs an hour at the setting's default."""

    setting: str
    per_hour: float
    # A run that lasts its period (it waits for what falls due within it): what a run costs depends on the
    # period, so benches measure it on the shipped schedule, not a short one.
    paced: bool = False

    @property
    def shipped(self) -> str:
        return _default(self.setting)


def _default(setting: str) -> str:
    from shared.adapters.settings import SPECS

    return next(str(s.default) for s in SPECS if s.name == setting)


def _timer(setting: str, paced: bool = False) -> Timer:
    """Runs an hour counted over a week of the default schedule (shared/adapters/settings.py), so they follow it."""
    from datetime import UTC, datetime, timedelta

    from shared.contracts.ncrontab import fire_times

    default = _default(setting)
    start = datetime(2026, 1, 5, tzinfo=UTC) - timedelta(seconds=1)  # a Monday at midnight, included
    runs = 0
    for when in fire_times(default, start):
        if when >= start + timedelta(weeks=1):
            break
        runs += 1
    return Timer(setting, runs / 168, paced)


# Every timer of function_app with a schedule setting (the daily check_credential_expiry is fixed in code, so
# not measured): what bench.capacity and bench.telemetry measure per run and scale to the shipped schedules.
TIMERS = {"sweep_outbox": _timer("OUTBOX_SWEEP_SCHEDULE"), "measure_queues": _timer("QUEUE_METRICS_SCHEDULE"),
          "resync_mailboxes": _timer("RESYNC_SCHEDULE"), "check_calendar_changes": _timer("DELTA_CHECK_SCHEDULE"),
          "fire_reminders": _timer("REMINDER_SCHEDULE", paced=True), "renew_subscriptions": _timer("RENEWAL_SCHEDULE"),
          "refresh_directory": _timer("DIRECTORY_REFRESH_SCHEDULE"), "export_flows": _timer("BACKUP_SCHEDULE")}
FIXED_TIMERS = ("check_credential_expiry",)
# Every timer function: what a bench switches off so that none runs during its measurement.
TIMER_FUNCTIONS = (*TIMERS, *FIXED_TIMERS)


def measured_on(timer: str, seconds: int) -> tuple[str, float]:
    """The schedule a bench measures ``timer``'s runs on, and its period in seconds: every ``seconds`` s, or the
    shipped schedule for a paced timer."""
    t = TIMERS[timer]
    if t.paced:
        return t.shipped, 3600 / t.per_hour
    return f"*/{seconds} * * * * *", float(seconds)


# ---- statistics and output ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) — with 50 samples p99 is the maximum, as it should be."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def ms(seconds: float) -> float:
    return seconds * 1000


def latency_rows(results: dict[str, list[Sample]], base: float, p99_over: float) -> list[list[Any]]:
    """Table rows per scenario: requests, statuses, p50/p99 in ms, p50 / ``base``, p99 / ``p99_over``."""
    rows = []
    for name, samples in results.items():
        seconds = [x.seconds for x in samples]
        statuses = " ".join(f"{k}x{v}" for k, v in sorted(Counter(x.status for x in samples).items()))
        p50, p99 = percentile(seconds, 50), percentile(seconds, 99)
        rows.append([name, len(samples), statuses, ms(p50), ms(p99), p50 / base, p99 / p99_over])
    return rows


# ---- bursts -------------------------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    status: int


async def burst(calls: Sequence[Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]],
                client: httpx.AsyncClient) -> list[Sample]:
    """Start every call at once (each on a connection of its own, opened beforehand) and time each one.

    A barrier releases the calls together, so the latencies are those of a real burst: the last request
    of the burst waits behind the others in the server, which is what a p99 under load should show."""
    start = asyncio.Event()

    async def one(call: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]) -> Sample:
        await start.wait()
        began = time.perf_counter()
        try:
            response = await call(client)
        except httpx.TransportError:
            # Counted, not raised: a dropped connection is a result too (status 0 in the tables).
            return Sample(time.perf_counter() - began, 0)
        return Sample(time.perf_counter() - began, response.status_code)

    tasks = [asyncio.create_task(one(c)) for c in calls]
    await asyncio.sleep(0)  # every task is now waiting at the barrier
    start.set()
    return list(await asyncio.gather(*tasks))


def burst_client(concurrency: int, timeout: float = 120) -> httpx.AsyncClient:
    """A client with a connection per concurrent caller (httpx's default pool of 100 would queue a burst
    of 200 in the client, and that wait is not the server's)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False)


async def warm_connections(client: httpx.AsyncClient, call: Callable[[httpx.AsyncClient], Awaitable[Any]],
                           concurrency: int) -> None:
    """Open ``concurrency`` keep-alive connections (a burst then measures requests, not TCP handshakes).

    Not measured, so a connection the server closed while idle is simply tried again."""
    async def one() -> None:
        for _ in range(3):
            try:
                await call(client)
                return
            except httpx.TransportError:
                continue

    await asyncio.gather(*(one() for _ in range(concurrency)))


# ---- a lean HTTP/1.1 client for bursts ---------------------------------------------------------------


@dataclass(frozen=True)
class RawRequest:
    """One request, serialised once before the burst (method, path with query, headers, body)."""

    method: str
    target: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, host: str) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(self.body)}",
                 *(f"{k}: {v}" for k, v in self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one whole response (Content-Length or chunked) and return its status."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    if fields.get("transfer-encoding", "").lower() == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")  # the empty trailer section
    else:
        await reader.readexactly(int(fields.get("content-length", "0")))
    return status


async def raw_burst(base_url: str, requests: Sequence[RawRequest]) -> list[Sample]:
    """Send every request at once, each on a fresh connection opened beforehand, and time each answer.

    Why not httpx: its client costs about 1 ms of CPU per request, so 200 of them on this 2-core machine
    measure the client (a hello-world ASGI app shows p50 150 ms / p99 300 ms through httpx, 21 / 30 ms
    through this). Graph is a remote client; here the client should cost the server as little CPU as
    possible. Requests are written raw, responses read just far enough to know the status and the end.
    """
    parsed = httpx.URL(base_url)
    host, port = parsed.host, parsed.port or 80
    connections = [await asyncio.open_connection(host, port) for _ in requests]
    start = asyncio.Event()

    async def one(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Sample:
        await start.wait()
        began = time.perf_counter()
        try:
            writer.write(request)
            status = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            return Sample(time.perf_counter() - began, 0)  # counted as status 0, not raised
        return Sample(time.perf_counter() - began, status)

    try:
        tasks = [asyncio.create_task(one(r.encode(f"{host}:{port}"), *c))
                 for r, c in zip(requests, connections, strict=True)]
        await asyncio.sleep(0)  # every task is now waiting at the barrier
        start.set()
        return list(await asyncio.gather(*tasks))
    finally:
        for _, writer in connections:
            writer.close()


# ---- the Graph sandbox as a process ---------------------------------------------------------------


class SandboxProcess:
    """``python -m graph_sandbox`` on a free port, with the helpers the benches need (all over HTTP)."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_file = log_dir / "sandbox.log"
        self.process: subprocess.Popen | None = None
        self.http = httpx.Client(base_url=self.base_url, timeout=120, trust_env=False)

    def start(self) -> SandboxProcess:
        log = self.log_file.open("w")
        # Its own HTTPS port and CA file: the default 7075 may be another sandbox's (``make run``, a test).
        self.process = python_module("graph_sandbox", "--port", str(self.port), "--tls-port", "0",
                                     "--tls-dir", str(self.log_file.parent / "tls"), "--log-level", "warning",
                                     stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, timeout=30, process=self.process)
        return self

    def stop(self) -> None:
        self.http.close()
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def graph_url(self) -> str:
        return f"{self.base_url}/v1.0"

    @property
    def tenant_id(self) -> str:
        return str(self.control("GET", "health")["tenantId"])

    def settings(self) -> dict[str, str]:
        """App settings pointing every outside endpoint at this sandbox."""
        health = self.control("GET", "health")
        tenant = str(health["tenantId"])
        return {"ENTRA_AUTHORITY": health["entraUrl"], "ENTRA_CA_FILE": health["caFile"],
                "GRAPH_BASE_URL": self.graph_url, "ENTRA_TENANT_ID": tenant,
                "AUTH_ISSUER": f"{self.base_url}/{tenant}/v2.0",
                "AUTH_JWKS_URL": f"{self.base_url}/{tenant}/discovery/v2.0/keys"}

    def control(self, verb: str, path: str, json: Any = None, **params: Any) -> Any:
        r = self.http.request(verb, f"/_sandbox/{path.lstrip('/')}", json=json, params=params or None)
        r.raise_for_status()
        return r.json() if r.content else None

    def user_token(self, upn: str) -> str:
        return str(self.control("POST", "tokens/user", {"upn": upn})["access_token"])

    def graph_headers(self) -> dict[str, str]:
        from graph_sandbox.config import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, GRAPH_AUDIENCE

        r = self.http.post(f"/{self.tenant_id}/oauth2/v2.0/token", data={
            "grant_type": "client_credentials", "client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET,
            "scope": f"{GRAPH_AUDIENCE}/.default"})
        r.raise_for_status()
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def clone_businesses(self, smtps: Sequence[str]) -> None:
        for smtp in smtps:
            self.control("POST", "businesses", {"smtp": smtp})

    def requests_since(self, seq: int, **filters: str) -> list[dict[str, Any]]:
        return list(self.control("GET", "requests", since=seq, **filters)["value"])

    def clear_request_log(self) -> None:
        """Forget logged requests (sequence numbers keep counting), so a phase's log holds only its own."""
        self.http.delete("/_sandbox/requests").raise_for_status()


# ---- the whole stack ------------------------------------------------------------------------------


@dataclass
class Stack:
    azurite: Azurite
    sandbox: SandboxProcess | None
    log_dir: Path
    hosts: list[Any] = field(default_factory=list)

    @property
    def connection_string(self) -> str:
        return self.azurite.connection_string

    def app_settings(self, **overrides: str) -> dict[str, str]:
        from testing.settings import sample_settings

        values = {**sample_settings(), "AzureWebJobsStorage": self.connection_string}
        if self.sandbox is not None:
            values.update(self.sandbox.settings())
        return {**values, **overrides}

    def start_host(self, module: str = "devhost", **overrides: str) -> Any:
        """The project's function_app under ``python -m devhost`` (or a launcher taking its arguments),
        settings = the sample + the stack + overrides."""
        from testing.hosting import HostProcess

        port = free_port()
        env = self.app_settings(**{"PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", **overrides})  # a proxy may own it
        host = HostProcess(ROOT, port, env=env, log_dir=self.log_dir / f"host-{len(self.hosts)}", module=module)
        host.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.hosts.append(host.start())
        return host

    def use_in_process(self, **overrides: str) -> None:
        """Point this process's own app code (``shared``) at the stack, e.g. to run the renewal sweep."""
        from shared.adapters.settings import reset_settings_cache

        os.environ.update(self.app_settings(**overrides))
        reset_settings_cache()


@contextlib.contextmanager
def stack(with_sandbox: bool = True, persistent: bool = False) -> Iterator[Stack]:
    """Azurite (+ the sandbox, seeded with the demo tenant) with the app's tables and queues created.

    ``persistent``: Azurite keeps its data on disk, so that ``stack.azurite.restart()`` is an outage, not a wipe."""
    from testing.storage import create_app_storage

    log_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    azurite = Azurite.on_free_ports(persistent=persistent).start()
    sandbox: SandboxProcess | None = None
    s = Stack(azurite, None, log_dir)
    try:
        if with_sandbox:
            sandbox = SandboxProcess(log_dir).start()
            s.sandbox = sandbox
        create_app_storage(azurite.connection_string)
        yield s
    finally:
        for host in s.hosts:
            host.stop()
        if sandbox is not None:
            sandbox.stop()
        azurite.stop()


def flow_body(callback: str, trigger: str) -> dict[str, str]:
    return {"notificationURL": callback, "resource": "Appointments",
            "changeType": trigger.removeprefix("Appointment")}


def webhook_url(host_url: str, mailbox: str, trigger: str) -> str:
    return f"{host_url}/api/v1/bookingBusinesses/{mailbox}/webhooks/{trigger}"
