"""From a change in Bookings to the flow, through every real part: the sandbox's Graph changes an
appointment and notifies; the local host runs the app (notification endpoint, reconcile worker,
delivery worker); a local receiver stands in for Power Automate.

Slow (seconds per hop: queue polling), so marked; CI runs them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from testing.receiver import SECRET, Receiver
from tests.appointment_data.conftest import assert_valid

pytestmark = pytest.mark.slow

CLINIC = "clinic@contoso.test"
TRIGGERS = ("AppointmentCreated", "AppointmentUpdated", "AppointmentDeleted")
HOP_TIMEOUT = 30.0


class Stack:
    def __init__(self, host: Any, sandbox: Any, receiver: Receiver) -> None:
        self.host, self.sandbox, self.receiver = host, sandbox, receiver
        self.admin = {"Authorization": f"Bearer {sandbox.user_token('admin@contoso.test')}"}
        self.graph = httpx.Client(base_url=f"{sandbox.graph_url}/solutions/bookingBusinesses/{CLINIC}",
                                  headers=sandbox.graph_headers(), timeout=30)
        services = self.graph.get("/services").json()["value"]
        self.one_to_one = next(s for s in services if s.get("maximumAttendeesCount", 1) == 1)
        self.group = next(s for s in services if s.get("maximumAttendeesCount", 1) > 1)

    def register(self, trigger: str, flow: str | None = None) -> str:
        response = httpx.post(
            f"{self.host.url}/api/v1/bookingBusinesses/{CLINIC}/webhooks/{trigger}", headers=self.admin, timeout=60,
            json={"notificationURL": self.receiver.url(flow or trigger), "resource": "Appointments",
                  "changeType": trigger.removeprefix("Appointment")})
        assert response.status_code == 201, response.text
        return response.json()["webhookId"]

    def book(self, service: dict, customers: list[dict], days: int = 2, **fields: Any) -> dict:
        start = datetime.now(UTC).replace(microsecond=0, second=0) + timedelta(days=days)
        body = {"serviceId": service["id"], "customers": customers,
                "startDateTime": {"dateTime": start.replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
                "endDateTime": {"dateTime": (start + timedelta(minutes=45)).replace(tzinfo=None).isoformat(),
                                "timeZone": "UTC"}, **fields}
        response = self.graph.post("/appointments", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def payloads(self, flow: str, count: int) -> list[dict]:
        return [json.loads(r.body) for r in self.receiver.wait_for(count, flow, timeout=HOP_TIMEOUT)]

    def ready(self) -> Stack:
        """One flow per trigger registered through the API, and the mailbox's baseline taken."""
        for trigger in TRIGGERS:
            self.register(trigger)
        self.wait_baseline()
        return self

    def wait_baseline(self) -> None:
        deadline = datetime.now(UTC) + timedelta(seconds=HOP_TIMEOUT)
        while "reconcile clinic@contoso.test: reconciled" not in self.host.log:
            assert datetime.now(UTC) < deadline, "the baseline reconcile never ran:\n" + self.host.log[-3000:]
            import time

            time.sleep(0.1)


def customer(name: str, **extra: Any) -> dict:
    return {"@odata.type": "#microsoft.graph.bookingCustomerInformation", "name": name,
            "emailAddress": f"{name.split()[0].lower()}@example.test", **extra}


@pytest.fixture
def stack(live_app_host, sandbox) -> Iterator[Stack]:
    with Receiver() as receiver:
        yield Stack(live_app_host, sandbox, receiver).ready()


def test_each_trigger_fires_once_with_full_data(stack: Stack) -> None:
    booked = stack.book(stack.one_to_one, [customer("Ada Lovelace", notes="prefers mornings")],
                        serviceNotes="bring your forms", additionalInformation="parking at the back")
    created = stack.payloads("AppointmentCreated", 1)[0]
    assert_valid(created)
    assert created["CustomerName"] == "Ada Lovelace" and created["CustomerNotes"] == "prefers mornings"
    assert created["ServiceNotes"] == "bring your forms" and created["AdditionalInfo"] == "parking at the back"
    assert created["Duration"] == 45 and created["ServiceId"] == stack.one_to_one["id"]
    assert created["Customers"][0]["Name"] == "Ada Lovelace"
    # Booked through Graph, i.e. by staff: Graph's zero GUID, and the Graph id every event carries.
    assert created["SelfServiceAppointmentId"] == created["Id"] == "00000000-0000-0000-0000-000000000000"
    assert created["AppointmentId"] == booked["id"]

    stack.graph.patch(f"/appointments/{booked['id']}", json={"serviceNotes": "bring forms and ID"})
    updated = stack.payloads("AppointmentUpdated", 1)[0]
    assert updated["ServiceNotes"] == "bring forms and ID" and updated["AppointmentId"] == booked["id"]

    cancel = httpx.post(f"{stack.host.url}/api/v1/bookingBusinesses/{CLINIC}/appointments/{booked['id']}/cancel",
                        headers=stack.admin, json={"reason": "the customer is ill"})
    assert cancel.status_code == 204, cancel.text
    cancelled = stack.payloads("AppointmentDeleted", 1)[0]
    assert_valid(cancelled)
    assert cancelled["CancelReason"] == "the customer is ill" and cancelled["AppointmentId"] == booked["id"]
    assert cancelled["CancelledBy"] == "admin@contoso.test"  # the signed-in user of Cancel an appointment
    assert created["CancelledBy"] == updated["CancelledBy"] == ""
    assert cancelled["CustomerName"] == "Ada Lovelace" and cancelled["ServiceNotes"] == "bring forms and ID"

    # Exactly once each, each with its trigger and a stable idempotency key.
    import time

    time.sleep(3)
    for trigger in TRIGGERS:
        got = stack.receiver.requests(trigger)
        assert len(got) == 1, (trigger, len(got))
        assert got[0].headers["x-bookings-trigger"] == trigger and got[0].headers["idempotency-key"]
    assert SECRET not in stack.host.log


def test_group_appointment_lists_every_customer(stack: Stack) -> None:
    known = stack.graph.get("/customers").json()["value"][:3]  # Graph wants existing customers in a group
    assert len(known) == 3
    stack.book(stack.group, [customer(c["displayName"], customerId=c["id"], emailAddress=c["emailAddress"])
                             for c in known])
    created = stack.payloads("AppointmentCreated", 1)[0]
    assert_valid(created)
    assert sorted(c["Name"] for c in created["Customers"]) == sorted(c["displayName"] for c in known)
    assert created["CustomerName"] == ""  # group bookings fill Customers only, as Microsoft's connector does
    assert created["MaxAttendeesCount"] == stack.group["maximumAttendeesCount"]


def test_duplicated_notifications_still_yield_one_event(stack: Stack) -> None:
    stack.sandbox.add_fault(kind="duplicateNotifications", count=None)
    stack.book(stack.one_to_one, [customer("Barbara Liskov")])
    stack.payloads("AppointmentCreated", 1)
    import time

    time.sleep(4)
    assert len(stack.receiver.requests("AppointmentCreated")) == 1


def test_receiver_failing_then_recovering_gets_it_once(stack: Stack) -> None:
    # No Retry-After: the worker waits at least 30 s for one (tests/delivery/test_floods.py), a wait only.
    stack.receiver.plan("AppointmentCreated", 500, 503, 200)
    stack.book(stack.one_to_one, [customer("Frances Allen")])
    got = stack.receiver.wait_for(3, "AppointmentCreated", timeout=60)
    assert [r.status for r in got] == [500, 503, 200]
    assert len({r.headers["idempotency-key"] for r in got}) == 1  # same key on every attempt


def test_a_gone_flow_is_unregistered(stack: Stack) -> None:
    stack.receiver.plan("AppointmentCreated", 410)
    stack.book(stack.one_to_one, [customer("Margaret Hamilton")])
    stack.receiver.wait_for(1, "AppointmentCreated", timeout=HOP_TIMEOUT)
    deadline = datetime.now(UTC) + timedelta(seconds=HOP_TIMEOUT)
    while True:
        listing = httpx.get(f"{stack.host.url}/api/v1/bookingBusinesses/{CLINIC}/webhooks",
                            headers=stack.admin).json()
        if "AppointmentCreated" not in {w["trigger"] for w in listing["webhooks"]}:
            break
        assert datetime.now(UTC) < deadline, listing
    assert {w["trigger"] for w in listing["webhooks"]} == {"AppointmentUpdated", "AppointmentDeleted"}


@pytest.fixture
def resyncing_stack(app_host_factory, sandbox, graph_env, azurite) -> Iterator[Stack]:
    """As ``stack``, but the periodic resync runs every 5 seconds instead of hourly."""
    from testing.storage import clean_app_storage
    from tests.conftest import sandbox_settings

    clean_app_storage(azurite.connection_string)
    # Spread 0: the resync spread must be shorter than its period (5 s here).
    host = app_host_factory(**sandbox_settings(sandbox), RESYNC_SCHEDULE="*/5 * * * * *",
                            RESYNC_SPREAD_MINUTES="0").start()
    with Receiver() as receiver:
        yield Stack(host, sandbox, receiver).ready()


def test_a_notification_graph_never_sent_is_recovered_by_the_resync(resyncing_stack: Stack) -> None:
    stack = resyncing_stack
    stack.sandbox.add_fault(kind="dropNotifications", count=None)
    stack.book(stack.one_to_one, [customer("Katherine Johnson")])
    created = stack.payloads("AppointmentCreated", 1)[0]
    assert created["CustomerName"] == "Katherine Johnson"
    assert not [n for n in stack.sandbox.notifications() if n.get("delivered")]  # Graph really sent nothing
