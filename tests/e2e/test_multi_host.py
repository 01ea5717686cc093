"""Two instances of the app on one storage account: a flow removed through one gets no delivery from the other
beyond the delivery worker's flow cache (``records.flows.FLOW_CACHE_SECONDS``, 15 s; docs/architecture.md
"In-process state"). The window is scaled to 2 s here (``bench._chaos_host``'s ``CHAOS_FLOW_CACHE_SECONDS``)."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from azure.storage.queue import QueueClient

from shared.adapters.storage import DELIVERIES_QUEUE
from shared.messages import deliveries
from testing.receiver import Receiver
from testing.storage import clean_app_storage
from tests.conftest import sandbox_settings

pytestmark = pytest.mark.slow

CLINIC = "clinic@contoso.test"
WINDOW = 2.0  # the scaled flow cache of the delivering host
QUIET = {f"AzureWebJobs.{name}.Disabled": "true" for name in (
    "sweep_outbox", "resync_mailboxes", "renew_subscriptions", "refresh_directory")}


def _message(flow_id: str, number: int) -> dict[str, Any]:
    event: deliveries.DeliveryEvent = {
        "trigger": "AppointmentCreated", "changeType": "Created", "appointmentId": f"appointment-{number}",
        "detectedAt": datetime.now(UTC).isoformat(), "isTest": False, "payload": {"AppointmentId": f"a-{number}"}}
    return dict(deliveries.new_message(CLINIC, f"event-{number}", flow_id, event=event))


def _enqueue(connection_string: str, message: dict[str, Any], delay: float = 0) -> None:
    text = base64.b64encode(json.dumps(message).encode()).decode()
    with QueueClient.from_connection_string(connection_string, DELIVERIES_QUEUE) as queue:
        queue.send_message(text, visibility_timeout=int(delay) or None)


def test_a_flow_removed_through_one_host_gets_nothing_from_another_after_the_window(
        app_host_factory: Any, sandbox: Any, graph_env: dict[str, str], azurite: Any) -> None:
    clean_app_storage(azurite.connection_string)
    registering = app_host_factory(**sandbox_settings(sandbox), **QUIET, **{"AzureWebJobs.deliveries.Disabled": "true"})
    delivering = app_host_factory(**sandbox_settings(sandbox), **QUIET, CHAOS_FLOW_CACHE_SECONDS=str(WINDOW),
                                  **{"AzureWebJobs.reconcile_mailbox.Disabled": "true"})
    delivering.module = "bench._chaos_host"
    registering.start(), delivering.start()
    admin = {"Authorization": f"Bearer {sandbox.user_token('admin@contoso.test')}"}
    with Receiver() as receiver:
        r = httpx.post(f"{registering.url}/api/v1/bookingBusinesses/{CLINIC}/webhooks/AppointmentCreated",
                       headers=admin, timeout=60, json={"notificationURL": receiver.url("flow"),
                                                        "resource": "Appointments", "changeType": "Created"})
        assert r.status_code == 201, r.text
        flow_id = r.json()["webhookId"]
        _enqueue(azurite.connection_string, _message(flow_id, 1))
        receiver.wait_for(1, "flow", timeout=20)  # the delivering host has read the flow: it is in its cache

        r = httpx.delete(f"{registering.url}/api/v1/bookingBusinesses/{CLINIC}/webhooks/{flow_id}", headers=admin,
                         timeout=30)
        assert r.status_code == 204, r.text
        removed = time.time()
        _enqueue(azurite.connection_string, _message(flow_id, 2))  # within the window: may still go (the race)
        _enqueue(azurite.connection_string, _message(flow_id, 3), delay=WINDOW + 2)  # after it: must not
        deadline = removed + WINDOW + 8
        while "delivery of event event-3 skipped" not in delivering.log and time.time() < deadline:
            time.sleep(0.2)
        late = [x for x in receiver.requests("flow") if x.at > removed + WINDOW]
    assert "delivery of event event-3 skipped: flow" in delivering.log, delivering.log[-3000:]
    assert not late, f"delivered {len(late)} time(s) after the window"
