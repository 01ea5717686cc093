"""One Graph subscription per mailbox, through the sandbox's real validation handshake to the app."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from azure.storage.queue import QueueClient

from shared.adapters.storage import MAILBOX_CHANGES_QUEUE, MAILBOX_TABLE, SUBSCRIPTION_TABLE, get_store
from shared.contracts.errors import ApiError
from shared.records import subscription_index
from shared.records.subscription_rows import SUBSCRIPTION_ROW
from shared.services.subscriptions import Subscriptions
from tests.subscriptions.conftest import sandbox_subscriptions

CLINIC = "clinic@contoso.test"


async def no_flows() -> int:
    return 0


async def test_first_flow_creates_a_validated_subscription(app_host, sandbox) -> None:
    record = await Subscriptions().ensure(CLINIC)
    subs = sandbox_subscriptions(sandbox)
    assert [s["id"] for s in subs] == [record.subscription_id]
    sub = subs[0]
    assert sub["resource"].lower() == f"/users/{CLINIC}/events"
    assert sub["changeType"] == "created,updated,deleted"
    assert sub["notificationUrl"] == f"{app_host.url}/api/graph/notifications"
    assert sub["lifecycleNotificationUrl"] == f"{app_host.url}/api/graph/lifecycle"
    assert 32 <= len(record.client_state) <= 128
    index = await get_store().table(SUBSCRIPTION_TABLE).get_entity(record.subscription_id, "")
    assert index["Mailbox"] == CLINIC and index["ClientState"] == record.client_state
    # The handshake really reached the app through the host.
    assert "Executed 'Functions.graph_notifications' (Succeeded" in app_host.log
    # A second flow reuses it: no new Graph call.
    again = await Subscriptions().ensure(CLINIC)
    assert again.subscription_id == record.subscription_id
    assert len(sandbox_subscriptions(sandbox)) == 1


async def test_twenty_racing_first_registrations_make_exactly_one(app_host, sandbox) -> None:
    records = await asyncio.gather(*(Subscriptions().ensure(CLINIC) for _ in range(20)))
    assert len({r.subscription_id for r in records}) == 1
    assert len(sandbox_subscriptions(sandbox)) == 1
    creates = [r for r in sandbox.requests() if r["method"] == "POST" and r["path"] == "/v1.0/subscriptions"]
    assert len(creates) == 1


async def test_last_flow_deletes_the_subscription(app_host, sandbox) -> None:
    record = await Subscriptions().ensure(CLINIC)
    await Subscriptions().release(CLINIC, no_flows)
    assert sandbox_subscriptions(sandbox) == []
    assert await Subscriptions().get(CLINIC) is None
    assert await subscription_index.lookup(record.subscription_id) is None


async def test_release_backs_off_when_a_flow_arrived_meanwhile(app_host, sandbox) -> None:
    await Subscriptions().ensure(CLINIC)

    async def one_flow() -> int:
        return 1

    await Subscriptions().release(CLINIC, one_flow)
    assert len(sandbox_subscriptions(sandbox)) == 1
    assert (await Subscriptions().get(CLINIC)).state == "active"


async def test_validation_failure_leaves_nothing_behind(app_host, sandbox, monkeypatch) -> None:
    from devhost.processes import free_port
    from shared.adapters.settings import reset_settings_cache

    monkeypatch.setenv("PUBLIC_BASE_URL", f"http://127.0.0.1:{free_port()}")  # nothing answers there
    reset_settings_cache()
    with pytest.raises(ApiError) as caught:
        await Subscriptions().ensure(CLINIC)
    assert caught.value.code == "SubscriptionValidationFailed"
    assert sandbox_subscriptions(sandbox) == []
    assert await Subscriptions().get(CLINIC) is None


async def test_missing_permission_names_the_fix(app_host, sandbox) -> None:
    from graph_sandbox.config import DEFAULT_APP_ROLES, DEFAULT_CLIENT_ID

    sandbox.control("POST", f"apps/{DEFAULT_CLIENT_ID}/roles", {"roles": ["Bookings.Read.All"]})
    try:
        with pytest.raises(ApiError) as caught:
            await Subscriptions().ensure(CLINIC)
    finally:
        sandbox.control("POST", f"apps/{DEFAULT_CLIENT_ID}/roles", {"roles": list(DEFAULT_APP_ROLES)})
    assert caught.value.code == "GraphPermissionMissing"
    assert await Subscriptions().get(CLINIC) is None


async def test_throttled_creation_says_when_to_retry(app_host, sandbox) -> None:
    sandbox.add_fault(method="POST", path="/v1.0/subscriptions", status=429, retryAfter=12, count=1)
    with pytest.raises(ApiError) as caught:
        await Subscriptions().ensure(CLINIC)
    assert caught.value.code == "GraphThrottled"
    assert caught.value.headers["Retry-After"] == "12"
    assert await Subscriptions().get(CLINIC) is None
    # Not retried behind the caller's back: one POST.
    assert len([r for r in sandbox.requests() if r["method"] == "POST" and r["path"] == "/v1.0/subscriptions"]) == 1


async def test_a_dead_owner_does_not_wedge_the_mailbox(app_host, sandbox) -> None:
    from datetime import UTC, datetime, timedelta

    table = get_store().table(MAILBOX_TABLE)
    await table.create_entity({"PartitionKey": CLINIC, "RowKey": SUBSCRIPTION_ROW, "State": "creating",
                               "LeaseUntil": datetime.now(UTC) - timedelta(seconds=1), "SubscriptionId": "",
                               "ClientState": ""})
    record = await Subscriptions().ensure(CLINIC)
    assert record.state == "active"
    assert len(sandbox_subscriptions(sandbox)) == 1


def read_change_messages(azurite) -> list[dict]:
    client = QueueClient.from_connection_string(azurite.connection_string, MAILBOX_CHANGES_QUEUE)
    messages = [json.loads(base64.b64decode(m.content)) for m in client.receive_messages(max_messages=32)]
    return messages


async def test_appointment_change_reaches_the_queue_as_one_message_per_mailbox(app_host, sandbox, azurite) -> None:
    QueueClient.from_connection_string(azurite.connection_string, MAILBOX_CHANGES_QUEUE).clear_messages()
    record = await Subscriptions().ensure(CLINIC)
    # Change the mailbox's calendar through the sandbox: Graph then notifies the app.
    event = sandbox.control("POST", f"mailboxes/{CLINIC}/events", {"subject": "walk-in"})
    event_id = event.get("id")
    sandbox.wait_for(lambda: any(n.get("status") in (202, "202") or n.get("delivered")
                                 for n in sandbox.notifications()), timeout=10)
    messages = []
    for _ in range(50):
        messages += [m for m in read_change_messages(azurite) if m["reason"] == "notification"]
        if messages:
            break
        await asyncio.sleep(0.1)
    assert len(messages) == 1
    message = messages[0]
    assert message["version"] == 1 and message["mailbox"] == CLINIC
    assert message["subscriptionId"] == record.subscription_id
    assert message["changes"][0]["changeType"] == "created"
    assert message["changes"][0]["eventId"] == event_id
    assert message["fullResync"] is False and message["reason"] == "notification"


async def test_the_last_flow_takes_the_appointment_data_along_and_a_later_first_flow_starts_afresh(
        app_host, sandbox) -> None:
    """Snapshots hold customers' data: gone with the last flow. A flow registered later must not receive the
    changes made while nobody watched (Cancelled/Created for appointments of before it existed)."""
    from shared.records.mailbox import prefix_bounds
    from shared.records.outbox import OUTBOX_PREFIX
    from shared.records.reconcile_state import CANCEL_REASON_PREFIX, SNAPSHOT_PREFIX, SYNC_ROW, put_cancel_reason
    from shared.workers.reconcile import reconcile
    from tests.reconcile.test_reconcile import Bookings, hint

    table = get_store().table(MAILBOX_TABLE)

    async def kinds() -> set[str]:
        found = set()
        async for e in table.query_entities("PartitionKey eq @pk", parameters={"pk": CLINIC}):
            key = e["RowKey"]
            found.add(next((p for p in (SNAPSHOT_PREFIX, CANCEL_REASON_PREFIX, OUTBOX_PREFIX) if key.startswith(p)),
                           key))
        return found

    await Subscriptions().ensure(CLINIC)
    assert await reconcile(hint(full_resync=True)) == "reconciled"  # the baseline
    bookings = Bookings(sandbox)
    existing = bookings.http.get("/appointments").json()["value"][0]["id"]
    await put_cancel_reason(CLINIC, existing, "double booked", "admin@contoso.test")
    assert {SYNC_ROW, SNAPSHOT_PREFIX, CANCEL_REASON_PREFIX} <= await kinds()

    await Subscriptions().release(CLINIC, no_flows)
    assert not {SNAPSHOT_PREFIX, CANCEL_REASON_PREFIX} & await kinds()
    marker = await table.get_entity(CLINIC, SYNC_ROW)  # what is left: "nobody watches", no appointment data
    assert marker["Unwatched"] is True and "BaselineAt" not in marker

    # Nobody watches: an appointment is booked and another one cancelled; a hint queued before the release
    # arrives late, and brings nothing back.
    bookings.create()
    bookings.cancel(existing)
    assert await reconcile(hint()) == "unwatched"
    assert await reconcile(hint(full_resync=True)) == "unwatched"
    assert not {SNAPSHOT_PREFIX, CANCEL_REASON_PREFIX} & await kinds()
    await Subscriptions().ensure(CLINIC)  # a first flow again
    assert await reconcile(hint(full_resync=True)) == "reconciled"
    outbox_rows = [e async for e in table.query_entities(
        "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
        parameters={"pk": CLINIC, **prefix_bounds(OUTBOX_PREFIX)})]
    assert outbox_rows == []  # a fresh baseline: recorded, not announced
    assert SNAPSHOT_PREFIX in await kinds()


async def test_a_release_finishes_a_deleting_row_whose_owner_died(app_host, sandbox) -> None:
    from datetime import UTC, datetime, timedelta

    record = await Subscriptions().ensure(CLINIC)
    table = get_store().table(MAILBOX_TABLE)
    await table.update_entity({"PartitionKey": CLINIC, "RowKey": SUBSCRIPTION_ROW, "State": "deleting",
                               "LeaseUntil": datetime.now(UTC) - timedelta(seconds=1)}, mode="merge")
    await Subscriptions().release(CLINIC, no_flows)
    assert await Subscriptions().get(CLINIC) is None
    assert sandbox_subscriptions(sandbox) == [] and await subscription_index.lookup(record.subscription_id) is None
