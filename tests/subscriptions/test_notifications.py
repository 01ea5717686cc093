"""POST /api/graph/notifications and /api/graph/lifecycle through the local host."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from azure.storage.queue import QueueClient

from shared.adapters.storage import MAILBOX_CHANGES_QUEUE, SUBSCRIPTION_TASKS_QUEUE
from shared.services.subscriptions import Subscriptions

CLINIC = "clinic@contoso.test"


def drain(azurite, queue: str) -> list[dict]:
    client = QueueClient.from_connection_string(azurite.connection_string, queue)
    out = []
    for message in client.receive_messages(max_messages=32):
        out.append(json.loads(base64.b64decode(message.content)))
        client.delete_message(message)
    return out


def item(subscription_id: str, client_state: str, event_id: str = "evt-1", change: str = "updated") -> dict:
    return {"subscriptionId": subscription_id, "clientState": client_state, "changeType": change,
            "resource": f"Users/0000/Events/{event_id}", "tenantId": "t",
            "subscriptionExpirationDateTime": "2026-11-28T00:00:00Z",
            "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": f"Users/0000/Events/{event_id}",
                             "id": event_id}}


@pytest.mark.parametrize("route", ["notifications", "lifecycle"])
def test_validation_token_is_echoed_exactly_and_inert(app_host, route: str) -> None:
    token = "Validation: Testing client application reachability <script>alert(1)</script> + ü"
    response = httpx.post(f"{app_host.url}/api/graph/{route}", params={"validationToken": token})
    assert response.status_code == 200
    assert response.text == token
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_only_authentic_items_are_enqueued(app_host, azurite) -> None:
    record = await Subscriptions().ensure(CLINIC)
    drain(azurite, MAILBOX_CHANGES_QUEUE)
    batch = {"value": [
        item(record.subscription_id, "wrong-client-state", "evt-bad"),
        item("00000000-unknown", record.client_state, "evt-unknown"),
        item(record.subscription_id, record.client_state, "evt-good", "created"),
        item(record.subscription_id, record.client_state, "evt-good-2", "deleted"),
    ]}
    response = httpx.post(f"{app_host.url}/api/graph/notifications", json=batch)
    assert response.status_code == 202
    messages = drain(azurite, MAILBOX_CHANGES_QUEUE)
    assert len(messages) == 1  # one per mailbox per batch
    assert messages[0]["changes"] == [{"changeType": "created", "eventId": "evt-good"},
                                      {"changeType": "deleted", "eventId": "evt-good-2"}]
    # Dropped items are counted, their content never echoed into the log.
    assert "clientStateMismatch': 1" in app_host.log and "unknownSubscription': 1" in app_host.log
    assert "wrong-client-state" not in app_host.log and record.client_state not in app_host.log


@pytest.mark.parametrize(("body", "status", "code"), [
    (b"not json", 400, "InvalidRequest"),
    (b'{"value": "nope"}', 400, "InvalidRequest"),
    (b"[1, 2]", 400, "InvalidRequest"),
    (b'{"value": [' + b'{"a": 1},' * 200_000 + b'{}]}', 413, "PayloadTooLarge"),
])
def test_malformed_bodies_get_json_errors(app_host, body: bytes, status: int, code: str) -> None:
    response = httpx.post(f"{app_host.url}/api/graph/notifications", content=body,
                          headers={"content-type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["remedy"] and error["correlationId"]


async def test_lifecycle_events_become_tasks_and_resyncs(app_host, azurite) -> None:
    record = await Subscriptions().ensure(CLINIC)
    drain(azurite, MAILBOX_CHANGES_QUEUE)
    drain(azurite, SUBSCRIPTION_TASKS_QUEUE)
    batch = {"value": [
        {"subscriptionId": record.subscription_id, "clientState": record.client_state,
         "lifecycleEvent": event, "subscriptionExpirationDateTime": "2026-11-28T00:00:00Z", "tenantId": "t"}
        for event in ("reauthorizationRequired", "subscriptionRemoved", "missed")
    ] + [{"subscriptionId": record.subscription_id, "clientState": "forged", "lifecycleEvent": "missed"}]}
    response = httpx.post(f"{app_host.url}/api/graph/lifecycle", json=batch)
    assert response.status_code == 202
    tasks = drain(azurite, SUBSCRIPTION_TASKS_QUEUE)
    assert sorted(t["action"] for t in tasks) == ["reauthorize", "recreate"]
    assert all(t["mailbox"] == CLINIC and t["subscriptionId"] == record.subscription_id for t in tasks)
    resyncs = drain(azurite, MAILBOX_CHANGES_QUEUE)
    assert len(resyncs) == 1 and resyncs[0]["fullResync"] is True and resyncs[0]["reason"] == "missed"
    # Each becomes an event the renewals tile shows (the forged one is dropped before).
    logged = app_host.log
    for event in ("reauthorizationRequired", "subscriptionRemoved", "missed"):
        assert f"lifecycleEvent={event}" in logged and "SubscriptionLifecycleEvent" in logged


@pytest.mark.slow
async def test_storage_down_gives_503_and_nothing_is_lost_after_it_returns(app_host_factory, sandbox, graph_env,
                                                                          monkeypatch) -> None:
    """Graph retries a 5xx: while storage is down we must not answer 202 (the notification would be lost)."""
    from devhost.processes import Azurite
    from shared.adapters.settings import reset_settings_cache
    from testing.storage import create_app_storage
    from tests.conftest import sandbox_settings

    own = Azurite.on_free_ports().start()
    try:
        create_app_storage(own.connection_string)
        monkeypatch.setenv("AzureWebJobsStorage", own.connection_string)
        host = app_host_factory(**sandbox_settings(sandbox), AzureWebJobsStorage=own.connection_string).start()
        monkeypatch.setenv("PUBLIC_BASE_URL", host.url)
        reset_settings_cache()
        record = await Subscriptions().ensure(CLINIC)
        batch = {"value": [item(record.subscription_id, record.client_state, "evt-during-outage")]}

        own.process.kill()
        own.process.wait()
        response = httpx.post(f"{host.url}/api/graph/notifications", json=batch, timeout=60)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "NotificationNotPersisted"

        # Storage back (same ports; in-memory, so as after a restore): Graph's retry now succeeds.
        own.start()
        create_app_storage(own.connection_string)
        from azure.data.tables import TableClient

        TableClient.from_connection_string(own.connection_string, "subscriptions").upsert_entity(
            {"PartitionKey": record.subscription_id, "RowKey": "", "Mailbox": CLINIC,
             "ClientState": record.client_state})
        response = httpx.post(f"{host.url}/api/graph/notifications", json=batch, timeout=60)
        assert response.status_code == 202
        messages = drain(own, MAILBOX_CHANGES_QUEUE)
        assert [m["changes"][0]["eventId"] for m in messages] == ["evt-during-outage"]
    finally:
        own.stop()


@pytest.mark.slow
async def test_a_batch_over_many_mailboxes_is_bundled_split_and_reconciled(live_app_host, sandbox) -> None:
    # One Graph POST naming six mailboxes is one wave of six: it is stored as a bundle, and the host's
    # reconcile worker splits it and reconciles every mailbox.
    mailboxes = [f"branch{n}@contoso.test" for n in range(6)]
    for mailbox in mailboxes:
        sandbox.control("POST", "businesses", {"smtp": mailbox})
    records = [await Subscriptions().ensure(m) for m in mailboxes]
    batch = {"value": [item(r.subscription_id, r.client_state, f"evt-{n}", "created") for n, r in enumerate(records)]}
    response = httpx.post(f"{live_app_host.url}/api/graph/notifications", json=batch)
    assert response.status_code == 202
    live_app_host.wait_for(lambda _: "split a bundle of change hints into 6 mailbox messages" in live_app_host.log)
    live_app_host.wait_for(lambda _: all(f"reconcile {m}: " in live_app_host.log for m in mailboxes), timeout=60)
