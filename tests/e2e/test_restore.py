"""Export → wipe → restore brings every flow back: the flows of two businesses are registered through the API,
exported to Azurite's blob service, the tables wiped (a lost ``mailboxes`` table), and restored with
``scripts/restore-flows.sh`` against the local host (dry run first, then twice for real: the same state); a booking
in each business then reaches each restored flow, through a new Graph subscription made by the app.

Slow: it needs the host (the Graph sandbox's validation handshake reaches the app's notification endpoint).
"""

from __future__ import annotations

import json
import logging
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devhost.processes import ROOT
from shared.adapters.blobs import get_blobs
from shared.adapters.storage import MAILBOX_TABLE, SUBSCRIPTION_TABLE
from shared.records.flows import FlowRegistry
from shared.services import backup
from testing.receiver import SECRET, Receiver
from tests.conftest import sandbox_subscriptions

pytestmark = pytest.mark.slow

BUSINESSES = ("clinic@contoso.test", "salon@contoso.test")
FLOWS = {"clinic@contoso.test": ("clinic-a", "clinic-b", "clinic-c"), "salon@contoso.test": ("salon-a",)}
MASTER_KEY = "local-master-key"  # devhost/config.py Keys


def register(host: Any, sandbox: Any, receiver: Receiver, mailbox: str, flow: str) -> str:
    answer = httpx.post(f"{host.url}/api/v1/bookingBusinesses/{mailbox}/webhooks/AppointmentCreated", timeout=60,
                        headers={"Authorization": f"Bearer {sandbox.user_token('admin@contoso.test')}"},
                        json={"notificationURL": receiver.url(flow), "resource": "Appointments",
                              "changeType": "Created"})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["webhookId"])


def book(sandbox: Any, mailbox: str) -> None:
    graph = httpx.Client(base_url=f"{sandbox.graph_url}/solutions/bookingBusinesses/{mailbox}",
                         headers=sandbox.graph_headers(), timeout=30)
    service = graph.get("/services").json()["value"][0]
    start = datetime.now(UTC).replace(microsecond=0, second=0) + timedelta(days=3)
    answer = graph.post("/appointments", json={
        "serviceId": service["id"], "customers": [{"@odata.type": "#microsoft.graph.bookingCustomerInformation",
                                                   "name": "Grace Hopper", "emailAddress": "grace@example.test"}],
        "startDateTime": {"dateTime": start.replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
        "endDateTime": {"dateTime": (start + timedelta(minutes=30)).replace(tzinfo=None).isoformat(),
                        "timeZone": "UTC"}})
    assert answer.status_code == 201, answer.text


def restore(host: Any, *args: str) -> str:
    run = subprocess.run(["bash", str(ROOT / "scripts" / "restore-flows.sh"), *args], capture_output=True,
                         text=True, timeout=120, check=False,
                         env={"PATH": "/usr/bin:/bin", "RESTORE_URL": host.url, "RESTORE_KEY": MASTER_KEY})
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


async def rows() -> dict[str, list[tuple[str, str]]]:
    """Every flow, quota and flows-index row, and the subscription rows' mailboxes: what the restore must bring back."""
    from shared.adapters.storage import get_store

    table = get_store().table(MAILBOX_TABLE)
    found = [(e["PartitionKey"], e["RowKey"]) async for e in table.list_entities(select=["PartitionKey", "RowKey"])
             if e["RowKey"].startswith("flow:") or e["RowKey"] == "quota" or e["PartitionKey"] == "~index:flows"]
    return {"flows": sorted(found)}


async def wipe() -> None:
    """The table lost: every entity of both tables gone (the Graph subscriptions stay, as orphans)."""
    from shared.adapters.storage import get_store

    for name in (MAILBOX_TABLE, SUBSCRIPTION_TABLE):
        table = get_store().table(name)
        async for entity in table.list_entities(select=["PartitionKey", "RowKey"]):
            await table.delete_entity(entity["PartitionKey"], entity["RowKey"])


def wait_baseline(host: Any, mailbox: str, count: int) -> None:
    import time

    deadline = time.monotonic() + 30
    while host.log.count(f"reconcile {mailbox}: reconciled") < count:
        assert time.monotonic() < deadline, f"no baseline of {mailbox}:\n" + host.log[-3000:]
        time.sleep(0.1)


async def test_export_wipe_restore_brings_every_flow_back(live_app_host, sandbox, caplog) -> None:
    host = live_app_host
    with Receiver() as receiver:
        ids = {flow: register(host, sandbox, receiver, mailbox, flow) for mailbox, flows in FLOWS.items()
               for flow in flows}
        before = await rows()
        caplog.set_level(logging.DEBUG)
        summary = await backup.export_flows()
        assert (summary.flows, summary.mailboxes) == (4, 2)
        assert SECRET not in caplog.text  # the export's own log lines name no callback URL

        await wipe()
        old_subscriptions = {s["id"] for s in sandbox_subscriptions(sandbox)}
        assert (await rows())["flows"] == []

        listing = json.loads(restore(host, "--list"))["exports"]
        assert listing[0]["blob"] == summary.blob and listing[0]["flows"] == 4
        dry = restore(host, "--dry-run")
        assert '"flowsRestored":4' in dry.replace(" ", "") and "dry run" in dry
        assert (await rows())["flows"] == []  # a dry run writes nothing

        first = restore(host)
        assert '"flowsRestored":4' in first.replace(" ", "")
        assert await rows() == before
        again = restore(host)  # idempotent: nothing written, the same rows
        assert '"flowsRestored":0' in again.replace(" ", "") and '"flowsPresent":4' in again.replace(" ", "")
        assert await rows() == before

        registry = FlowRegistry.default()
        for mailbox, flows in FLOWS.items():
            restored = {f.webhook_id for f in await registry.list_flows(mailbox)}
            assert restored == {ids[f] for f in flows}  # the same ids: Power Automate deletes them by id
        new_subscriptions = {s["id"] for s in sandbox_subscriptions(sandbox)} - old_subscriptions
        assert len(new_subscriptions) == 2  # one per business, made by the app's own ensure()

        for mailbox in BUSINESSES:
            wait_baseline(host, mailbox, 2)  # the first subscription's baseline, then the restored one's
            book(sandbox, mailbox)
        for flows in FLOWS.values():
            for flow in flows:
                assert len(receiver.wait_for(1, flow, timeout=30)) == 1, flow
        assert SECRET not in host.log
    await get_blobs().close()
