"""Delivery through the local host (``python -m devhost``) running the project's function_app.py: the
queue runtime retries, poisons and the HTTP routes are the host's. Only the delivery functions consume
queues here, and host.json is overridden through app settings (as on Azure) so a message reaches the
poison queue after two quick attempts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devhost.processes import ROOT, free_port
from shared.adapters.storage import MAILBOX_TABLE, get_store
from shared.messages.deliveries import idempotency_key
from shared.records.dead_letters import DeadLetters
from shared.records.outbox import outbox_row_key, payload_properties
from testing.hosting import HostProcess
from testing.receiver import SECRET
from testing.rows import CLINIC, add_event, add_flow, appointment
from testing.settings import sample_settings
from tests.conftest import sandbox_settings
from tests.delivery.conftest import fan_out

HOST_JSON_OVERRIDES = {
    "AzureFunctionsJobHost__functionTimeout": "00:01:00",
    "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:00.500",
    "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:00",
    "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "2",
}
NOT_DELIVERY = ("reconcile_mailbox", "subscription_tasks", "resync_mailboxes", "renew_subscriptions")


@pytest.fixture
def delivery_host(env, graph_env, sandbox, azurite, tmp_path: Path) -> Iterator[HostProcess]:
    port = free_port()
    settings = {**sample_settings(), "AzureWebJobsStorage": azurite.connection_string,
                **sandbox_settings(sandbox), "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                "DEVHOST_QUEUE_LEASE_SECONDS": "5", **HOST_JSON_OVERRIDES,
                **{f"AzureWebJobs.{name}.Disabled": "true" for name in NOT_DELIVERY}}
    host = HostProcess(ROOT, port, env=settings, log_dir=tmp_path).start()
    yield host
    host.kill()


async def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_through_the_local_host_retry_poison_and_replay(delivery_host, sandbox, receiver) -> None:
    table = get_store().table(MAILBOX_TABLE)
    # 1. A 500 is retried by our own re-enqueue; the receiver sees one key and one success.
    flow = await add_flow(receiver.url("hosted"))
    receiver.plan("hosted", 500, 200)
    good = await add_event(number=1)
    await fan_out(CLINIC, [good], "cid-host")
    requests = await asyncio.to_thread(receiver.wait_for, 2, "hosted", 20)
    assert [r.status for r in requests] == [500, 200]
    assert {r.headers["idempotency-key"] for r in requests} == {idempotency_key(good, flow.webhook_id)}

    # 2. A message the worker fails on every time (corrupt payload) ends in deliveries-poison, and the
    #    poison function turns it into a dead letter.
    bad = await add_event(number=2)
    await table.update_entity({"PartitionKey": CLINIC, "RowKey": outbox_row_key(bad), "Payload0": "{broken"})
    await fan_out(CLINIC, [bad], "cid-poison")
    letters = DeadLetters(table)
    (letter,) = await eventually(lambda: letters.list(CLINIC))
    assert (letter.event_id, letter.reason) == (bad, "poison")
    assert len(receiver.requests("hosted")) == 2  # nothing was sent for it

    # 3. The administrator lists and replays it over HTTP once the data is repaired.
    await table.update_entity({"PartitionKey": CLINIC, "RowKey": outbox_row_key(bad),
                               **payload_properties(appointment(2))})
    token = sandbox.user_token("admin@contoso.test")
    async with httpx.AsyncClient(base_url=delivery_host.url, timeout=20,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        listed = await client.get(f"/api/v1/bookingBusinesses/{CLINIC}/deadletters")
        assert listed.status_code == 200, listed.text
        assert [d["id"] for d in listed.json()["deadLetters"]] == [letter.id] and SECRET not in listed.text
        replay = await client.post(f"/api/v1/bookingBusinesses/{CLINIC}/deadletters/replay")
        assert replay.status_code == 202, replay.text
        assert replay.json()["replayed"] == [letter.id]
        viewer = await client.get(f"/api/v1/bookingBusinesses/{CLINIC}/deadletters",
                                  headers={"Authorization": f"Bearer {sandbox.user_token('viewer@contoso.test')}"})
        assert viewer.status_code == 403 and viewer.json()["error"]["code"] == "NotBookingsAdministrator"
    requests = await asyncio.to_thread(receiver.wait_for, 3, "hosted", 20)
    assert requests[-1].status == 200 and requests[-1].headers["x-bookings-event-id"] == bad
    assert await letters.list(CLINIC) == []
    assert SECRET not in delivery_host.log
