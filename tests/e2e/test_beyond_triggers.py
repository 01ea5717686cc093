"""What flows get beyond Microsoft's connector, end to end through the local host with every function on, Graph =
the sandbox, a local receiver standing in for Power Automate: a test event on request, per-flow service and
staff filters, and Updated events that say what changed.

Slow (queue polling between hops), so marked; CI runs them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from azure.data.tables import TableClient

from testing.receiver import Receiver
from tests.appointment_data.conftest import assert_valid
from tests.e2e.test_appointment_flow import HOP_TIMEOUT, Stack, customer

pytestmark = pytest.mark.slow

CLINIC = "clinic@contoso.test"
EMPTY_PREVIOUS = {"Duration": 0, "EndTime": "", "ServiceId": "", "ServiceName": "", "StaffMembers": [],
                  "StartTime": ""}


class Flows(Stack):
    def register_with(self, trigger: str, flow: str, upn: str = "admin@contoso.test", **filters: Any) -> httpx.Response:
        return httpx.post(
            f"{self.host.url}/api/v1/bookingBusinesses/{CLINIC}/webhooks/{trigger}", timeout=60,
            headers={"Authorization": f"Bearer {self.sandbox.user_token(upn)}"},
            json={"notificationURL": self.receiver.url(flow), "resource": "Appointments",
                  "changeType": trigger.removeprefix("Appointment"), **filters})

    def test_event(self, webhook_id: str, upn: str = "admin@contoso.test") -> httpx.Response:
        return httpx.post(f"{self.host.url}/api/v1/bookingBusinesses/{CLINIC}/webhooks/{webhook_id}/test",
                          headers={"Authorization": f"Bearer {self.sandbox.user_token(upn)}"}, timeout=60)


@pytest.fixture
def flows(live_app_host, sandbox) -> Iterator[Flows]:
    with Receiver() as receiver:
        yield Flows(live_app_host, sandbox, receiver)


def test_a_test_event_reaches_only_that_flow_marked_as_a_test(flows: Flows, azurite) -> None:
    updated = flows.register_with("AppointmentUpdated", "updated")
    other = flows.register_with("AppointmentUpdated", "other")
    assert updated.status_code == other.status_code == 201, updated.text
    sent = flows.test_event(updated.json()["webhookId"])
    assert sent.status_code == 202, sent.text
    (got,) = flows.receiver.wait_for(1, "updated", timeout=HOP_TIMEOUT)
    payload = json.loads(got.body)
    assert_valid(payload)
    assert payload["IsTest"] is True and got.headers["x-bookings-test"] == "true"
    assert got.headers["x-bookings-trigger"] == "AppointmentUpdated"
    assert got.headers["x-bookings-event-id"] == sent.json()["eventId"] and got.headers["idempotency-key"]
    assert payload["ChangedFields"] == ["StartTime", "EndTime"] and payload["Previous"]["StartTime"]
    assert payload["CustomerName"] and payload["Customers"] and payload["StaffMembers"]
    time.sleep(2)
    assert flows.receiver.requests("other") == []  # one flow's test is no other flow's event
    # Refusals: a staff member who neither created the flow nor administers the business; an unknown flow.
    refused = flows.test_event(updated.json()["webhookId"], "scheduler@contoso.test")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "NotFlowCreatorOrAdministrator"
    missing = flows.test_event("00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "FlowNotFound"
    listing = httpx.get(f"{flows.host.url}/api/v1/bookingBusinesses/{CLINIC}/webhooks", timeout=30,
                        headers={"Authorization": f"Bearer {flows.sandbox.user_token('admin@contoso.test')}"}).json()
    health = {w["webhookId"]: w for w in listing["webhooks"]}
    assert health[updated.json()["webhookId"]]["deliveredCount"] == 1
    assert health[updated.json()["webhookId"]]["displayName"].startswith("When an appointment is updated")


def test_filtered_flows_get_only_their_services_and_staff(flows: Flows, azurite) -> None:
    services = {s["displayName"]: s for s in flows.graph.get("/services").json()["value"]}
    staff = {m["emailAddress"]: m["id"] for m in flows.graph.get("/staffMembers").json()["value"]}
    consult, group = services["Initial consultation"], services["Group wellness class"]
    for name, filters in (("any", {}), ("consult", {"serviceId": consult["id"]}),
                          ("group", {"serviceId": group["id"]}),
                          ("member", {"staffMemberId": staff["member@contoso.test"]}),
                          ("consult-admin", {"serviceId": consult["id"],
                                             "staffMemberId": staff["admin@contoso.test"]})):
        response = flows.register_with("AppointmentCreated", name, **filters)
        assert response.status_code == 201, response.text
    listing = httpx.get(f"{flows.host.url}/api/v1/bookingBusinesses/{CLINIC}/webhooks", headers=flows.admin,
                        timeout=30).json()["webhooks"]
    assert sorted(w["serviceIds"] for w in listing) == sorted([[], [consult["id"]], [group["id"]], [],
                                                               [consult["id"]]])
    assert sorted(w["staffMemberIds"] for w in listing) == sorted([[], [], [], [staff["member@contoso.test"]],
                                                                   [staff["admin@contoso.test"]]])
    unknown = flows.register_with("AppointmentCreated", "x", serviceId="no-such-service")
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "InvalidRequest"
    flows.wait_baseline()
    booked = flows.book(consult, [customer("Ada Lovelace")], staffMemberIds=[staff["member@contoso.test"]])
    for name in ("any", "consult", "member"):
        (got,) = flows.receiver.wait_for(1, name, timeout=HOP_TIMEOUT)
        assert json.loads(got.body)["AppointmentId"] == booked["id"]
    time.sleep(3)
    assert flows.receiver.requests("group") == [] and flows.receiver.requests("consult-admin") == []
    # Filtered out is no delivery: the event went to the three matching flows only.
    table = TableClient.from_connection_string(azurite.connection_string, "mailboxes")
    (event,) = [e for e in table.query_entities(f"PartitionKey eq '{CLINIC}'") if e["RowKey"].startswith("outbox:")
                and e["AppointmentId"] == booked["id"]]
    assert event["FlowCount"] == 3


def test_updated_events_say_what_changed(flows: Flows) -> None:
    for trigger in ("AppointmentCreated", "AppointmentUpdated", "AppointmentDeleted"):
        assert flows.register_with(trigger, trigger).status_code == 201
    flows.wait_baseline()
    consult = next(s for s in flows.graph.get("/services").json()["value"]
                   if s["displayName"] == "Initial consultation")
    booked = flows.book(consult, [customer("Grace Hopper", notes="first visit")])
    created = json.loads(flows.receiver.wait_for(1, "AppointmentCreated", timeout=HOP_TIMEOUT)[0].body)
    assert created["ChangedFields"] == [] and created["Previous"] == EMPTY_PREVIOUS and created["IsTest"] is False

    later = datetime.fromisoformat(created["StartTime"].replace("Z", "+00:00")) + timedelta(hours=2)
    moved = flows.graph.patch(f"/appointments/{booked['id']}", json={
        "startDateTime": {"dateTime": later.astimezone(UTC).replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
        "endDateTime": {"dateTime": (later + timedelta(minutes=45)).astimezone(UTC).replace(tzinfo=None).isoformat(),
                        "timeZone": "UTC"}})
    assert moved.status_code == 204, moved.text
    rescheduled = json.loads(flows.receiver.wait_for(1, "AppointmentUpdated", timeout=HOP_TIMEOUT)[0].body)
    assert_valid(rescheduled)
    assert set(rescheduled["ChangedFields"]) == {"StartTime", "EndTime"}
    assert rescheduled["Previous"]["StartTime"] == created["StartTime"]
    assert rescheduled["Previous"]["EndTime"] == created["EndTime"]
    assert rescheduled["Previous"]["ServiceId"] == consult["id"] and rescheduled["Previous"]["Duration"] == 45

    noted = flows.graph.patch(f"/appointments/{booked['id']}", json={"serviceNotes": "bring the forms"})
    assert noted.status_code == 204
    edited = json.loads(flows.receiver.wait_for(2, "AppointmentUpdated", timeout=HOP_TIMEOUT)[1].body)
    assert edited["ChangedFields"] == ["ServiceNotes"]  # a note edit, not a reschedule
    assert edited["Previous"]["StartTime"] == rescheduled["StartTime"]

    cancel = httpx.post(f"{flows.host.url}/api/v1/bookingBusinesses/{CLINIC}/appointments/{booked['id']}/cancel",
                        headers=flows.admin, json={"reason": "ill"}, timeout=60)
    assert cancel.status_code == 204, cancel.text
    cancelled = json.loads(flows.receiver.wait_for(1, "AppointmentDeleted", timeout=HOP_TIMEOUT)[0].body)
    assert cancelled["ChangedFields"] == [] and cancelled["Previous"] == EMPTY_PREVIOUS
    assert cancelled["CancelReason"] == "ill"
