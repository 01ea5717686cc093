"""The alert rules about Graph's side, each driven into the state it exists for: the notification endpoint
answering 5xx (storage down), the renewal sweep silent or leaving a subscription about to expire, renewals
failing. What the app emitted there goes through the exporter's conversion into the rows Application Insights
stores, and the rule's own KQL (infra/queries) runs over them (tests/app_insights.py)."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta

import azure.functions as func
import pytest

from shared.adapters.settings import reset_settings_cache
from shared.endpoints import graph_notifications
from shared.messages.subscription_tasks import task
from shared.records import subscription_index
from shared.services.subscriptions import Subscriptions
from shared.workers.renewal import run_task, sweep
from tests.app_insights import alert_rows, capture, dimensions, fires, shipped_sampling_ratio
from tests.subscriptions.test_renewal import CLINIC, expire_soon, give_flows

SECRET_TOKEN = "validation-token-nobody-may-see"


def notification(body: bytes, params: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest("POST", "http://127.0.0.1:7071/api/graph/notifications", params=params or {},
                            headers={"content-type": "application/json"}, route_params={}, body=body)


async def test_notifications_answered_5xx_while_storage_is_down_fire_the_alert(clean_env, monkeypatch) -> None:
    from devhost.processes import Azurite
    from testing.storage import create_app_storage

    own = Azurite.on_free_ports().start()
    try:
        create_app_storage(own.connection_string)
        monkeypatch.setenv("AzureWebJobsStorage", own.connection_string)
        reset_settings_cache()
        sid = str(uuid.uuid4())
        await subscription_index.put(sid, CLINIC, "client-state", datetime.now(UTC) + timedelta(days=2))
        item = {"subscriptionId": sid, "clientState": "client-state", "changeType": "updated",
                "resource": "Users/0000/Events/e1", "resourceData": {"id": "e1"}}
        with capture() as healthy:
            handshake = await graph_notifications.handle(notification(b"", {"validationToken": SECRET_TOKEN}))
        own.process.kill()
        own.process.wait()
        with capture() as outage:
            answer = await graph_notifications.handle(notification(json.dumps({"value": [item]}).encode()))
    finally:
        own.stop()
    assert handshake.status_code == 200 and answer.status_code == 503

    assert not fires("notification-5xx", alert_rows("notification-5xx", healthy))
    # At the shipped TELEMETRY_SAMPLING_RATIO (capture's default) the requests row is kept or not, by its trace id;
    # the rule counts the RequestFailed event, which is never sampled.
    (row,) = alert_rows("notification-5xx", outage)
    assert fires("notification-5xx", [row])
    assert (row["route"], row["status"]) == ("POST /api/graph/notifications", 503)
    # The correlation id of the error body Graph got is on the row too.
    error = json.loads(answer.get_body())["error"]
    assert row["correlationId"] == error["correlationId"] == answer.headers["x-correlation-id"]
    # The error log of that answer carries the same operation_Id: from the alert to the one invocation.
    traces = outage.rows()["traces"]
    assert any("answering 503" in t["message"] and t["operation_Id"] == row["operation_Id"] for t in traces)
    for request in outage.rows()["requests"]:  # sampled in: the same operation, standing for 1 / ratio answers
        assert (request["operation_Id"], request["resultCode"]) == (row["operation_Id"], "503")
        assert request["itemCount"] == round(1 / shipped_sampling_ratio())
    assert SECRET_TOKEN not in json.dumps(healthy.rows(), default=str)


@pytest.mark.slow
async def test_a_silent_sweep_or_a_subscription_close_to_expiry_fires_the_heartbeat_alert(app_host) -> None:
    await give_flows(CLINIC)
    record = await Subscriptions().ensure(CLINIC)  # lives 70 hours
    with capture() as healthy:
        await sweep()
    (event,) = [e for e in healthy.rows()["customEvents"] if e["name"] == "RenewalSweepCompleted"]
    assert dimensions(event)["subscriptionCount"] == "1" and dimensions(event)["renewalCount"] == "0"
    assert alert_rows("renewal-heartbeat", healthy) == []

    # The same sweep seen 2 hours later, with none since: the timer stopped.
    healthy.shift = timedelta(hours=2, minutes=1)
    (silent,) = alert_rows("renewal-heartbeat", healthy)
    assert silent["state"] == "sweepSilent"
    # No sweep in the rule's whole window at all.
    with capture() as nothing:
        pass
    assert fires("renewal-heartbeat", alert_rows("renewal-heartbeat", nothing))

    # Renewals enqueued from 24 hours before expiry never succeeded: 5 hours are left.
    await expire_soon(CLINIC, minutes=5 * 60)
    with capture() as expiring:
        report = await sweep()
    assert report.renewals == 1
    (row,) = alert_rows("renewal-heartbeat", expiring)
    assert (row["state"], row["mailbox"], row["subscriptionId"]) == ("expiringSoon", CLINIC, record.subscription_id)
    assert timedelta(hours=4, minutes=59) < row["earliestExpiresAt"] - datetime.now(UTC).replace(tzinfo=None)


@pytest.mark.slow
async def test_renewals_failing_fire_the_renewal_failed_alert(app_host, sandbox, caplog) -> None:
    await give_flows(CLINIC)
    record = await Subscriptions().ensure(CLINIC)
    sandbox.add_fault(method="PATCH", path="/v1.0/subscriptions/*", status=500, count=None)
    with caplog.at_level(logging.INFO), capture() as captured:
        for attempt in range(3):
            assert await run_task(task("renew", CLINIC, record.subscription_id, "expiring")) == "failed", attempt
    (row,) = alert_rows("subscription-renewal-failed", captured)  # from the third failure in a row
    assert fires("subscription-renewal-failed", [row])
    assert (row["mailbox"], row["subscriptionId"], row["status"], row["consecutiveFailures"]) == (
        CLINIC, record.subscription_id, 500, 3)
