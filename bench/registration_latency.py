"""Registration latency: 50 concurrent flow registrations, on one mailbox and spread over 50 mailboxes.

Real HTTP through the local host (``python -m devhost`` running function_app), Azurite in memory, the
Graph sandbox as Graph and Entra ID. Every registration is what Power Automate sends when a flow is saved:
``POST /api/v1/bookingBusinesses/{smtp}/webhooks/AppointmentCreated`` with a sandbox admin's bearer token.
It validates the token (JWKS), asks Graph whether the caller administers the business, checks the callback
URL and commits the flow in one table transaction; the **first** flow of a mailbox also creates the mailbox's
Graph subscription, whose validation handshake comes back through the host. So four scenarios, each a burst
of ``--callers`` requests released together:

- one mailbox: all callers on one fresh mailbox (the first creates the subscription, 4 more get 201, the
  rest 429 FlowLimitReached — the quota must hold under the race);
- spread, first flow: one caller per fresh mailbox, every one creates a Graph subscription;
- spread, later flow: the same mailboxes again (subscription exists: no Graph write, no handshake);
- baseline: the same burst without a token (401 from the same route: host + routing + error body only),
  and ``GET /api/health`` (storage and Graph probes) for scale.

The bench's mailboxes are clones of the demo clinic (``POST /_sandbox/businesses``), administered by
``admin@contoso.test``. Rounds are interleaved so machine noise hits every scenario alike; figures are over
all rounds. Ratios are against the 401 baseline's p50 measured in the same run.

    python -m bench.registration_latency [--callers 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter, defaultdict
from typing import Any

from bench._stack import (
    ADMIN,
    QUEUE_FUNCTIONS,
    TIMER_FUNCTIONS,
    Sample,
    burst,
    burst_client,
    disabled,
    flow_body,
    latency_rows,
    percentile,
    print_table,
    stack,
    warm_connections,
    webhook_url,
)

TRIGGER = "AppointmentCreated"
# Loopback callbacks are allowed by the local settings (ALLOW_LOOPBACK_CALLBACKS); nothing is delivered here.
CALLBACK = "http://127.0.0.1:9/flows/bench?sig=bench-signature-not-for-logs"


async def _measure(host_url: str, token: str, callers: int, rounds: int) -> dict[str, list[Sample]]:
    auth = {"Authorization": f"Bearer {token}"}
    body = flow_body(CALLBACK, TRIGGER)
    results: dict[str, list[Sample]] = defaultdict(list)

    def register(mailbox: str, headers: dict[str, str]) -> Any:
        return lambda c: c.post(webhook_url(host_url, mailbox, TRIGGER), json=body, headers=headers)

    async with burst_client(callers) as client:
        await warm_connections(client, lambda c: c.get(f"{host_url}/api/health"), callers)
        # One registration before timing: the host's first Graph token, JWKS fetch and imports are a cold
        # start, measured by bench.cold_start, not here.
        await register("bench-warmup@contoso.test", auth)(client)
        for r in range(rounds):
            spread = [f"bench-r{r}-{i}@contoso.test" for i in range(callers)]
            plan = [
                ("baseline: 401 (no token)", [register(spread[i], {}) for i in range(callers)]),
                ("baseline: GET /api/health", [lambda c: c.get(f"{host_url}/api/health")] * callers),
                ("one mailbox (1st + quota race)", [register(f"bench-one-{r}@contoso.test", auth)] * callers),
                ("spread, first flow (subscribes)", [register(m, auth) for m in spread]),
                ("spread, later flow", [register(m, auth) for m in spread]),
            ]
            for name, calls in plan:
                # The host drops connections idle for 5 s: re-open them (cheap 401s) so bursts skip TCP set-up.
                await warm_connections(client, register(spread[0], {}), callers)
                results[name] += await burst(calls, client)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.registration_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=50, help="concurrent registrations per burst")
    parser.add_argument("--rounds", type=int, default=3, help="bursts per scenario (each on fresh mailboxes)")
    args = parser.parse_args(argv)

    with stack() as s:
        assert s.sandbox is not None
        mailboxes = ["bench-warmup@contoso.test"]
        for r in range(args.rounds):
            mailboxes += [f"bench-one-{r}@contoso.test"] + [f"bench-r{r}-{i}@contoso.test" for i in range(args.callers)]
        s.sandbox.clone_businesses(mailboxes)
        # Nothing but HTTP runs in the host: queue consumers and timers would compete for its one event loop.
        host = s.start_host(**disabled(*QUEUE_FUNCTIONS, *TIMER_FUNCTIONS))
        token = s.sandbox.user_token(ADMIN)
        results = asyncio.run(_measure(host.url, token, args.callers, args.rounds))
        subscriptions = len(s.sandbox.control("GET", "subscriptions")["value"])
        handshakes = len(s.sandbox.control("GET", "notifications", kind="validation")["value"])
        secret_logged = "bench-signature-not-for-logs" in host.log

    base = percentile([x.seconds for x in results["baseline: 401 (no token)"]], 50)
    rows = latency_rows(results, base, base)
    print(f"{args.callers} concurrent callers per burst, {args.rounds} rounds; local host (one process), Azurite in "
          f"memory, Graph sandbox in its own process")
    print_table(["scenario", "requests", "statuses", "p50 ms", "p99 ms", "p50/base", "p99/base"], rows)
    one = Counter(x.status for x in results["one mailbox (1st + quota race)"])
    print(f"\nquota under the race: {one[201]} x 201 over {args.rounds} mailboxes "
          f"(expected {5 * args.rounds}), {one[429]} x 429")
    print(f"Graph subscriptions: {subscriptions} for {1 + args.rounds * (args.callers + 1)} mailboxes, "
          f"{handshakes} validation handshakes; callback secret in host log: {secret_logged}")
    print("base = p50 of the 401 baseline burst (same host, same route, same concurrency, no storage or Graph)")


if __name__ == "__main__":
    main()
