"""The time-relative triggers at tenant scale: how late a reminder goes out, and what finding it costs.

The due index (``shared.records.reminders``) holds one row per (appointment, flow, instant), partitioned by the
minute it fires; the timer reads the range of minutes up to one period ahead. This bench fills the index with
``--mailboxes`` × ``--appointments`` rows that are *not* due (instants spread over the next 7 days, seeded straight
into Azurite: the rows the reconcile writes, without booking half a million appointments in the sandbox), then
drives a sample through the whole product: ``--sample-mailboxes`` clones of the demo clinic, each with an *about to
start* flow (5 minutes before) registered through the API, and ``--sample-appointments`` appointments each booked in
the Graph sandbox, their instants spread over ``--spread`` seconds from ``--lead`` seconds after booking. The host
runs with the shipped ``REMINDER_SCHEDULE`` (every minute) and its storage through a counting proxy
(``bench._storage_meter``); a local receiver stands in for Power Automate.

Measured per phase: lateness of each delivery after its ``ScheduledFor`` (p50, p99, max), the host's storage
transactions per due event from just before the first instant until the last delivery (table reads: queries and
point reads; all table transactions; queue transactions), and the rows the timer's range query returns a minute
ahead of the first instant (the same query, in process, not metered) against the rows of the whole index. Two
phases: first with a tenth of the not-due rows, then with all of them; the last line is the large phase over the
small one (≈ 1: the cost does not depend on the appointments that are not due).

    python -m bench.reminders                     # 10,000 × 50 not-due rows, 20 × 10 due; ~20 min
    python -m bench.reminders --mailboxes 1000 --sample-mailboxes 5 --sample-appointments 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench._stack import ADMIN, Stack, disabled, flow_body, print_table, stack, webhook_url
from bench._storage_meter import StorageMeter
from testing.receiver import Receiver

OFFSET_MINUTES = 5
SPREAD = timedelta(days=7)
OTHER_TIMERS = ("renew_subscriptions", "resync_mailboxes", "sweep_outbox", "measure_queues", "refresh_directory",
                "export_flows", "check_credential_expiry")


async def _seed(first: int, count: int, appointments: int, now: datetime) -> int:
    """Not-due rows of mailboxes ``first``..``first + count``, ``appointments`` each, their instants spread evenly
    over the minutes from 10 minutes to 7 days away (as many bookings as a week holds land in each minute's
    partition; written a few hundred minutes at a time, one transaction per minute)."""
    from shared.records.reminders import DueReminder, put

    total = count * appointments
    minutes = int(SPREAD.total_seconds() // 60)
    rng = random.Random(first)
    flows = {m: str(uuid.UUID(int=rng.getrandbits(128))) for m in range(first, first + count)}
    written, rows = 0, []
    for n in range(total):
        m, a = first + n % count, n // count
        minute = n * minutes // total
        instant = now.replace(second=0, microsecond=0) + timedelta(minutes=10 + minute, seconds=rng.randrange(60))
        rows.append(DueReminder(f"tenant-{m}@contoso.test", f"appt-{m}-{a}", flows[m], "AppointmentStarting",
                                instant, instant))
        if len(rows) >= 20_000 or n == total - 1:
            written += await put(rows)
            rows = []
    return written


async def _in_range(horizon: datetime) -> int:
    """Rows the timer's range query returns by ``horizon`` (the same query, in this process)."""
    from shared.records.reminders import due_by

    return len(await due_by(horizon, 1_000_000))


def _seed_rows(s: Stack, first: int, count: int, appointments: int) -> float:
    s.use_in_process()
    started = time.monotonic()
    asyncio.run(_seed(first, count, appointments, datetime.now(UTC)))
    return time.monotonic() - started


def _sample(s: Stack, host: Any, meter: StorageMeter, receiver: Receiver, phase: str, mailboxes: int,
            appointments: int, lead: float, spread: float) -> dict[str, Any]:
    """Flows and bookings in the sample mailboxes, then the deliveries and what they cost."""
    sb = s.sandbox
    assert sb is not None
    names = [f"sample-{phase}-{i}@contoso.test" for i in range(mailboxes)]
    sb.clone_businesses(names)
    admin = {"Authorization": f"Bearer {sb.user_token(ADMIN)}"}
    for m in names:
        r = httpx.post(webhook_url(host.url, m, "AppointmentStarting"), headers=admin, timeout=60,
                       json={**flow_body(receiver.url(f"{phase}-{m}"), "AppointmentStarting"),
                             "offsetMinutes": OFFSET_MINUTES})
        r.raise_for_status()
    deadline = time.monotonic() + 120
    while not all(f"reconcile {m}: reconciled" in host.log for m in names):
        if time.monotonic() > deadline:
            raise SystemExit(f"the sample's baselines did not finish; host log: {host.log_file}")
        time.sleep(0.2)
    graph = httpx.Client(base_url=f"{sb.graph_url}/solutions/bookingBusinesses", headers=sb.graph_headers(),
                         timeout=60, trust_env=False)
    first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=lead)
    total = mailboxes * appointments
    instants = [first + timedelta(seconds=spread * n / total) for n in range(total)]
    for n, instant in enumerate(instants):
        m = names[n % mailboxes]
        service = next(x["id"] for x in graph.get(f"/{m}/services").json()["value"] if x["maximumAttendeesCount"] == 1)
        start = instant + timedelta(minutes=OFFSET_MINUTES)
        graph.post(f"/{m}/appointments", json={
            "serviceId": service, "customers": [{"name": f"Reminded {n}", "emailAddress": f"r{n}@example.test"}],
            "startDateTime": {"dateTime": start.replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
            "endDateTime": {"dateTime": (start + timedelta(minutes=30)).replace(tzinfo=None).isoformat(),
                            "timeZone": "UTC"}}).raise_for_status()
    graph.close()
    time.sleep(max(0.0, (first - datetime.now(UTC)).total_seconds() - 5))
    counted_from = meter.snapshot()
    in_range = asyncio.run(_in_range(first + timedelta(seconds=60)))  # not through the meter
    deadline = time.monotonic() + (instants[-1] - datetime.now(UTC)).total_seconds() + 180
    while time.monotonic() < deadline:
        got = [r for r in receiver.requests() if r.flow.startswith(f"{phase}-")]
        if len(got) >= total:
            break
        time.sleep(0.5)
    time.sleep(2)
    counts = meter.snapshot() - counted_from
    got = [r for r in receiver.requests() if r.flow.startswith(f"{phase}-")]
    lateness = sorted(r.at - datetime.fromisoformat(json.loads(r.body)["ScheduledFor"].replace("Z", "+00:00"))
                      .timestamp() for r in got)
    keys = {r.headers.get("idempotency-key") for r in got}
    return {"due": total, "delivered": len(got), "keys": len(keys), "lateness": lateness, "counts": counts,
            "in_range": in_range}


def _per_event(result: dict[str, Any]) -> dict[str, float]:
    counts, due = result["counts"], max(1, result["delivered"])
    table = {op: n for (service, _, op), n in counts.items() if service == "table"}
    queue = sum(n for (service, _, _), n in counts.items() if service == "queue")
    return {"reads": (table.get("query", 0) + table.get("get", 0)) / due, "table": sum(table.values()) / due,
            "queue": queue / due}


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reminders", description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=10_000, help="mailboxes of not-due rows (large phase)")
    parser.add_argument("--appointments", type=int, default=50, help="not-due rows per mailbox")
    parser.add_argument("--ratio", type=int, default=10, help="large phase's not-due rows over the small one's")
    parser.add_argument("--sample-mailboxes", type=int, default=20)
    parser.add_argument("--sample-appointments", type=int, default=10, help="due appointments per sample mailbox")
    parser.add_argument("--lead", type=float, default=75.0, help="seconds from the bookings to the first instant")
    parser.add_argument("--spread", type=float, default=120.0, help="seconds the instants are spread over")
    args = parser.parse_args(argv)
    small = args.mailboxes // args.ratio
    results: dict[str, dict[str, Any]] = {}
    with stack() as s, Receiver() as receiver:
        meter = StorageMeter(s.azurite).start()
        host = s.start_host(AzureWebJobsStorage=meter.connection_string, **disabled(*OTHER_TIMERS))
        for phase, upto in (("small", small), ("large", args.mailboxes)):
            already = 0 if phase == "small" else small
            seconds = _seed_rows(s, already, upto - already, args.appointments)
            print(f"{phase}: seeded {(upto - already) * args.appointments:,} not-due rows in {seconds:.0f} s; "
                  f"{args.sample_mailboxes} × {args.sample_appointments} due through the product", flush=True)
            results[phase] = _sample(s, host, meter, receiver, phase, args.sample_mailboxes, args.sample_appointments,
                                     args.lead, args.spread)
    small_cost, large_cost = _per_event(results["small"]), _per_event(results["large"])
    rows = []
    for phase, not_due in (("small", small * args.appointments), ("large", args.mailboxes * args.appointments)):
        r, cost = results[phase], _per_event(results[phase])
        rows.append([f"{phase}: {not_due:,} not due", f"{r['delivered']}/{r['due']}", r["keys"],
                     _percentile(r["lateness"], 50), _percentile(r["lateness"], 99), max(r["lateness"], default=0),
                     cost["reads"], cost["table"], cost["queue"], f"{r['in_range']} / {not_due + r['due']:,}"])
    print_table(["phase", "delivered", "keys", "late p50 s", "late p99 s", "late max s", "table reads/event",
                 "table tx/event", "queue tx/event", "timer's range / index rows"], rows)
    print(f"large / small: table reads per event {large_cost['reads'] / max(small_cost['reads'], 1e-9):.2f}, "
          f"table transactions {large_cost['table'] / max(small_cost['table'], 1e-9):.2f}, "
          f"queue transactions {large_cost['queue'] / max(small_cost['queue'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
