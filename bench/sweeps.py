"""The timers at tenant scale: what each sweep reads, with and without appointments in the table.

The mailbox table holds a snapshot row per appointment; the renewal sweep, the resync and the outbox sweep
(with its dead-letter prune) must not read those. Each now reads its own index partition
(``shared.records.mailbox``, index rows) and only the rows it points at. This bench seeds ``--mailboxes``
mailboxes (quota, flow, active subscription not yet due, sync row, two fanned-out outbox rows and a dead
letter each, and their index rows) straight into Azurite in batched transactions, then measures every
sweep twice: with no appointments, and after adding ``--appointments`` snapshot rows per mailbox.

Per sweep: storage requests (query pages and point reads), entities returned, entities the service
*examines* and the wall time. Examined: a point read reads one row, a query naming a PartitionKey reads that
partition once over all its pages (its rows are counted out of band), a query without one is a table scan,
which reads every row of the table (what
Microsoft's table design guide calls a table scan: https://learn.microsoft.com/en-us/azure/storage/tables/table-storage-design-for-query);
Azurite answers a scan in one page, so its request count hides that, and the examined count shows it.

Baseline, same run: one query reading a partition of as many rows as the sweep's index (``--mailboxes``
small rows), which is the least a sweep over an index of that size can cost. Figures are ratios to it.
The "before" rows run the queries the sweeps ran before their indexes existed (scans filtered on RowKey,
State and times), for contrast: they grow with the appointments, the sweeps do not.

What runs: ``renewal.plan_sweep`` (the renewal timer's reads; its Graph listing of orphans is left out),
``flows.mailboxes_with_flows`` (the resync's read; its enqueueing is queue work), ``outbox_sweep.sweep_outbox``
(the whole outbox timer: dead letters and outbox rows, nothing due). In this process, Azurite in memory.

    python -m bench.sweeps [--mailboxes 10000] [--appointments 50]   # ~5 min at the defaults
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from bench._stack import print_table, stack

SEED_CONCURRENCY = 8
BASELINE_PARTITION = "~bench:baseline"


@dataclass
class Reads:
    requests: int = 0
    returned: int = 0
    examined: int = 0
    seconds: float = 0.0


class Meter:
    """Counts the table requests of this process's app code (a raw-response hook on its store's clients)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []  # (method, URL, entities returned)

    def hook(self, response: Any) -> None:
        request, http = response.http_request, response.http_response
        returned = 0
        if request.method == "GET" and http.status_code == 200:
            try:
                body = json.loads(http.body())
            except ValueError:
                body = {}
            returned = len(body["value"]) if isinstance(body, dict) and "value" in body else 1
        self.calls.append((request.method, request.url, returned))


def _partition_of(url: str) -> str | None:
    """The PartitionKey a table GET reads (point read or query), None for a query without one (a scan)."""
    path = unquote(urlsplit(url).path)
    if "(PartitionKey='" in path:
        return path.split("(PartitionKey='", 1)[1].split("'", 1)[0].replace("''", "'")
    query = parse_qs(urlsplit(url).query).get("$filter", [""])[0]
    if "PartitionKey eq '" in query:
        return query.split("PartitionKey eq '", 1)[1].split("'", 1)[0].replace("''", "'")
    return None


async def measure(meter: Meter, body: Callable[[], Awaitable[Any]], sizes: dict[str, int], total: int) -> Reads:
    meter.calls.clear()
    began = time.perf_counter()
    await body()
    reads = Reads(seconds=time.perf_counter() - began)
    for method, url, returned in meter.calls:
        if method != "GET":
            continue
        reads.requests += 1
        reads.returned += returned
        partition = _partition_of(url)
        point = "(PartitionKey='" in unquote(urlsplit(url).path) and "RowKey='" in unquote(urlsplit(url).path)
        if point:
            reads.examined += 1
        elif "NextRowKey" not in url and "NextPartitionKey" not in url:  # a query's first page: what it reads
            reads.examined += sizes.get(partition, 0) if partition is not None else total
    return reads


async def seed_mailboxes(table: Any, count: int) -> list[str]:
    """Per mailbox what a registered business leaves, and the index rows its writers keep."""
    from azure.data.tables import UpdateMode

    from shared.records import dead_letters, flows, outbox, subscription_rows
    from shared.records.mailbox import index_row, mark_index_built

    now = datetime.now(UTC)
    expires = now + timedelta(days=2)  # beyond the renewal window: nothing is due
    enqueued = now - timedelta(hours=1)
    mailboxes = [f"m{i:05d}@contoso.test" for i in range(count)]
    limit = asyncio.Semaphore(SEED_CONCURRENCY)

    async def one(mailbox: str) -> None:
        ops: list[tuple[str, dict[str, Any]]] = [
            ("upsert", {"PartitionKey": mailbox, "RowKey": flows.QUOTA_ROW, "FlowCount": 1}),
            ("upsert", {"PartitionKey": mailbox, "RowKey": flows.flow_row_key("00000000-0000-0000-0000-000000000001"),
                        "WebhookId": "00000000-0000-0000-0000-000000000001", "Trigger": "AppointmentCreated",
                        "CallbackUrl": "https://prod.example/flow?sig=x", "CreatedDateTime": now}),
            ("upsert", {"PartitionKey": mailbox, "RowKey": subscription_rows.SUBSCRIPTION_ROW, "State": "active",
                        "SubscriptionId": secrets.token_hex(16), "ClientState": "s", "ExpirationDateTime": expires}),
            ("upsert", {"PartitionKey": mailbox, "RowKey": "sync", "BaselineDone": True, "CoveredUpTo": now}),
            ("upsert", {"PartitionKey": mailbox, "RowKey": dead_letters.row_key("e0", "f0"), "EventId": "e0",
                        "FlowId": "f0", "Reason": "rejected", "LastAttemptAt": now}),
        ]
        for n in range(2):
            ops.append(("upsert", {"PartitionKey": mailbox, "RowKey": outbox.outbox_row_key(f"e{n}"),
                                   "EventId": f"e{n}", "State": outbox.FANNED_OUT, "LastEnqueuedAt": enqueued,
                                   "Payload0": "{}"}))
        async with limit:
            await _submit(table, [(kind, entity, {"mode": UpdateMode.REPLACE}) for kind, entity in ops])

    await asyncio.gather(*(one(m) for m in mailboxes))
    # The index partitions, 100 rows a transaction (one partition each), as the writers leave them.
    retention_end = enqueued + timedelta(hours=25)
    letter_end = now + timedelta(days=30)
    index_entities = [index_row(flows.INDEX, m, Kind="flows") for m in mailboxes]
    index_entities += [index_row(subscription_rows.INDEX, m, State="active", SubscriptionId="x",
                                 ExpirationDateTime=expires) for m in mailboxes]
    index_entities += [index_row(outbox.INDEX, m, DueAt=retention_end, TouchedAt=enqueued) for m in mailboxes]
    index_entities += [index_row(dead_letters.INDEX, m, DueAt=letter_end, TouchedAt=now) for m in mailboxes]
    index_entities += [{"PartitionKey": BASELINE_PARTITION, "RowKey": m, "Kind": "flows"} for m in mailboxes]
    await _in_batches(table, index_entities)
    for kind in (flows.INDEX, subscription_rows.INDEX, outbox.INDEX, dead_letters.INDEX):
        await mark_index_built(kind)
    return mailboxes


async def _submit(table: Any, operations: list[Any]) -> None:
    """One transaction of upserts, again if the connection drops (Azurite under load resets some)."""
    from azure.core.exceptions import ServiceRequestError

    for attempt in range(5):
        try:
            await table.submit_transaction(operations)
            return
        except ServiceRequestError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.5 * (attempt + 1))


async def _in_batches(table: Any, entities: list[dict[str, Any]]) -> None:
    from azure.data.tables import UpdateMode

    by_partition: dict[str, list[dict[str, Any]]] = {}
    for entity in entities:
        by_partition.setdefault(entity["PartitionKey"], []).append(entity)
    batches = [rows[i:i + 100] for rows in by_partition.values() for i in range(0, len(rows), 100)]
    limit = asyncio.Semaphore(SEED_CONCURRENCY)

    async def one(batch: list[dict[str, Any]]) -> None:
        async with limit:
            await _submit(table, [("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])

    await asyncio.gather(*(one(b) for b in batches))


async def seed_appointments(table: Any, mailboxes: list[str], per_mailbox: int) -> None:
    """``per_mailbox`` snapshot rows each (a small AppointmentData), as the reconcile stores them."""
    from shared.records.reconcile_state import snapshot_row_key

    payload = json.dumps({"CustomerName": "Aiko Yamada", "ServiceName": "Consultation", "StartTime": "x" * 20,
                          "AdditionalInfo": "n" * 200})
    entities = [{"PartitionKey": m, "RowKey": snapshot_row_key(f"appt-{n:03d}"), "AppointmentId": f"appt-{n:03d}",
                 "Fingerprint": "f" * 32, "ListFingerprint": "l" * 32, "Payload0": payload, "PayloadChunks": 1}
                for m in mailboxes for n in range(per_mailbox)]
    await _in_batches(table, entities)


def legacy_sweeps(table: Any) -> dict[str, Callable[[], Awaitable[Any]]]:
    """The queries each sweep ran before its index (the whole table, filtered)."""
    from shared.records.mailbox import PREFIX_FILTER, prefix_bounds

    now = datetime.now(UTC)

    async def drain(query: str, **params: Any) -> int:
        return len([e async for e in table.query_entities(query, parameters=params or None)])

    async def renewal() -> None:
        await drain("RowKey eq 'quota' and FlowCount gt 0")
        await drain("RowKey eq 'subscription'")

    async def resync() -> None:
        await drain("RowKey eq 'quota' and FlowCount gt 0")

    async def outbox_sweep() -> None:
        await drain(f"{PREFIX_FILTER} and State eq @state and Timestamp lt @before", **prefix_bounds("outbox:"),
                    state="pending", before=now - timedelta(minutes=1))
        await drain(f"{PREFIX_FILTER} and LastAttemptAt lt @before", **prefix_bounds("deadletter:"),
                    before=now - timedelta(days=30))
        await drain(f"{PREFIX_FILTER} and State eq @state and LastEnqueuedAt lt @before", **prefix_bounds("outbox:"),
                    state="fannedOut", before=now - timedelta(hours=25))

    return {"renewal sweep": renewal, "resync": resync, "outbox sweep": outbox_sweep}


async def partition_sizes(table: Any, partitions: list[str]) -> tuple[dict[str, int], int]:
    """Rows per named partition and in the whole table (counted out of band, not measured)."""
    sizes = {p: len([e async for e in table.query_entities("PartitionKey eq @p", parameters={"p": p},
                                                            select=["RowKey"])]) for p in partitions}
    total = len([e async for e in table.list_entities(select=["RowKey"])])
    return sizes, total


async def run(args: argparse.Namespace) -> None:
    from azure.data.tables.aio import TableServiceClient

    from shared.adapters import storage
    from shared.records import dead_letters, flows, outbox, subscription_rows
    from shared.records.mailbox import index_partition
    from shared.workers import outbox_sweep, renewal

    meter = Meter()
    with stack(with_sandbox=False) as s:
        s.use_in_process(GRAPH_BASE_URL="http://127.0.0.1:9")  # nothing measured here calls Graph
        queues = storage.open_store(storage.get_settings().storage).queues
        store = storage.Store(TableServiceClient.from_connection_string(s.connection_string,
                                                                        raw_response_hook=meter.hook), queues)
        storage._stores.set(store)  # the app code's store in this loop: counted
        table = store.table(storage.MAILBOX_TABLE)
        began = time.perf_counter()
        mailboxes = await seed_mailboxes(table, args.mailboxes)
        print(f"seeded {len(mailboxes)} mailboxes in {time.perf_counter() - began:.0f} s", flush=True)

        sweeps: dict[str, Callable[[], Awaitable[Any]]] = {
            "renewal sweep": renewal.plan_sweep,
            "resync": flows.mailboxes_with_flows,
            "outbox sweep": outbox_sweep.sweep_outbox,
        }
        partitions = [index_partition(k) for k in (flows.INDEX, subscription_rows.INDEX, outbox.INDEX,
                                                   dead_letters.INDEX)] + [BASELINE_PARTITION]

        async def baseline() -> None:
            async for _ in table.query_entities("PartitionKey eq @p", parameters={"p": BASELINE_PARTITION}):
                pass

        results: list[list[Any]] = []
        for phase, per_mailbox in (("0 appointments", 0), (f"{args.appointments} appointments", args.appointments)):
            if per_mailbox:
                began = time.perf_counter()
                await seed_appointments(table, mailboxes, per_mailbox)
                print(f"added {per_mailbox * len(mailboxes)} snapshot rows in {time.perf_counter() - began:.0f} s",
                      flush=True)
            sizes, total = await partition_sizes(table, partitions)
            for _ in range(2):  # warm: the first query of a kind pays for connections and Azurite's caches
                await baseline()
            base = await measure(meter, baseline, sizes, total)
            legacy = legacy_sweeps(table)
            results.append([f"baseline: read an index of {args.mailboxes}", phase, base.requests, base.returned,
                            base.examined, base.seconds * 1000, 1.0, 1.0])
            for name, body in sweeps.items():
                for label, run_it in ((name, body), (f"  before: {name}", legacy[name])):
                    reads = await measure(meter, run_it, sizes, total)
                    results.append([label, phase, reads.requests, reads.returned, reads.examined,
                                    reads.seconds * 1000, reads.examined / max(1, base.examined),
                                    reads.seconds / base.seconds])
        await store.close()

    print(f"\n{args.mailboxes} mailboxes; the table holds per mailbox 9 rows (+ its index rows) and then "
          f"{args.appointments} snapshot rows more. Azurite in memory, this process.")
    print_table(["sweep", "table", "requests", "returned", "examined", "ms", "examined/base", "time/base"],
                results)
    print("\nexamined: rows the storage service reads to answer (a query without PartitionKey reads the table)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mailboxes", type=int, default=10_000)
    parser.add_argument("--appointments", type=int, default=50)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
