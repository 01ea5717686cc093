"""Delivery throughput: the delivery worker against a bare httpx POST loop, to the same local receiver.

The worker (``shared.workers.delivery.deliver``) is invoked directly on delivery messages as fan-out makes
them (carrying their event), ``--concurrency`` at a time (the host's queue batch size is 16), 10 events to
each of 50 flows on 10 mailboxes: each delivery reads its flow (from Azurite, or as read within the last
``FLOW_CACHE_SECONDS``), POSTs through the guarded client, and notes the flow's health, written behind in
coalesced ETag-guarded merges; the timing ends when the last of those writes is done. The baseline POSTs the
same payload with the same concurrency and nothing else. Both talk to one in-process receiver answering 200.
The ratio says what storage and bookkeeping cost per delivery (target: >= 0.7).

    python -m bench.delivery_throughput [--deliveries 500] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

import azure.functions as func
import httpx

from devhost.processes import Azurite


async def _run(deliveries: int, concurrency: int, receiver: Any) -> dict[str, float]:
    from shared.adapters import callback_client
    from shared.adapters.storage import get_store
    from shared.messages import deliveries as delivery_messages
    from shared.messages.deliveries import idempotency_key
    from shared.records import delivery_log, flow_health, outbox
    from shared.workers import delivery
    from testing.rows import add_event, add_flow, appointment

    await get_store().create_all()
    mailboxes = [f"bench{i}@contoso.test" for i in range(10)]
    flows = {m: [await add_flow(receiver.url(f"{m}-{n}"), mailbox=m) for n in range(5)] for m in mailboxes}
    per_flow_events = max(1, deliveries // 50)
    messages = []
    for mailbox in mailboxes:
        for number in range(per_flow_events):
            event = await add_event(number=number, mailbox=mailbox)
            carried = delivery_messages.event_from_row(await outbox.get(mailbox, event))
            messages += [delivery_messages.new_message(mailbox, event, f.webhook_id, event=carried)
                         for f in flows[mailbox]]
    limit = asyncio.Semaphore(concurrency)

    async def worker(message: dict[str, Any]) -> None:
        async with limit:
            await delivery.deliver(func.queue.QueueMessage(id="b", body=json.dumps(message).encode()))

    # Warm both paths (connections, first storage calls) before timing.
    await worker(messages[0])
    await flow_health.flush_health()
    await delivery_log.flush()
    started = time.perf_counter()
    await asyncio.gather(*(worker(m) for m in messages))
    await flow_health.flush_health()
    await delivery_log.flush()  # written behind too: part of what the deliveries cost
    worker_seconds = time.perf_counter() - started

    body = json.dumps(appointment(1), ensure_ascii=False).encode()
    async with httpx.AsyncClient(timeout=30) as client:
        async def bare(message: dict[str, Any]) -> None:
            async with limit:
                response = await client.post(receiver.url("bare"), content=body, headers={
                    "Content-Type": "application/json", "Idempotency-Key": idempotency_key("e", "f")})
                response.raise_for_status()

        await bare(messages[0])
        started = time.perf_counter()
        await asyncio.gather(*(bare(m) for m in messages))
        bare_seconds = time.perf_counter() - started
    await callback_client.close_client()
    await get_store().close()
    return {"count": len(messages), "worker_s": worker_seconds, "bare_s": bare_seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.delivery_throughput")
    parser.add_argument("--deliveries", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)

    from testing.receiver import Receiver
    from testing.settings import sample_settings

    azurite = Azurite.on_free_ports().start()
    try:
        os.environ.update({**sample_settings(), "AzureWebJobsStorage": azurite.connection_string})
        with Receiver() as receiver:
            figures = asyncio.run(_run(args.deliveries, args.concurrency, receiver))
            delivered = sum(1 for r in receiver.requests() if r.flow != "bare")
    finally:
        azurite.stop()
    n = figures["count"]
    worker_rate, bare_rate = n / figures["worker_s"], n / figures["bare_s"]
    print(f"deliveries: {n} (+1 warm-up each), concurrency {args.concurrency}, receiver answers 200, Azurite in memory")
    print(f"delivery worker : {worker_rate:8.1f} deliveries/s  ({figures['worker_s'] * 1000 / n:.2f} ms each)"
          f"  [{delivered} received]")
    print(f"bare httpx POST : {bare_rate:8.1f} posts/s       ({figures['bare_s'] * 1000 / n:.2f} ms each)")
    ratio = worker_rate / bare_rate
    print(f"ratio worker/bare throughput: {ratio:.2f} (target >= 0.70: {'met' if ratio >= 0.7 else 'NOT met'})")


if __name__ == "__main__":
    main()
