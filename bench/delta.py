"""The delta check: Graph calls per idle mailbox-hour, before and after, and how late a run reaches its last mailbox.

Part 1, idle cost. ``--idle`` clones of the demo clinic, ``--appointments`` each (spread over the horizon),
baselined. Before: what the hourly resync (the schedule before the delta check) costs an idle mailbox (one full
reconcile each, as its timer's hint asks). After: a delta check run over the same mailboxes, once to start the rounds
(a full synchronization each, paid again once a week when the window rolls) and once with nothing changed, plus the
resync at ``--resync-runs-per-hour`` (shipped: every 6 hours). Graph requests counted in the sandbox's request log,
per mailbox and run, then per idle mailbox-hour (delta check every 4 minutes: 15 runs).

Part 2, recovery bound at scale. ``--mailboxes`` mailboxes with flows (their index rows) and empty calendars,
Graph answering each delta request after ``--latency-ms`` (about what Graph takes; the sandbox alone answers in a
few ms). One run starts the rounds, the second is timed: its length is how much later than its period the last
mailbox of a run is checked. A change nobody notified is reconciled within the period + that length + one
reconcile (part 1's reconcile time).

In this process, Azurite in memory, the sandbox as its own process.

    python -m bench.delta [--idle 20] [--appointments 4] [--mailboxes 10000] [--latency-ms 150]   # ~8 min
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx

from bench._stack import Stack, print_table, stack
from shared.services.calendar_changes import WINDOW_ROLL

BEFORE_RESYNC_RUNS_PER_HOUR = 1  # RESYNC_SCHEDULE before the delta check: 0 0 * * * *
SHIPPED_RESYNC_RUNS_PER_HOUR = 1 / 6  # RESYNC_SCHEDULE 0 0 */6 * * *
DELTA_RUNS_PER_HOUR = 15  # DELTA_CHECK_SCHEDULE 0 */4 * * * *
DELTA_PERIOD_SECONDS = 240


def _book(graph: httpx.Client, mailbox: str, service: str, n: int) -> None:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2, hours=17 * n)
    times = {k: {"dateTime": t.replace(tzinfo=None).isoformat(), "timeZone": "UTC"}
             for k, t in (("startDateTime", start), ("endDateTime", start + timedelta(minutes=30)))}
    graph.post(f"/{mailbox}/appointments", json={"serviceId": service, **times, "customers": [
        {"@odata.type": "#microsoft.graph.bookingCustomerInformation", "name": f"Idle {n}",
         "emailAddress": f"idle{n}@example.test"}]}).raise_for_status()


def _graph_requests(s: Stack, since: int) -> tuple[int, int]:
    """Since the request log's entry ``since``: Graph requests as Graph counts them (each request of a batch, not
    the batch) and HTTP requests to Graph (a batch once, not its requests). Entra and control routes left out."""
    assert s.sandbox is not None
    logged = [r for r in s.sandbox.requests_since(since) if r["path"].startswith("/v1.0/")]
    graph = sum(1 for r in logged if r["path"] != "/v1.0/$batch")
    http = sum(1 for r in logged if not str(r.get("clientRequestId") or "").startswith("batched:"))
    return graph, http


def _seed_graph(s: Stack, mailboxes: list[str], appointments: int) -> None:
    assert s.sandbox is not None
    s.sandbox.clone_businesses(mailboxes)
    with httpx.Client(base_url=f"{s.sandbox.graph_url}/solutions/bookingBusinesses",
                      headers=s.sandbox.graph_headers(), timeout=60, trust_env=False) as graph:
        for m in mailboxes:
            service = next(x["id"] for x in graph.get(f"/{m}/services").json()["value"]
                           if x["maximumAttendeesCount"] == 1)
            for n in range(appointments):
                _book(graph, m, service, n)


def _seq(s: Stack) -> int:
    assert s.sandbox is not None
    entries = s.sandbox.control("GET", "requests")["value"]
    return max((e["seq"] for e in entries), default=0)


async def idle_cost(s: Stack, count: int, appointments: int) -> dict[str, float]:
    """Graph requests per idle mailbox and run: the resync's full reconcile, the delta check's rounds."""
    from shared.messages.mailbox_changes import full_resync
    from shared.records import flows
    from shared.records.mailbox import index_row, mailbox_table, mark_index_built
    from shared.workers.delta_check import check_all
    from shared.workers.reconcile import reconcile

    assert s.sandbox is not None
    mailboxes = [f"idle-{i}@contoso.test" for i in range(count)]
    _seed_graph(s, mailboxes, appointments)
    table = mailbox_table()
    for m in mailboxes:
        await table.upsert_entity({"PartitionKey": m, "RowKey": flows.QUOTA_ROW, "FlowCount": 1})
        await table.upsert_entity(index_row(flows.INDEX, m, Kind="flows"))
    await mark_index_built(flows.INDEX)
    for m in mailboxes:  # the baseline: what an idle mailbox's snapshot looks like
        await reconcile(full_resync(m, "baseline"))
    seq = _seq(s)
    started = time.perf_counter()
    for m in mailboxes:
        assert await reconcile(full_resync(m, "timer")) == "reconciled"
    reconcile_seconds = (time.perf_counter() - started) / count
    before, _ = _graph_requests(s, seq)
    seq = _seq(s)
    await check_all()
    start_round, _ = _graph_requests(s, seq)
    seq = _seq(s)
    quiet = await check_all()
    after, after_http = _graph_requests(s, seq)
    assert quiet.outcomes == {"unchanged": count}, quiet.outcomes
    return {"before": before / count, "start_round": start_round / count, "after": after / count,
            "after_http": after_http / count, "reconcile_s": reconcile_seconds}


async def run_length(s: Stack, count: int, latency_ms: int) -> tuple[float, float, int, float]:
    """Seconds a delta check run takes over ``count`` mailboxes (first run, timed run), and how many of the timed
    run's rounds failed (Azurite, in memory on a busy machine, drops connections under this load), and the CPU
    seconds this process (the app's side) spent in the timed run."""
    from shared.records import flows
    from shared.records.mailbox import index_row, mailbox_table
    from shared.workers.delta_check import check_all

    assert s.sandbox is not None
    mailboxes = [f"d{i:05d}@contoso.test" for i in range(count)]
    for first in range(0, count, 1000):
        s.sandbox.control("POST", "users", {"value": [{"upn": m} for m in mailboxes[first:first + 1000]]})
    table = mailbox_table()
    rows = [index_row(flows.INDEX, m, Kind="flows") for m in mailboxes]
    for first in range(0, len(rows), 100):
        await table.submit_transaction([("upsert", r) for r in rows[first:first + 100]])
    s.sandbox.control("POST", "faults", {"method": "GET", "path": "/v1.0/users/*/calendarView/delta",
                                         "latencyMs": latency_ms, "count": None})
    started = time.perf_counter()
    await check_all()
    first_run = time.perf_counter() - started
    started, cpu = time.perf_counter(), time.process_time()
    report = await check_all()
    timed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return first_run, timed, report.outcomes.get("failed", 0), cpu


async def run(args: argparse.Namespace) -> None:
    with stack() as s:
        s.use_in_process()
        idle = await idle_cost(s, args.idle, args.appointments)
        first_run, timed, failed, cpu = await run_length(s, args.mailboxes, args.latency_ms)
    resync_runs = args.resync_runs_per_hour
    before_hour = idle["before"] * BEFORE_RESYNC_RUNS_PER_HOUR
    rolls = 3600 / WINDOW_ROLL.total_seconds()  # rounds started afresh an hour
    rolled = idle["start_round"] * rolls
    graph_hour = idle["after"] * DELTA_RUNS_PER_HOUR + idle["before"] * resync_runs + rolled
    http_hour = idle["after_http"] * DELTA_RUNS_PER_HOUR + idle["before"] * resync_runs + rolled
    print(f"Graph requests per idle mailbox ({args.idle} mailboxes, {args.appointments} appointments each; "
          "Graph-counted / HTTP)")
    print_table(["what", "Graph per run", "HTTP per run", "runs an hour", "Graph per hour", "HTTP per hour"], [
        ["before: hourly resync (full listing)", idle["before"], idle["before"], BEFORE_RESYNC_RUNS_PER_HOUR,
         before_hour, before_hour],
        ["delta check, nothing changed ($batch of 20)", idle["after"], idle["after_http"], DELTA_RUNS_PER_HOUR,
         idle["after"] * DELTA_RUNS_PER_HOUR, idle["after_http"] * DELTA_RUNS_PER_HOUR],
        ["delta round started (weekly window roll)", idle["start_round"], idle["start_round"], rolls, rolled,
         rolled],
        [f"resync at {resync_runs:g} a hour", idle["before"], idle["before"], resync_runs,
         idle["before"] * resync_runs, idle["before"] * resync_runs],
        ["after: all of it", "", "", "", graph_hour, http_hour],
    ])
    bound = DELTA_PERIOD_SECONDS + timed + idle["reconcile_s"]
    # What the run takes against Graph itself: waves of CONCURRENCY batches, each batch 20 rounds run 4 at a time.
    from shared.workers.delta_check import BATCH_SIZE, CONCURRENCY

    waves = -(-args.mailboxes // (BATCH_SIZE * CONCURRENCY))
    graph_bound = waves * -(-BATCH_SIZE // 4) * args.latency_ms / 1000
    print(f"\nDelta check run over {args.mailboxes} mailboxes, Graph answering after {args.latency_ms} ms")
    print_table(["run", "seconds"], [["first (rounds started)", first_run],
                                     [f"timed (nothing changed; {failed} rounds failed)", timed],
                                     ["the app's CPU in the timed run", cpu],
                                     ["the timed run against Graph (derived: waves x 5 latencies)", graph_bound],
                                     ["one idle reconcile", idle["reconcile_s"]],
                                     ["recovery bound, measured here: 240 s + timed run + reconcile", bound],
                                     ["recovery bound on Azure: 240 s + max(derived, app CPU) + reconcile",
                                      DELTA_PERIOD_SECONDS + max(graph_bound, cpu) + idle["reconcile_s"]]])
    print(f"\nafter / before per idle mailbox-hour: Graph-counted {graph_hour / before_hour:.2f}, HTTP "
          f"{http_hour / before_hour:.2f} (target <= 1); recovery bound {bound / 60:.2f} min (target <= 5)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.delta", description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=20)
    parser.add_argument("--appointments", type=int, default=4, help="appointments in each idle mailbox")
    parser.add_argument("--mailboxes", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=int, default=150)
    parser.add_argument("--resync-runs-per-hour", type=float, default=SHIPPED_RESYNC_RUNS_PER_HOUR,
                        help="the resync's runs an hour with the delta check (RESYNC_SCHEDULE; shipped: 1/6)")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
