"""The delivery worker against Azurite and a local receiver standing in for Power Automate.

``deliver`` is driven in-process on real queue messages (``run_worker`` plays the queue runtime); the
local-host test is test_host.py.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters import callback_client
from shared.adapters.storage import MAILBOX_TABLE, get_store
from shared.contracts import events
from shared.messages.deliveries import idempotency_key
from shared.records import flow_health
from shared.records.dead_letters import DeadLetters
from shared.records.flows import FlowRegistry
from shared.records.outbox import outbox_row_key, read_payload
from shared.workers import delivery
from testing.receiver import SECRET, Reply
from testing.rows import CLINIC, ZERO_GUID, add_event, add_flow, appointment
from tests.app_insights import capture, dimensions
from tests.delivery.conftest import fan_out, new_message, queue_message, queued, run_worker, set_env


def events_named(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "microsoft.custom_event.name", None) == name]


async def dead_letters() -> list:
    return await DeadLetters(get_store().table(MAILBOX_TABLE)).list(CLINIC)


async def flow_row(webhook_id: str):
    """The flow's row once the health noted so far is written (``flow_health.record_delivery`` writes behind)."""
    await flow_health.flush_health()
    return await FlowRegistry(get_store().table(MAILBOX_TABLE), 5).get_flow(CLINIC, webhook_id)


# --- fan-out ------------------------------------------------------------------------------------------------

async def test_an_event_stored_by_an_earlier_version_goes_out_in_todays_contract(env, receiver) -> None:
    """Events queued before an upgrade had no AppointmentId and the Graph id as SelfServiceAppointmentId, and
    none of the fields added since (ChangedFields, Previous, IsTest): they go out empty, as on Created events."""
    await add_flow(receiver.url("old"))
    old = {"Id": "appt-8", "SelfServiceAppointmentId": "appt-8", "CustomerName": "Aiko 山田"}
    event = await add_event(number=8, payload=old)
    await fan_out(CLINIC, [event], "cid")
    await run_worker(lambda: len(receiver.requests("old")) == 1)
    (request,) = receiver.requests("old")
    assert json.loads(request.body) == {
        "Id": ZERO_GUID, "SelfServiceAppointmentId": ZERO_GUID, "AppointmentId": "appt-8", "CustomerName": "Aiko 山田",
        "ChangedFields": [], "IsTest": False, "CancelledBy": "",
        "Previous": {"Duration": 0, "EndTime": "", "ServiceId": "", "ServiceName": "", "StaffMembers": [],
                     "StartTime": ""}}
    assert "x-bookings-test" not in request.headers


async def test_fan_out_sends_one_message_per_flow_of_the_trigger_and_only_once(env, receiver) -> None:
    created_a = await add_flow(receiver.url("a"))
    created_b = await add_flow(receiver.url("b"))
    await add_flow(receiver.url("c"), trigger="AppointmentUpdated")
    event = await add_event("Created")
    assert await fan_out(CLINIC, [event], "cid-1") == 2
    messages = await queued()
    assert sorted(m["flowId"] for m in messages) == sorted([created_a.webhook_id, created_b.webhook_id])
    for message in messages:
        assert message["eventId"] == event and message["mailbox"] == CLINIC and message["attempt"] == 0
        assert message["correlationId"] == "cid-1" and message["version"] == 2
        assert datetime.fromisoformat(message["firstAttemptAt"]) > datetime.now(UTC) - timedelta(minutes=1)
        assert "callback" not in json.dumps(message).lower() and SECRET not in json.dumps(message)
    row = await get_store().table(MAILBOX_TABLE).get_entity(CLINIC, outbox_row_key(event))
    # The event travels in the message, as its row holds it: the delivery reads no outbox row.
    assert messages[0]["event"] == {"trigger": "AppointmentCreated", "changeType": "Created",
                                    "appointmentId": row["AppointmentId"], "detectedAt": row["DetectedAt"].isoformat(),
                                    "isTest": False, "payload": read_payload(row)}
    assert row["State"] == "fannedOut" and row["FlowCount"] == 2
    # A second fan-out of the same event (reconcile retried, sweep raced) sends nothing more.
    assert await fan_out(CLINIC, [event], "cid-2") == 0
    assert len(await queued()) == 2


async def test_fan_out_of_an_event_no_flow_wants_marks_it_done(env, receiver) -> None:
    await add_flow(receiver.url("a"), trigger="AppointmentDeleted")
    event = await add_event("Updated")
    assert await fan_out(CLINIC, [event, "no-such-event"], "cid") == 0
    row = await get_store().table(MAILBOX_TABLE).get_entity(CLINIC, outbox_row_key(event))
    assert row["State"] == "fannedOut" and await queued() == []


# --- outcomes -----------------------------------------------------------------------------------------------

async def test_2xx_delivers_the_payload_with_its_headers_and_counts_health(env, receiver, caplog) -> None:
    caplog.set_level(logging.INFO, logger="shared")
    flow = await add_flow(receiver.url("ok"))
    event = await add_event("Created", number=7)
    with capture() as captured:
        await fan_out(CLINIC, [event], "cid")
        await run_worker(lambda: len(receiver.requests("ok")) == 1)
    (request,) = receiver.requests("ok")
    assert json.loads(request.body) == appointment(7)  # Japanese text survives as UTF-8 JSON
    assert request.headers["content-type"].startswith("application/json")
    assert request.headers["idempotency-key"] == idempotency_key(event, flow.webhook_id)
    assert request.headers["x-bookings-trigger"] == "AppointmentCreated"
    assert request.headers["x-bookings-event-id"] == event
    assert request.headers["x-bookings-webhook-id"] == flow.webhook_id  # what names the flow to its deliveries
    health = await flow_row(flow.webhook_id)
    assert (health.delivered_count, health.failed_count, health.consecutive_failures) == (1, 0, 0)
    assert health.last_delivery_status == "200" and health.last_delivery is not None
    # A success is counted in the flow's series of the delivery_succeeded_ms metric, not a customEvents row.
    (succeeded,) = captured.rows()["customMetrics"]
    assert (succeeded["name"], succeeded["valueCount"]) == (events.DELIVERY_SUCCEEDED_MS, 1)
    assert dimensions(succeeded) == {"mailbox": CLINIC, "flowId": flow.webhook_id, "trigger": "AppointmentCreated"}
    assert 0 <= succeeded["value"] < 60_000
    assert captured.rows()["customEvents"] == []
    assert await queued() == [] and await dead_letters() == []


async def test_500_500_then_200_is_one_success_with_one_idempotency_key(env, receiver, caplog) -> None:
    caplog.set_level(logging.INFO, logger="shared")
    flow = await add_flow(receiver.url("flaky"))
    receiver.plan("flaky", 500, 503, 200)
    event = await add_event()
    with capture() as captured:
        await fan_out(CLINIC, [event], "cid")
        await run_worker(lambda: any(r.status == 200 for r in receiver.requests("flaky")))
    requests = receiver.requests("flaky")
    assert [r.status for r in requests] == [500, 503, 200]
    assert {r.headers["idempotency-key"] for r in requests} == {idempotency_key(event, flow.webhook_id)}
    assert len({r.body for r in requests}) == 1
    failed = events_named(caplog, events.DELIVERY_FAILED)
    assert [(e.attempt, e.status, e.willRetry, e.errorCode) for e in failed] == [
        (1, 500, "true", "ServerError"), (2, 503, "true", "ServerError")]
    assert [r["valueCount"] for r in captured.rows()["customMetrics"]] == [1]
    health = await flow_row(flow.webhook_id)
    assert (health.delivered_count, health.failed_count, health.consecutive_failures) == (1, 2, 0)
    assert await dead_letters() == []


async def test_failures_count_consecutively_until_a_success(env, receiver) -> None:
    flow = await add_flow(receiver.url("down"))
    receiver.plan("down", 502, 429, 422)
    await fan_out(CLINIC, [await add_event()], "cid")
    await run_worker(lambda: len(receiver.requests("down")) == 3)
    health = await flow_row(flow.webhook_id)
    assert (health.failed_count, health.consecutive_failures, health.last_delivery_status) == (3, 3, "422")
    assert health.delivered_count == 0


@pytest.mark.slow
async def test_retry_after_is_honoured(env, receiver, monkeypatch) -> None:
    monkeypatch.setattr(delivery, "BACKOFF_BASE_SECONDS", 100.0)  # would wait far longer without Retry-After
    await add_flow(receiver.url("busy"))
    receiver.plan("busy", Reply(429, {"Retry-After": "2"}), 200)
    event = await add_event()
    await delivery.deliver(queue_message(new_message(CLINIC, event, (await _only_flow()).webhook_id, "c")))
    assert await queued() == []  # the retry is on the queue, invisible for Retry-After's 2 s
    await run_worker(lambda: len(receiver.requests("busy")) == 2, timeout=6)
    first, second = receiver.requests("busy")
    assert second.at - first.at >= 1.9
    assert second.status == 200


async def _only_flow():
    (flow,) = await FlowRegistry(get_store().table(MAILBOX_TABLE), 5).list_flows(CLINIC)
    return flow


async def test_retry_after_beyond_the_window_ends_in_one_last_attempt_at_the_deadline(env, receiver,
                                                                                      monkeypatch) -> None:
    set_env(monkeypatch, DELIVERY_RETRY_HOURS="1")
    flow = await add_flow(receiver.url("slow"))
    receiver.plan("slow", Reply(503, {"Retry-After": "7200"}))
    event = await add_event()
    started = datetime.now(UTC) - timedelta(minutes=59, seconds=50)  # 10 s left of the window
    await delivery.deliver(queue_message(new_message(CLINIC, event, flow.webhook_id, "c", started)))
    messages = get_store().queue("deliveries").receive_messages(visibility_timeout=1)
    assert [m async for m in messages] == []  # not visible yet: delayed, but by at most the 10 s left
    # The queue says when it becomes visible: within the window, not Retry-After's two hours.
    props = await get_store().queue("deliveries").get_queue_properties()
    assert props.approximate_message_count == 1


async def test_400_is_a_dead_letter_at_once(env, receiver, caplog) -> None:
    caplog.set_level(logging.INFO, logger="shared")
    flow = await add_flow(receiver.url("picky"))
    receiver.plan("picky", Reply(400, body='{"error":{"code":"InvalidTemplate","message":"bad schema"}}'))
    event = await add_event("Created", number=3)
    await fan_out(CLINIC, [event], "cid-400")
    await run_worker(lambda: len(receiver.requests("picky")) == 1)
    assert await queued() == []  # no retry
    (letter,) = await dead_letters()
    assert (letter.event_id, letter.flow_id, letter.reason, letter.last_status) == (event, flow.webhook_id,
                                                                                     "rejected", 400)
    assert letter.trigger == "AppointmentCreated" and letter.change_type == "Created"
    assert letter.appointment_id == "appt-3" and letter.attempts == 1 and letter.correlation_id == "cid-400"
    assert "InvalidTemplate" in letter.last_error and letter.last_error_code == "Rejected"
    (dead,) = events_named(caplog, events.DELIVERY_DEAD_LETTERED)
    assert (dead.status, dead.errorCode, dead.eventId) == (400, "Rejected", event)
    health = await flow_row(flow.webhook_id)
    assert (health.failed_count, health.last_delivery_status) == (1, "400")


async def test_a_redirect_is_not_followed(env, receiver) -> None:
    await add_flow(receiver.url("moved"))
    receiver.plan("moved", Reply(302, {"Location": receiver.url("elsewhere")}))
    await fan_out(CLINIC, [await add_event()], "cid")
    await run_worker(lambda: len(receiver.requests("moved")) == 1)
    assert receiver.requests("elsewhere") == []
    (letter,) = await dead_letters()
    assert (letter.reason, letter.last_status) == ("redirected", 302)


async def test_retry_window_exhausted_becomes_a_dead_letter(env, receiver, monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO, logger="shared")
    set_env(monkeypatch, DELIVERY_RETRY_HOURS="0.0003")  # about a second
    flow = await add_flow(receiver.url("broken"))
    receiver.plan("broken", *([500] * 1000))
    event = await add_event()
    await fan_out(CLINIC, [event], "cid")
    started = time.monotonic()
    runs = await run_worker(lambda: bool(events_named(caplog, events.DELIVERY_DEAD_LETTERED)), timeout=10)
    assert time.monotonic() - started >= 0.9 and runs >= 2
    (letter,) = await dead_letters()
    assert (letter.reason, letter.last_status, letter.flow_id) == ("retryWindowExhausted", 500, flow.webhook_id)
    assert letter.attempts == runs == len(receiver.requests("broken"))
    assert await queued() == []
    assert events_named(caplog, events.DELIVERY_FAILED)[-1].willRetry == "false"


async def test_timeouts_and_refused_connections_are_retried(env, receiver, monkeypatch) -> None:
    monkeypatch.setattr(callback_client, "REQUEST_TIMEOUT", callback_client.httpx.Timeout(0.3))
    flow = await add_flow(receiver.url("sleepy"))
    receiver.plan("sleepy", Reply(200, delay=1.0))
    event = await add_event()
    await delivery.deliver(queue_message(new_message(CLINIC, event, flow.webhook_id, "c")))
    (retry,) = await queued()
    assert retry["attempt"] == 1
    assert (await flow_row(flow.webhook_id)).last_delivery_status == "Timeout"
    # Nothing listens on this port: a connection error, also retried.
    closed = await add_flow(f"http://127.0.0.1:{_closed_port()}/flows/x?sig={SECRET}")
    await delivery.deliver(queue_message(new_message(CLINIC, event, closed.webhook_id, "c")))
    assert (await flow_row(closed.webhook_id)).last_delivery_status == "ConnectionFailed"
    assert len(await queued()) == 2 and await dead_letters() == []


def _closed_port() -> int:
    from devhost.processes import free_port

    return free_port()


async def test_message_for_a_removed_flow_is_done(env, receiver, caplog) -> None:
    caplog.set_level(logging.INFO, logger="shared")
    flow = await add_flow(receiver.url("gone-already"))
    event = await add_event()
    await FlowRegistry(get_store().table(MAILBOX_TABLE), 5).unregister(CLINIC, flow.webhook_id)
    await delivery.deliver(queue_message(new_message(CLINIC, event, flow.webhook_id, "c")))
    assert receiver.requests("gone-already") == [] and await queued() == [] and await dead_letters() == []
    assert "was removed" in caplog.text


async def test_malformed_message_is_logged_not_retried(env, caplog) -> None:
    await delivery.deliver(queue_message(b"{not json"))
    await delivery.deliver(queue_message({"mailbox": CLINIC, "eventId": "e"}))
    assert caplog.text.count("dropped a malformed delivery message") == 2


# --- SSRF ---------------------------------------------------------------------------------------------------

async def test_callback_resolving_to_loopback_is_refused_at_connect_time(env, receiver, monkeypatch) -> None:
    # On the allowlist and https, as registration requires; but it resolves to 127.0.0.1 (DNS rebinding).
    set_env(monkeypatch, ALLOW_LOOPBACK_CALLBACKS="false", CALLBACK_HOST_ALLOWLIST="localhost")
    flow = await add_flow(receiver.url("rebound", host="localhost", scheme="https"))
    event = await add_event()
    await delivery.deliver(queue_message(new_message(CLINIC, event, flow.webhook_id, "c")))
    assert receiver.requests("rebound") == []
    (letter,) = await dead_letters()
    assert letter.reason == "addressNotAllowed" and "loopback" in letter.last_error


async def test_callback_reaching_azures_platform_address_is_refused_at_connect_time(env, monkeypatch) -> None:
    # 168.63.129.16 is public by its prefix, so only naming it keeps it out. The guard judges the address a
    # connection would go to, whatever the name: here an allowlist entry that is the address itself (what a
    # host name resolving to it gives the guard too). No packet leaves: the check comes before connecting.
    set_env(monkeypatch, ALLOW_LOOPBACK_CALLBACKS="false", CALLBACK_HOST_ALLOWLIST="168.63.129.16")
    flow = await add_flow("https://168.63.129.16/machine?comp=goalstate")
    started = time.monotonic()
    await delivery.deliver(queue_message(new_message(CLINIC, await add_event(), flow.webhook_id, "c")))
    assert time.monotonic() - started < 5  # refused, not a connection attempt timing out
    (letter,) = await dead_letters()
    assert letter.reason == "addressNotAllowed" and "Azure's platform address" in letter.last_error
    assert letter.attempts == 1


async def test_callback_off_a_tightened_allowlist_is_refused(env, receiver, monkeypatch) -> None:
    flow = await add_flow(receiver.url("old"))
    set_env(monkeypatch, ALLOW_LOOPBACK_CALLBACKS="false")
    await delivery.deliver(queue_message(new_message(CLINIC, await add_event(), flow.webhook_id, "c")))
    # Only this flow's requests: a slow request of an earlier test may still land on the shared receiver.
    assert receiver.requests("old") == []
    (letter,) = await dead_letters()
    assert letter.reason == "addressNotAllowed"


async def test_cookies_are_never_sent_back(env, receiver) -> None:
    await add_flow(receiver.url("cookie"))
    receiver.plan("cookie", Reply(200, {"Set-Cookie": "session=abc; Path=/"}), 200)
    await fan_out(CLINIC, [await add_event(number=1), await add_event(number=2)], "cid")
    await run_worker(lambda: len(receiver.requests("cookie")) == 2)
    assert all("cookie" not in r.headers for r in receiver.requests("cookie"))


async def test_health_counts_stay_exact_under_concurrent_deliveries_to_one_flow(env, receiver) -> None:
    import asyncio

    flow = await add_flow(receiver.url("busy-flow"))
    receiver.plan("busy-flow", *([200] * 10 + [500] * 10))
    event_ids = [await add_event(number=n) for n in range(20)]
    await asyncio.gather(*(delivery.deliver(queue_message(new_message(CLINIC, e, flow.webhook_id, "c")))
                           for e in event_ids))
    health = await flow_row(flow.webhook_id)
    assert (health.delivered_count, health.failed_count) == (10, 10)
