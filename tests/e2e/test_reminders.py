"""The time-relative triggers end to end: the sandbox's Graph books, moves and cancels appointments; the local
host runs the app with its reminder timer every 2 seconds; a local receiver stands in for Power Automate.

Every rule of docs/architecture.md "Time-relative triggers" runs in one test, each on its own appointment, at
once (the offsets are real: *about to start* 5 minutes before a start 5 minutes and a few seconds away):

- moved: fires at the new time, never at the old one;
- cancelled before its instant: never fires;
- the payload is the appointment as it is when it fires (notes changed after booking);
- booked inside the window (its instant already past): *about to start* fires at once, *has ended* never;
- a flow registered after the instant does not receive it;
- one delivery per (appointment, flow, instant), one idempotency key for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from testing.receiver import Receiver
from testing.storage import clean_app_storage
from tests.conftest import sandbox_settings
from tests.e2e.test_appointment_flow import CLINIC, Stack, customer

pytestmark = pytest.mark.slow

SLACK = 3.0  # seconds a delivery may come after its instant here (timer every 2 s, reconcile, queue polling)


@pytest.fixture
def reminder_stack(app_host_factory, sandbox, graph_env, azurite) -> Iterator[Stack]:
    clean_app_storage(azurite.connection_string)
    host = app_host_factory(**sandbox_settings(sandbox), REMINDER_SCHEDULE="*/2 * * * * *").start()
    with Receiver() as receiver:
        yield Stack(host, sandbox, receiver)


def register(stack: Stack, trigger: str, flow: str, offset: int) -> str:
    response = httpx.post(
        f"{stack.host.url}/api/v1/bookingBusinesses/{CLINIC}/webhooks/{trigger}", headers=stack.admin, timeout=60,
        json={"notificationURL": stack.receiver.url(flow), "resource": "Appointments",
              "changeType": [trigger.removeprefix("Appointment")], "offsetMinutes": offset})
    assert response.status_code == 201, response.text
    return response.json()["webhookId"]


def book(stack: Stack, start: datetime, minutes: int = 30, **fields: Any) -> dict:
    body = {"serviceId": stack.one_to_one["id"], "customers": [customer("Grace Hopper")],
            "startDateTime": {"dateTime": start.replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
            "endDateTime": {"dateTime": (start + timedelta(minutes=minutes)).replace(tzinfo=None).isoformat(),
                            "timeZone": "UTC"}, **fields}
    response = stack.graph.post("/appointments", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def move(stack: Stack, appointment: dict, start: datetime, minutes: int = 30) -> None:
    response = stack.graph.patch(f"/appointments/{appointment['id']}", json={
        "startDateTime": {"dateTime": start.replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
        "endDateTime": {"dateTime": (start + timedelta(minutes=minutes)).replace(tzinfo=None).isoformat(),
                        "timeZone": "UTC"}})
    assert response.status_code in (200, 204), response.text


def by_appointment(stack: Stack, flow: str) -> dict[str, list[Any]]:
    got: dict[str, list[Any]] = {}
    for request in stack.receiver.requests(flow):
        got.setdefault(json.loads(request.body)["AppointmentId"], []).append(request)
    return got


def z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def test_time_relative_triggers_follow_the_appointment(reminder_stack: Stack) -> None:
    stack = reminder_stack
    register(stack, "AppointmentStarting", "starting", 5)
    register(stack, "AppointmentEnded", "ended", 0)
    stack.wait_baseline()
    # So that "inside"'s instant, a second before now in whole seconds, is after the flows' registration: with one
    # second only, a registration at x.9 s and a quick baseline made the instant earlier than the flow (flaky).
    time.sleep(2)
    now = datetime.now(UTC).replace(microsecond=0)
    soon = now + timedelta(minutes=5)  # an appointment starting then is due now for "5 minutes before"
    moved = book(stack, soon + timedelta(seconds=5))
    cancelled = book(stack, soon + timedelta(seconds=5))
    edited = book(stack, soon + timedelta(seconds=6), serviceNotes="first notes")
    inside = book(stack, soon - timedelta(seconds=1))  # due a second ago, after the flow was registered: at once
    ending = book(stack, now - timedelta(minutes=20) + timedelta(seconds=5), minutes=20, serviceNotes="ends soon")
    ended_inside = book(stack, now - timedelta(minutes=40), minutes=30)  # entered after it ended: never
    time.sleep(1)  # the reconcile schedules them first
    move(stack, moved, soon + timedelta(seconds=9))
    assert stack.graph.post(f"/appointments/{cancelled['id']}/cancel",
                            json={"cancellationMessage": "ill"}).status_code == 204
    assert stack.graph.patch(f"/appointments/{edited['id']}", json={"serviceNotes": "second notes"}).status_code \
        in (200, 204)
    late_flow = register(stack, "AppointmentStarting", "late", 5)  # after inside's instant, before the others'

    stack.receiver.wait_for(3, "starting", timeout=40)  # moved, edited, inside
    stack.receiver.wait_for(1, "ended", timeout=10)
    time.sleep(2.5)  # anything more (a second delivery, the old time) would come by now
    starting, ended, late = (by_appointment(stack, f) for f in ("starting", "ended", "late"))

    assert set(starting) == {moved["id"], edited["id"], inside["id"]}, starting.keys()
    assert set(ended) == {ending["id"]}  # not ended_inside
    assert set(late) == {moved["id"], edited["id"]}  # inside was due before the flow existed
    assert cancelled["id"] not in starting and ended_inside["id"] not in ended
    for flow_requests in (starting, ended, late):
        for requests in flow_requests.values():
            assert len(requests) == 1  # one delivery per (appointment, flow, instant)
    keys = {r.headers["idempotency-key"] for got in (starting, late) for rs in got.values() for r in rs}
    assert len(keys) == 5

    moved_payload = json.loads(starting[moved["id"]][0].body)
    new_instant = soon + timedelta(seconds=9) - timedelta(minutes=5)
    assert moved_payload["ScheduledFor"] == z(new_instant)  # the new time, never the old one
    assert moved_payload["StartTime"] == z(soon + timedelta(seconds=9))
    assert starting[moved["id"]][0].at >= new_instant.timestamp()
    assert json.loads(starting[edited["id"]][0].body)["ServiceNotes"] == "second notes"  # state when it fires
    inside_payload = json.loads(starting[inside["id"]][0].body)
    assert inside_payload["ScheduledFor"] == z(now - timedelta(seconds=1))  # the nominal instant, though late
    ended_payload = json.loads(ended[ending["id"]][0].body)
    assert ended_payload["ScheduledFor"] == z(now + timedelta(seconds=5))
    assert ended_payload["ServiceNotes"] == "ends soon"
    headers = starting[moved["id"]][0].headers
    assert headers["x-bookings-trigger"] == "AppointmentStarting" and late_flow
