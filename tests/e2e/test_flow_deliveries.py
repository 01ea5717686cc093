"""*List deliveries of a flow* and *Replay failed deliveries of a flow*, end to end through the local host with
every function on, Graph = the sandbox, a local receiver standing in for Power Automate: who may call them (the
flow's creator and the business's administrators; everyone else 403/404 with the JSON error), paging newest first,
a flow failing for good showing it, its replay, and a row past ``DELIVERY_LOG_RETENTION_DAYS`` pruned by the
outbox sweep (run every 2 s here).

Slow (queue polling between hops), so marked; CI runs them.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

from shared.records import delivery_log
from testing.receiver import Receiver
from tests.conftest import sandbox_settings
from tests.e2e.test_appointment_flow import HOP_TIMEOUT
from tests.e2e.test_beyond_triggers import CLINIC, Flows

pytestmark = pytest.mark.slow


def oid(token: str) -> str:
    claims = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["oid"])


class Deliveries(Flows):
    def as_user(self, upn: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.sandbox.user_token(upn)}", "Accept-Language": "ja"}

    def listing(self, webhook_id: str, upn: str = "admin@contoso.test", query: str = "",
                mailbox: str = CLINIC) -> httpx.Response:
        return httpx.get(f"{self.host.url}/api/v1/bookingBusinesses/{mailbox}/webhooks/{webhook_id}/deliveries"
                         f"{query}", headers=self.as_user(upn), timeout=30)

    def replay(self, webhook_id: str, upn: str = "admin@contoso.test") -> httpx.Response:
        return httpx.post(f"{self.host.url}/api/v1/bookingBusinesses/{CLINIC}/webhooks/{webhook_id}/deadletters/"
                          "replay", headers=self.as_user(upn), timeout=30)

    def states(self, webhook_id: str) -> list[tuple[str, str]]:
        return [(d["eventId"], d["state"]) for d in self.listing(webhook_id).json()["value"]]


@pytest.fixture
def deliveries(app_host_factory, sandbox, graph_env, azurite, monkeypatch) -> Iterator[Deliveries]:
    from testing.storage import clean_app_storage

    clean_app_storage(azurite.connection_string)
    host = app_host_factory(**sandbox_settings(sandbox), OUTBOX_SWEEP_SCHEDULE="*/2 * * * * *").start()
    monkeypatch.setenv("PUBLIC_BASE_URL", host.url)
    with Receiver() as receiver:
        yield Deliveries(host, sandbox, receiver)


def wait_until(check, what: str) -> None:
    deadline = time.monotonic() + HOP_TIMEOUT
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_flows_deliveries_are_listed_paged_replayed_and_pruned(
        deliveries: Deliveries, azurite) -> None:
    ok = deliveries.register_with("AppointmentCreated", "ok").json()["webhookId"]
    failing = deliveries.register_with("AppointmentUpdated", "failing").json()["webhookId"]
    # A delivery older than DELIVERY_LOG_RETENTION_DAYS (7): the outbox sweep prunes its day.
    log = TableClient.from_connection_string(azurite.connection_string, "deliverylog")
    old = datetime.now(UTC) - timedelta(days=8)
    expired = {"PartitionKey": delivery_log.partition(CLINIC, old), "RowKey": delivery_log.row_key(ok, old, "e-old")}
    log.upsert_entity({**expired, "EventId": "e-old", "FlowId": ok, "State": "delivered", "FirstAttemptAt": old})
    deliveries.receiver.plan("failing", 400)
    sent = [deliveries.test_event(ok).json()["eventId"] for _ in range(3)]
    failed = deliveries.test_event(failing).json()["eventId"]
    deliveries.receiver.wait_for(3, "ok", timeout=HOP_TIMEOUT)
    wait_until(lambda: deliveries.states(failing) == [(failed, "deadLettered")], "never dead-lettered")
    # The flow failing for good shows it, with the status its trigger answered; the flow is named by the id
    # each delivery carries.
    health = ("consecutiveFailures", "lastDeliveryStatus")  # written behind the delivery, within a second
    wait_until(lambda: [deliveries.listing(failing).json()[k] for k in health] == [1, "400"], "no health")
    (row,) = deliveries.listing(failing).json()["value"]
    assert (row["lastStatus"], row["attempts"], row["trigger"], row["isTest"]) == (400, 1, "AppointmentUpdated", True)
    assert deliveries.receiver.requests("ok")[0].headers["x-bookings-webhook-id"] == ok
    # Paged newest first, two a page, through nextLink as Power Automate follows it.
    first = deliveries.listing(ok, query="?top=2").json()
    assert [d["state"] for d in first["value"]] == ["delivered", "delivered"] and first["nextLink"]
    second = httpx.get(first["nextLink"], headers=deliveries.as_user("admin@contoso.test"), timeout=30).json()
    assert "nextLink" not in second
    assert [d["eventId"] for d in first["value"] + second["value"]] == sent[::-1]
    # Replayed: delivered again, once; the dead-lettered delivery says it was replayed.
    replayed = deliveries.replay(failing)
    assert replayed.status_code == 202 and len(replayed.json()["replayed"]) == 1, replayed.text
    deliveries.receiver.wait_for(2, "failing", timeout=HOP_TIMEOUT)
    wait_until(lambda: sorted(s for _, s in deliveries.states(failing)) == ["delivered", "replayed"], "no replay")
    assert deliveries.replay(failing).json()["replayed"] == []

    def pruned() -> bool:
        try:
            log.get_entity(expired["PartitionKey"], expired["RowKey"])
        except ResourceNotFoundError:
            return True
        return False

    wait_until(pruned, "the sweep never pruned the expired row")


def test_everyone_else_is_refused_with_the_json_error(deliveries: Deliveries, azurite) -> None:
    flow = deliveries.register_with("AppointmentCreated", "ok").json()["webhookId"]
    # A staff member who neither created the flow nor administers the business (in Japanese, as asked).
    for upn in ("scheduler@contoso.test", "viewer@contoso.test"):
        for refused in (deliveries.listing(flow, upn), deliveries.replay(flow, upn)):
            error = refused.json()["error"]
            assert refused.status_code == 403 and error["code"] == "NotFlowCreatorOrAdministrator", refused.text
            assert "管理者" in error["message"] and error["remedy"] and error["correlationId"]
    # Nobody but an administrator learns whether a flow exists; a business that does not exist is 404.
    unknown = "00000000-0000-4000-8000-000000000000"
    assert deliveries.listing(unknown, "scheduler@contoso.test").status_code == 403
    missing = deliveries.listing(unknown)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "FlowNotFound"
    nowhere = deliveries.listing(flow, mailbox="nobody@contoso.test")
    assert nowhere.status_code == 404 and nowhere.json()["error"]["code"] == "BookingBusinessNotFound"
    outsider = deliveries.listing(flow, "outsider@contoso.test")
    assert outsider.status_code == 403 and outsider.json()["error"]["code"] == "NotFlowCreatorOrAdministrator"
    assert deliveries.listing(flow, query="?after=nonsense").status_code == 400
    assert deliveries.listing(flow, query="?top=101").status_code == 400
    # The flow's creator may, administrator or not (the scheduler standing for a creator demoted since).
    flows = TableClient.from_connection_string(azurite.connection_string, "mailboxes")
    scheduler = oid(deliveries.sandbox.user_token("scheduler@contoso.test"))
    flows.update_entity({"PartitionKey": CLINIC, "RowKey": f"flow:{flow}", "CreatedByOid": scheduler})
    assert deliveries.listing(flow, "scheduler@contoso.test").status_code == 200
    assert deliveries.replay(flow, "scheduler@contoso.test").status_code == 202
    assert deliveries.listing(flow, "viewer@contoso.test").status_code == 403
