"""Renewal sweep: renewing N subscriptions under Graph's write limit, against the throttle-bound minimum.

Graph allows 500 subscription writes per 20 s per app (25/s), so renewing N subscriptions takes at least
N / 25 s. The figure is the sweep's wall time (from the sweep's start to the last successful renewal in
Graph) as a ratio of that bound — target <= 1.1 — and the 429s: how many Graph answered, how many the
worker handled (re-enqueued with Retry-After) and how many were not handled (target 0).

Set-up, not measured: N mailbox users and N subscriptions are put straight into the Graph sandbox
(``POST /_sandbox/users``, ``POST /_sandbox/subscriptions``: no handshake, no write limit), and the rows a
registration leaves behind are written to Azurite: per mailbox the ``subscription`` row (active,
expiring within the renewal window) and the ``quota`` row (FlowCount 1), the ``subscriptions`` index row,
and the sweep's index rows (``~index:flows``, ``~index:subscription``). Then the sandbox's write limit is
switched on and the sweep runs.

What runs: ``shared.workers.renewal.sweep`` — the renewal timer's body — is called in this process (the local host
cannot fire a timer on demand); it enqueues a ``renew`` task per subscription on ``subscription-tasks``,
up to ``shared.workers.renewal.TASKS_PER_MESSAGE`` per queue message, paced by ``SUBSCRIPTION_WRITES_PER_SECOND``
through visibility delays and the worker's write pacer. The tasks are run by the **local
host's queue trigger** (``python -m devhost``, ``subscription_tasks`` function, host.json batch settings),
every other function switched off. Each rate in ``--rates`` gets fresh subscriptions; runs are 20 s apart
so Graph's window starts empty each time.

    python -m bench.renewal_sweep [--subscriptions 1000] [--rates 20,24]
    python -m bench.renewal_sweep --subscriptions 10000 --rates 24  # the issue's figure (~9 min)
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from bench._stack import QUEUE_FUNCTIONS, TIMER_FUNCTIONS, SandboxProcess, Stack, disabled, print_table, stack

GRAPH_WRITES_PER_SECOND = 500 / 20
TARGET = 1.1
SEED_CHUNK = 1000


def seed(s: Stack, sandbox: SandboxProcess, host_url: str, prefix: str, count: int) -> None:
    """N mailboxes with an active subscription expiring in 12 h (inside the default 24 h renewal window)."""
    from azure.data.tables import TableClient

    from shared.adapters.storage import MAILBOX_TABLE, SUBSCRIPTION_TABLE
    from shared.records import flows, subscription_rows
    from shared.records.flows import QUOTA_ROW
    from shared.records.mailbox import index_row
    from shared.records.subscription_rows import SUBSCRIPTION_ROW

    expires = datetime.now(UTC) + timedelta(hours=12)
    rows: list[dict[str, Any]] = []
    for start in range(0, count, SEED_CHUNK):
        mailboxes = [f"{prefix}-{i}@contoso.test" for i in range(start, min(count, start + SEED_CHUNK))]
        sandbox.control("POST", "users", {"value": [{"upn": m} for m in mailboxes]})
        states = {m: secrets.token_urlsafe(48) for m in mailboxes}
        created = sandbox.control("POST", "subscriptions", {"value": [
            {"mailbox": m, "notificationUrl": f"{host_url}/api/graph/notifications",
             "lifecycleNotificationUrl": f"{host_url}/api/graph/lifecycle", "clientState": states[m],
             "expirationDateTime": expires.strftime("%Y-%m-%dT%H:%M:%SZ")} for m in mailboxes]})["value"]
        rows += [{"mailbox": c["mailbox"], "id": c["id"], "clientState": states[c["mailbox"]]} for c in created]

    mailbox_table = TableClient.from_connection_string(s.connection_string, MAILBOX_TABLE)
    index_table = TableClient.from_connection_string(s.connection_string, SUBSCRIPTION_TABLE)

    def write(row: dict[str, Any]) -> None:
        mailbox_table.submit_transaction([
            ("upsert", {"PartitionKey": row["mailbox"], "RowKey": SUBSCRIPTION_ROW, "State": "active",
                        "SubscriptionId": row["id"], "ClientState": row["clientState"], "ExpirationDateTime": expires,
                        "Failures": 0, "LastError": ""}),
            ("upsert", {"PartitionKey": row["mailbox"], "RowKey": QUOTA_ROW, "Kind": "quota", "FlowCount": 1}),
        ])
        # The sweep's indexes, as the registration and the subscription's owner keep them.
        mailbox_table.upsert_entity(index_row(flows.INDEX, row["mailbox"], Kind="flows"))
        mailbox_table.upsert_entity(index_row(subscription_rows.INDEX, row["mailbox"], State="active",
                                              SubscriptionId=row["id"], ExpirationDateTime=expires))
        index_table.upsert_entity({"PartitionKey": row["id"], "RowKey": "", "Mailbox": row["mailbox"],
                                   "ClientState": row["clientState"], "ExpirationDateTime": expires})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(write, rows))
    mailbox_table.close()
    index_table.close()


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp[:26] + "+00:00")  # Graph's 7 fractional digits: keep 6


def run(s: Stack, sandbox: SandboxProcess, host: Any, count: int, rate: int, prefix: str) -> dict[str, Any]:
    from shared.adapters.storage import SUBSCRIPTION_TASKS_QUEUE, get_store, poison_queue
    from shared.workers import renewal

    started_seed = time.perf_counter()
    seed(s, sandbox, host.url, prefix, count)
    seed_seconds = time.perf_counter() - started_seed
    s.use_in_process(SUBSCRIPTION_WRITES_PER_SECOND=str(rate))
    sandbox.clear_request_log()
    sandbox.control("POST", "limits", {"subscriptionWrites": True})
    log_before = len(host.log)

    async def sweep() -> tuple[float, int]:
        began = time.perf_counter()
        report = await renewal.sweep()
        enqueue_seconds = time.perf_counter() - began
        await get_store().close()
        return enqueue_seconds, report.renewals

    t0 = datetime.now(UTC)
    enqueue_seconds, planned = asyncio.run(sweep())
    renewed: set[str] = set()
    statuses: dict[int, int] = {}
    last_ok = t0
    since = 0
    deadline = time.monotonic() + 3 * count / GRAPH_WRITES_PER_SECOND + 120
    pattern = re.compile(r"/v1\.0/subscriptions/([^/]+)$")
    while len(renewed) < count and time.monotonic() < deadline:
        time.sleep(0.5)
        for entry in sandbox.requests_since(since, method="PATCH"):
            since = max(since, int(entry["seq"]))
            statuses[entry["status"]] = statuses.get(entry["status"], 0) + 1
            match = pattern.search(entry["path"])
            if entry["status"] == 200 and match:
                renewed.add(match.group(1))
                last_ok = max(last_ok, _when(entry["time"]))
    elapsed = (last_ok - t0).total_seconds()
    time.sleep(3)  # let the last tasks log their outcome
    sandbox.control("POST", "limits", {"subscriptionWrites": False})
    log = host.log[log_before:]
    outcomes = {k: len(re.findall(rf"subscription task \w+ for {re.escape(prefix)}-\d+@contoso\.test: {k}", log))
                for k in ("renewed", "throttled", "failed", "stale task")}
    from azure.storage.queue import QueueClient

    left = {}
    for name in (SUBSCRIPTION_TASKS_QUEUE, poison_queue(SUBSCRIPTION_TASKS_QUEUE)):
        with QueueClient.from_connection_string(s.connection_string, name) as q:
            left[name] = q.get_queue_properties().approximate_message_count
    throttled = statuses.get(429, 0)
    return {"rate": rate, "count": count, "planned": planned, "seed_s": seed_seconds, "enqueue_s": enqueue_seconds,
            "elapsed": elapsed, "bound": count / GRAPH_WRITES_PER_SECOND, "renewed": len(renewed),
            "patches": sum(statuses.values()), "429": throttled, "handled": outcomes["throttled"],
            "unhandled": max(0, throttled - outcomes["throttled"]) + (count - len(renewed)),
            "failed": outcomes["failed"], "queue_left": left[SUBSCRIPTION_TASKS_QUEUE],
            "poison": left[poison_queue(SUBSCRIPTION_TASKS_QUEUE)]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.renewal_sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--rates", default="20,24",
                        help="SUBSCRIPTION_WRITES_PER_SECOND values to compare (comma-separated; app default 24)")
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",") if r.strip()]

    results = []
    with stack() as s:
        assert s.sandbox is not None
        host = s.start_host(**disabled(*(f for f in QUEUE_FUNCTIONS if f != "subscription_tasks"), *TIMER_FUNCTIONS))
        for n, rate in enumerate(rates):
            if n:
                time.sleep(20)  # Graph's write window empties before the next run
            results.append(run(s, s.sandbox, host, args.subscriptions, rate, f"renew{n}"))

    print(f"{args.subscriptions} subscriptions per run; Graph sandbox write limit on (500 / 20 s per app = 25/s); "
          "tasks run by the local host's queue trigger (batchSize 16)")
    rows = [[f"SUBSCRIPTION_WRITES_PER_SECOND={r['rate']}", r["renewed"], r["enqueue_s"], r["elapsed"], r["bound"],
             r["elapsed"] / r["bound"], r["429"], r["handled"], r["unhandled"], r["failed"], r["poison"]]
            for r in results]
    print_table(["run", "renewed", "enqueue s", "sweep s", "bound s", "ratio", "429s", "handled", "unhandled",
                 "failed", "poison"], rows)
    print(f"\nbound = N / 25 per s (Graph's 500 writes / 20 s); target ratio <= {TARGET}; sweep s = sweep start to the "
          "last successful PATCH in the sandbox's log")
    seeding = ", ".join(f"{r['seed_s']:.0f} s" for r in results)
    left = ", ".join(str(r["queue_left"]) for r in results)
    print(f"seeding (not measured): {seeding}; tasks left in queue: {left}")


if __name__ == "__main__":
    main()
