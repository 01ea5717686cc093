"""Flows that are gone, poison messages, the dead-letter admin API and the outbox sweep.

The admin API and the 410 path use the Graph sandbox (``graph_env``): real staff lists and Entra-like tokens
for ``require_administrator``, and a real Graph subscription to be released with the mailbox's last flow.
The local receiver answers the sandbox's validation handshake (``PUBLIC_BASE_URL`` points at it), so the
subscription is created for real without running the local host.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from shared.adapters import callback_client
from shared.adapters.monitoring import telemetry_context
from shared.adapters.storage import MAILBOX_TABLE, get_store
from shared.contracts import events
from shared.endpoints import dead_letters as deadletter_api
from shared.records.dead_letters import DeadLetters, public_id
from shared.records.flows import FlowRegistry
from shared.records.outbox import outbox_row_key
from shared.services import dead_letters as dead_letter_service
from shared.services.subscriptions import Subscriptions
from shared.workers import delivery, outbox_sweep
from testing.receiver import SECRET, Reply
from testing.rows import CLINIC, add_event, add_flow
from tests.delivery.conftest import fan_out, new_message, queue_message, queued, run_worker, set_env
from tests.delivery.test_delivery import events_named


def sandbox_subscriptions(sandbox: Any) -> list[dict]:
    return list(sandbox.control("GET", "subscriptions")["value"])


def table():
    return get_store().table(MAILBOX_TABLE)


async def letters() -> list:
    return await DeadLetters(table()).list(CLINIC)


def request(method: str, route: str, params: dict[str, str], token: str | None) -> func.HttpRequest:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return func.HttpRequest(method, f"http://127.0.0.1/api/{route}", headers=headers, params={},
                            route_params={"smtp": CLINIC, **params}, body=b"")


async def list_letters(token: str | None) -> func.HttpResponse:
    return await deadletter_api.list_dead_letters(request("GET", f"v1/bookingBusinesses/{CLINIC}/deadletters", {},
                                                          token))


async def replay_one(token: str | None, letter_id: str) -> func.HttpResponse:
    route = f"v1/bookingBusinesses/{CLINIC}/deadletters/{letter_id}/replay"
    return await deadletter_api.replay_dead_letter(request("POST", route, {"id": letter_id}, token))


async def replay_all(token: str | None) -> func.HttpResponse:
    route = f"v1/bookingBusinesses/{CLINIC}/deadletters/replay"
    return await deadletter_api.replay_dead_letters(request("POST", route, {}, token))


def error_of(response: func.HttpResponse, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.get_body()
    error = json.loads(response.get_body())["error"]
    assert set(error) == {"code", "message", "remedy", "correlationId"} and error["code"] == code
    return error


@pytest.fixture
def sandboxed(env, graph_env, receiver, monkeypatch) -> dict[str, str]:
    """Graph and Entra in the sandbox; the receiver answers Graph's subscription handshake."""
    set_env(monkeypatch, PUBLIC_BASE_URL=receiver.base_url)
    return graph_env


# --- 404 / 410 ------------------------------------------------------------------------------------------------

async def test_410_unregisters_the_flow_and_releases_the_subscription_with_the_last_one(
        sandboxed, sandbox, receiver, caplog) -> None:
    caplog.set_level(logging.INFO, logger="shared")
    stays = await add_flow(receiver.url("stays"), trigger="AppointmentUpdated")
    deleted = await add_flow(receiver.url("deleted"))
    await Subscriptions().ensure(CLINIC)
    assert len(sandbox_subscriptions(sandbox)) == 1
    receiver.plan("deleted", 410)
    await fan_out(CLINIC, [await add_event("Created")], "cid")
    await run_worker(lambda: len(receiver.requests("deleted")) == 1)
    registry = FlowRegistry(table(), 5)
    assert [f.webhook_id for f in await registry.list_flows(CLINIC)] == [stays.webhook_id]
    assert await registry.flow_count(CLINIC) == 1
    assert len(sandbox_subscriptions(sandbox)) == 1  # another flow still needs it
    (gone,) = events_named(caplog, events.FLOW_UNREGISTERED)
    assert (gone.reason, gone.flowId, gone.flowCount) == ("gone", deleted.webhook_id, 1)

    receiver.plan("stays", 404)
    await fan_out(CLINIC, [await add_event("Updated")], "cid")
    await run_worker(lambda: len(receiver.requests("stays")) == 1)
    assert await registry.list_flows(CLINIC) == [] and await registry.flow_count(CLINIC) == 0
    assert sandbox_subscriptions(sandbox) == []  # the last flow took the subscription with it
    assert await Subscriptions().get(CLINIC) is None
    assert await queued() == [] and await letters() == []  # nothing to retry, nothing to replay


# --- poison ------------------------------------------------------------------------------------------------------

async def test_a_poison_message_becomes_a_dead_letter(env, receiver, caplog) -> None:
    caplog.set_level(logging.INFO, logger="shared")
    flow = await add_flow(receiver.url("p"))
    event = await add_event("Created", number=4)
    started = datetime.now(UTC) - timedelta(minutes=3)
    message = {**new_message(CLINIC, event, flow.webhook_id, "cid-poison", started), "attempt": 2}
    await delivery.handle_poison(queue_message(message, dequeue_count=5))
    (letter,) = await letters()
    assert (letter.reason, letter.last_error_code, letter.last_status) == ("poison", "PoisonMessage", 0)
    assert (letter.trigger, letter.appointment_id, letter.attempts) == ("AppointmentCreated", "appt-4", 3)
    assert abs((letter.first_attempt_at - started).total_seconds()) < 1 and "cid-poison" in letter.last_error
    (dead,) = events_named(caplog, events.DELIVERY_DEAD_LETTERED)
    assert dead.errorCode == "PoisonMessage" and dead.flowId == flow.webhook_id
    (poisoned,) = events_named(caplog, events.QUEUE_MESSAGE_POISONED)  # counted by the poisoned-messages alert
    assert (poisoned.queue, poisoned.attempt, poisoned.willRetry, poisoned.reason) == \
        ("deliveries-poison", 3, "false", "deadLetter")


async def test_a_worker_that_keeps_failing_ends_in_poison_then_dead_letter(env, receiver) -> None:
    """What the runtime does after maxDequeueCount: the message that made ``deliver`` raise (here a
    corrupt payload) is handed to ``handle_poison``."""
    flow = await add_flow(receiver.url("corrupt"))
    event = await add_event()
    await table().update_entity({"PartitionKey": CLINIC, "RowKey": outbox_row_key(event), "Payload0": "{broken"})
    message = queue_message(new_message(CLINIC, event, flow.webhook_id, "c"))
    with pytest.raises(ValueError):
        await delivery.deliver(message)
    await delivery.handle_poison(message)
    (letter,) = await letters()
    assert letter.reason == "poison" and receiver.requests("corrupt") == []


# --- the admin API -----------------------------------------------------------------------------------------

async def _two_dead_letters(receiver) -> tuple[Any, list[str]]:
    flow = await add_flow(receiver.url("strict"))
    receiver.plan("strict", 400, Reply(403, body="forbidden: " + receiver.url("strict")))
    events_ = [await add_event(number=1), await add_event(number=2)]
    await fan_out(CLINIC, events_, "cid")
    await run_worker(lambda: len(receiver.requests("strict")) == 2)
    assert len(await letters()) == 2
    return flow, events_


async def test_admins_list_dead_letters_without_callback_urls(sandboxed, sandbox, receiver) -> None:
    flow, events_ = await _two_dead_letters(receiver)
    response = await list_letters(sandbox.user_token("admin@contoso.test"))
    assert response.status_code == 200
    text = response.get_body().decode()
    assert SECRET not in text and f":{receiver.port}" not in text and "/flows/" not in text
    body = json.loads(text)
    assert body["businessSmtp"] == CLINIC
    listed = body["deadLetters"]
    assert {d["eventId"] for d in listed} == set(events_)
    assert {d["id"] for d in listed} == {public_id(e, flow.webhook_id) for e in events_}
    assert {d["lastStatus"] for d in listed} == {400, 403}
    assert all(d["flowRegistered"] and d["trigger"] == "AppointmentCreated" and d["attempts"] == 1 for d in listed)


@pytest.mark.parametrize("upn", ["viewer@contoso.test", "scheduler@contoso.test", "member@contoso.test",
                                 "outsider@contoso.test"])
async def test_only_administrators_may_see_or_replay(sandboxed, sandbox, receiver, upn) -> None:
    await _two_dead_letters(receiver)
    token = sandbox.user_token(upn)
    error_of(await list_letters(token), 403, "NotBookingsAdministrator")
    error_of(await replay_all(token), 403, "NotBookingsAdministrator")
    letter_id = (await letters())[0].id
    error_of(await replay_one(token, letter_id), 403, "NotBookingsAdministrator")
    error_of(await list_letters(None), 401, "Unauthenticated")
    assert len(await letters()) == 2 and await queued() == []


async def test_replay_one_delivers_it_and_removes_the_dead_letter(sandboxed, sandbox, receiver, caplog) -> None:
    caplog.set_level(logging.INFO, logger="shared")
    flow, events_ = await _two_dead_letters(receiver)
    first = public_id(events_[0], flow.webhook_id)
    response = await replay_one(sandbox.user_token("admin@contoso.test"), first)
    assert response.status_code == 202
    assert json.loads(response.get_body())["replayed"] == [first]
    (message,) = await queued()
    assert (message["eventId"], message["flowId"], message["attempt"]) == (events_[0], flow.webhook_id, 0)
    assert datetime.fromisoformat(message["firstAttemptAt"]) > datetime.now(UTC) - timedelta(seconds=30)
    assert [d.event_id for d in await letters()] == [events_[1]]
    await run_worker(lambda: len(receiver.requests("strict")) == 3)
    assert receiver.requests("strict")[-1].status == 200  # the plan is used up: the flow accepts now
    assert json.loads(receiver.requests("strict")[-1].body)["AppointmentId"] == "appt-1"
    (replayed,) = events_named(caplog, events.DEAD_LETTERS_REPLAYED)
    assert replayed.replayedCount == 1 and replayed.flowId == flow.webhook_id
    error_of(await replay_one(sandbox.user_token("admin@contoso.test"), first), 404, "DeadLetterNotFound")
    error_of(await replay_one(sandbox.user_token("admin@contoso.test"), "not-an-id"), 400, "InvalidRequest")


async def test_replay_all_delivers_every_one(sandboxed, sandbox, receiver) -> None:
    flow, events_ = await _two_dead_letters(receiver)
    response = await replay_all(sandbox.user_token("admin@contoso.test"))
    assert response.status_code == 202
    body = json.loads(response.get_body())
    assert sorted(body["replayed"]) == sorted(public_id(e, flow.webhook_id) for e in events_)
    assert body["discarded"] == [] and await letters() == []
    await run_worker(lambda: len(receiver.requests("strict")) == 4)
    delivered = receiver.requests("strict")[2:]
    assert all(r.status == 200 for r in delivered)
    assert {r.headers["x-bookings-event-id"] for r in delivered} == set(events_)


async def test_replay_of_a_removed_flow_discards_it(sandboxed, sandbox, receiver) -> None:
    flow, events_ = await _two_dead_letters(receiver)
    await FlowRegistry(table(), 5).unregister(CLINIC, flow.webhook_id)
    token = sandbox.user_token("admin@contoso.test")
    listed = json.loads((await list_letters(token)).get_body())["deadLetters"]
    assert [d["flowRegistered"] for d in listed] == [False, False]
    error = error_of(await replay_one(token, public_id(events_[0], flow.webhook_id)), 410, "DeadLetterNotReplayable")
    assert "removed" in error["message"]
    body = json.loads((await replay_all(token)).get_body())
    assert body["replayed"] == [] and body["discarded"] == [{"id": public_id(events_[1], flow.webhook_id),
                                                             "reason": "flowRemoved"}]
    assert await letters() == [] and await queued() == []


# --- the outbox sweep -------------------------------------------------------------------------------------

async def test_sweep_fans_out_pending_rows_left_by_a_crash(env, receiver) -> None:
    await add_flow(receiver.url("s"))
    stale = await add_event(number=1)  # committed, never fanned out
    with telemetry_context(correlationId="cid-sweep"):  # the timer's run
        report = await outbox_sweep.sweep_outbox()  # younger than a minute: left to the reconcile
        assert report.fanned_out == 0 and await queued() == []
        report = await outbox_sweep.sweep_outbox(older_than=timedelta(0))
    assert (report.fanned_out, report.messages) == (1, 1)
    (message,) = await queued()
    assert message["eventId"] == stale and message["correlationId"] == "cid-sweep"
    assert (await outbox_sweep.sweep_outbox(older_than=timedelta(0))).fanned_out == 0


async def test_sweep_prunes_settled_rows_but_keeps_those_with_dead_letters(env, receiver) -> None:
    flow = await add_flow(receiver.url("prune"))
    receiver.plan("prune", 200, 400)
    old_ok, old_dead, recent = (await add_event(number=1), await add_event(number=2), await add_event(number=3))
    await fan_out(CLINIC, [old_ok, old_dead, recent], "cid")
    await run_worker(lambda: len(receiver.requests("prune")) == 3)
    assert [d.event_id for d in await letters()] == [old_dead]
    long_ago = datetime.now(UTC) - outbox_sweep.retention() - timedelta(minutes=5)
    for event in (old_ok, old_dead):
        await table().update_entity({"PartitionKey": CLINIC, "RowKey": outbox_row_key(event),
                                     "LastEnqueuedAt": long_ago})
    report = await outbox_sweep.sweep_outbox()
    assert (report.pruned, report.kept_for_dead_letters) == (1, 1)
    remaining = {row["EventId"] async for row in table().query_entities(
        "PartitionKey eq @pk and RowKey ge 'outbox:' and RowKey lt 'outbox;'", parameters={"pk": CLINIC})}
    assert remaining == {old_dead, recent}
    # The kept event can still be replayed (its payload is there), which restarts its retention.
    letter = (await letters())[0]
    outcome = await dead_letter_service.replay(letter, FlowRegistry(table(), 5), DeadLetters(table()))
    assert outcome == "replayed" and (await outbox_sweep.sweep_outbox()).pruned == 0
    assert flow.webhook_id in json.dumps(await queued())


async def test_a_dead_letter_past_its_retention_goes_and_its_event_with_it(env, receiver, caplog) -> None:
    """Dead letters are kept DEAD_LETTER_RETENTION_DAYS for a replay (also a removed flow's), then deleted and
    said so; the outbox row they kept is pruned in the same sweep, when it is past its own retention."""
    caplog.set_level(logging.INFO, logger="shared")
    await add_flow(receiver.url("expire"))
    receiver.plan("expire", 400, 400)
    old, young = await add_event(number=5), await add_event(number=6)
    await fan_out(CLINIC, [old, young], "cid")
    await run_worker(lambda: len(receiver.requests("expire")) == 2)
    assert {d.event_id for d in await letters()} == {old, young}
    days = 30  # DEAD_LETTER_RETENTION_DAYS in the sample settings
    letter_key = f"deadletter:{old}:{(await letters())[0].flow_id}"
    await table().update_entity({"PartitionKey": CLINIC, "RowKey": letter_key,
                                 "LastAttemptAt": datetime.now(UTC) - timedelta(days=days, minutes=5)})
    long_ago = datetime.now(UTC) - outbox_sweep.retention() - timedelta(minutes=5)
    for event in (old, young):
        await table().update_entity({"PartitionKey": CLINIC, "RowKey": outbox_row_key(event),
                                     "LastEnqueuedAt": long_ago})
    report = await outbox_sweep.sweep_outbox()
    assert (report.dead_letters_deleted, report.pruned, report.kept_for_dead_letters) == (1, 1, 1)
    assert [d.event_id for d in await letters()] == [young]
    assert "1 dead letter(s) of clinic@contoso.test older than 30" in caplog.text


async def test_retention_never_shorter_than_the_retry_window(env, monkeypatch) -> None:
    set_env(monkeypatch, OUTBOX_RETENTION_HOURS="1", DELIVERY_RETRY_HOURS="24")
    assert outbox_sweep.retention() == timedelta(hours=25)
    set_env(monkeypatch, OUTBOX_RETENTION_HOURS="200")
    assert outbox_sweep.retention() == timedelta(hours=200)


# --- secrets -------------------------------------------------------------------------------------------------

async def test_no_callback_query_string_in_any_log_or_row(sandboxed, sandbox, receiver, monkeypatch,
                                                          caplog) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(callback_client, "REQUEST_TIMEOUT", callback_client.httpx.Timeout(0.3))
    flows = {name: await add_flow(receiver.url(name)) for name in ("a", "b", "c", "d")}
    receiver.plan("a", 500, Reply(429, {"Retry-After": "0"}), 200)
    receiver.plan("b", Reply(400, body=f"bad request to {receiver.url('b')}"))
    receiver.plan("c", Reply(200, delay=1.0), 410)
    receiver.plan("d", Reply(302, {"Location": receiver.url("elsewhere")}))
    await fan_out(CLINIC, [await add_event()], "cid")
    await run_worker(lambda: len(receiver.requests()) >= 7)
    await list_letters(sandbox.user_token("admin@contoso.test"))
    rows = [dict(row) async for row in table().query_entities("PartitionKey eq @pk", parameters={"pk": CLINIC})]
    assert any(r["RowKey"].startswith("deadletter:") for r in rows)
    assert len(caplog.records) > 20
    assert SECRET not in caplog.text
    for row in rows:
        if not row["RowKey"].startswith("flow:"):  # the flow row is where the URL must be kept
            assert SECRET not in json.dumps(row, default=str)
    assert flows["a"].webhook_id in caplog.text  # the logs do say which flow
