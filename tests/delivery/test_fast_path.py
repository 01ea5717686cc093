"""What a delivery reads and writes, against Azurite and the local receiver: events carried in the message,
flows read once per ``FLOW_CACHE_SECONDS``, health written behind in coalesced merges, and fan-out's first
attempts (``attempt_now``) with the queued message as the safety net."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from shared.adapters.storage import DELIVERIES_QUEUE, MAILBOX_TABLE, get_store
from shared.messages import deliveries
from shared.messages.deliveries import idempotency_key
from shared.records import flow_health, flows
from shared.records.dead_letters import DeadLetters
from shared.records.flow_health import _Outcomes
from shared.records.flows import FlowRegistry, flow_row_key
from shared.records.outbox import outbox_row_key
from shared.workers import delivery
from shared.workers import fan_out as fan_out_module
from testing.receiver import SECRET, Reply
from testing.rows import CLINIC, add_event, add_flow, appointment
from tests.delivery.conftest import fan_out, queue_message, queued, run_worker


async def queue_length() -> int:
    """Messages on the deliveries queue, invisible ones included."""
    return (await get_store().queue(DELIVERIES_QUEUE).get_queue_properties()).approximate_message_count


async def health_of(webhook_id: str) -> flows.Flow:
    await flow_health.flush_health()
    flow = await FlowRegistry(get_store().table(MAILBOX_TABLE), 5).get_flow(CLINIC, webhook_id)
    assert flow is not None
    return flow


# --- the event travels in the message ----------------------------------------------------------------------

async def test_a_carried_event_is_delivered_without_its_outbox_row(env, receiver) -> None:
    flow = await add_flow(receiver.url("carried"))
    event = await add_event(number=3)
    await fan_out(CLINIC, [event], "cid")
    # Gone from the outbox (as if pruned): the message alone must be enough.
    await get_store().table(MAILBOX_TABLE).delete_entity(CLINIC, outbox_row_key(event))
    await run_worker(lambda: len(receiver.requests("carried")) == 1)
    (request,) = receiver.requests("carried")
    assert json.loads(request.body) == appointment(3)
    assert request.headers["idempotency-key"] == idempotency_key(event, flow.webhook_id)


async def test_an_event_too_large_for_a_message_is_read_from_its_row(env, receiver) -> None:
    await add_flow(receiver.url("large"))
    payload = {**appointment(4), "CustomerNotes": "長" * 40_000}  # 120 KB of UTF-8: no queue message holds it
    event = await add_event(number=4, payload=payload)
    await fan_out(CLINIC, [event], "cid")
    (message,) = await queued()
    assert "event" not in message and len(json.dumps(message)) < 1_000
    await run_worker(lambda: len(receiver.requests("large")) == 1)
    assert json.loads(receiver.requests("large")[0].body) == payload


async def test_a_malformed_carried_event_falls_back_to_the_row(env, receiver) -> None:
    flow = await add_flow(receiver.url("fallback"))
    event = await add_event(number=5)
    message = {**deliveries.new_message(CLINIC, event, flow.webhook_id), "event": {"trigger": 7}}
    await delivery.deliver(queue_message(message))
    assert json.loads(receiver.requests("fallback")[0].body) == appointment(5)


# --- flows read once per FLOW_CACHE_SECONDS ------------------------------------------------------------------

async def test_a_flow_removed_elsewhere_is_not_retried_on_a_stale_read(env, receiver, caplog) -> None:
    """Another instance removed the flow after this one read it: the failed attempt reads the row again and
    neither retries nor dead-letters."""
    flow = await add_flow(receiver.url("removed-elsewhere"))
    receiver.plan("removed-elsewhere", 200, 500)
    first, second = await add_event(number=1), await add_event(number=2)
    await delivery.deliver(queue_message(deliveries.new_message(CLINIC, first, flow.webhook_id)))
    await get_store().table(MAILBOX_TABLE).delete_entity(CLINIC, flow_row_key(flow.webhook_id))  # not via us
    await delivery.deliver(queue_message(deliveries.new_message(CLINIC, second, flow.webhook_id)))
    assert [r.status for r in receiver.requests("removed-elsewhere")] == [200, 500]  # the cached read
    assert await queued() == [] and await DeadLetters(get_store().table(MAILBOX_TABLE)).list(CLINIC) == []


async def test_a_flow_removed_here_is_forgotten_at_once(env, receiver) -> None:
    flow = await add_flow(receiver.url("removed-here"))
    first, second = await add_event(number=1), await add_event(number=2)
    await delivery.deliver(queue_message(deliveries.new_message(CLINIC, first, flow.webhook_id)))
    await FlowRegistry.default().unregister(CLINIC, flow.webhook_id)
    await delivery.deliver(queue_message(deliveries.new_message(CLINIC, second, flow.webhook_id)))
    assert len(receiver.requests("removed-here")) == 1


# --- health written behind ---------------------------------------------------------------------------------

def test_outcomes_keep_consecutive_failures_in_order() -> None:
    at = datetime.now(UTC)
    after_success = _Outcomes()
    for delivered in (False, False, True, False):
        after_success.add(delivered, "x", at)
    assert after_success.changes({"DeliveredCount": 5, "FailedCount": 1, "ConsecutiveFailures": 4}) == {
        "DeliveredCount": 6, "FailedCount": 4, "ConsecutiveFailures": 1, "LastDeliveryStatus": "x",
        "LastDeliveryDateTime": at}
    failures_only = _Outcomes()
    failures_only.add(False, "503", at)
    assert failures_only.changes({"ConsecutiveFailures": 2})["ConsecutiveFailures"] == 3


async def test_a_burst_to_one_flow_costs_a_few_health_writes(env, receiver, monkeypatch) -> None:
    flow = await add_flow(receiver.url("burst"))
    events = [await add_event(number=n) for n in range(30)]
    writes = []
    real = flow_health._write_health

    async def counted(*args, **kwargs):
        writes.append(args[1])
        await real(*args, **kwargs)

    monkeypatch.setattr(flow_health, "_write_health", counted)
    await asyncio.gather(*(delivery.deliver(queue_message(deliveries.new_message(CLINIC, e, flow.webhook_id)))
                           for e in events))
    health = await health_of(flow.webhook_id)
    assert health.delivered_count == 30 and health.last_delivery_status == "200"
    assert 1 <= len(writes) <= 3


async def test_health_from_two_instances_adds_up(env, receiver) -> None:
    """Two processes' writers race on one row: the ETag retries keep both counts."""
    flow = await add_flow(receiver.url("two"))
    mine, theirs = _Outcomes(), _Outcomes()
    for _ in range(3):
        mine.add(True, "200", datetime.now(UTC))
    theirs.add(False, "500", datetime.now(UTC))
    await asyncio.gather(flow_health._write_health(CLINIC, flow.row_key, mine),
                         flow_health._write_health(CLINIC, flow.row_key, theirs))
    health = await health_of(flow.webhook_id)
    assert (health.delivered_count, health.failed_count) == (3, 1)


# --- first attempts straight from fan-out -------------------------------------------------------------------

async def test_fan_out_attempts_at_once_and_deletes_the_safety_net(env, receiver) -> None:
    flow = await add_flow(receiver.url("now"))
    event = await add_event(number=8)
    assert await fan_out_module.fan_out(CLINIC, [event], attempt_now=delivery.attempt) == 1
    (request,) = receiver.requests("now")  # no queue runtime involved
    assert request.headers["idempotency-key"] == idempotency_key(event, flow.webhook_id)
    assert await queue_length() == 0
    assert (await health_of(flow.webhook_id)).delivered_count == 1


async def test_a_failed_first_attempt_leaves_its_retry_not_its_safety_net(env, receiver) -> None:
    await add_flow(receiver.url("later"))
    receiver.plan("later", 503, 200)
    await fan_out_module.fan_out(CLINIC, [await add_event()], attempt_now=delivery.attempt)
    (retry,) = await queued()
    assert retry["attempt"] == 1 and await queue_length() == 1
    await run_worker(lambda: len(receiver.requests("later")) == 2)
    assert [r.status for r in receiver.requests("later")] == [503, 200]


async def test_a_first_attempt_that_dies_is_delivered_by_the_queue(env, receiver, monkeypatch) -> None:
    """Fault injection: the attempt fails before any outcome (storage down, instance dying): the queued copy
    shows when its safety net ends and the queue delivers it, with the same key."""
    flow = await add_flow(receiver.url("died"))
    event = await add_event()
    monkeypatch.setattr(fan_out_module, "SAFETY_NET_SECONDS", 2)
    real = flows.flow_for_delivery

    async def storage_down(*args, **kwargs):
        raise ConnectionError("storage unreachable")

    monkeypatch.setattr(flows, "flow_for_delivery", storage_down)
    await fan_out_module.fan_out(CLINIC, [event], attempt_now=delivery.attempt)
    assert receiver.requests("died") == [] and await queue_length() == 1
    monkeypatch.setattr(flows, "flow_for_delivery", real)
    await run_worker(lambda: len(receiver.requests("died")) == 1, timeout=10)
    assert receiver.requests("died")[0].headers["idempotency-key"] == idempotency_key(event, flow.webhook_id)


async def test_a_storage_error_after_queueing_still_makes_the_first_attempt(env, receiver, monkeypatch) -> None:
    """Fault injection: storage fails while marking the row, after the message was queued invisible for the
    safety net. The attempt is made at once anyway (not a minute later), and fan-out still fails, so its
    caller's retry and the outbox sweep see the row ``pending`` as before."""
    flow = await add_flow(receiver.url("blip"))
    event = await add_event()

    async def storage_blip(*args, **kwargs):
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(fan_out_module.outbox, "mark_fanned_out", storage_blip)
    with pytest.raises(ConnectionResetError):
        await fan_out_module.fan_out(CLINIC, [event], attempt_now=delivery.attempt)
    (request,) = receiver.requests("blip")
    assert request.headers["idempotency-key"] == idempotency_key(event, flow.webhook_id)
    assert await queue_length() == 0


@pytest.mark.slow
async def test_a_slow_flow_does_not_hold_fan_out(env, receiver, monkeypatch) -> None:
    monkeypatch.setattr(fan_out_module, "ATTEMPT_WAIT_SECONDS", 0.5)
    await add_flow(receiver.url("slow"))
    receiver.plan("slow", Reply(200, delay=3.0))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await fan_out_module.fan_out(CLINIC, [await add_event()], attempt_now=delivery.attempt)
    assert loop.time() - started < 2.5 and await queue_length() == 1
    for _ in range(100):  # it goes on in the background and then deletes its safety net
        if await queue_length() == 0:
            break
        await asyncio.sleep(0.1)
    assert len(receiver.requests("slow")) == 1 and await queue_length() == 0
    assert SECRET not in json.dumps(await queued())


async def test_a_write_after_another_instances_starts_from_the_row_again(env, receiver) -> None:
    """This process remembers the ETag it wrote; another instance's write since makes that a 412, and the
    write reads the row again instead of overwriting the other's counts."""
    flow = await add_flow(receiver.url("remembered"))
    ours = _Outcomes()
    ours.add(True, "200", datetime.now(UTC))
    await flow_health._write_health(CLINIC, flow.row_key, ours)
    table = get_store().table(MAILBOX_TABLE)
    stored = await table.get_entity(CLINIC, flow.row_key)
    await table.update_entity({"PartitionKey": CLINIC, "RowKey": flow.row_key, "FailedCount": 4,
                               "DeliveredCount": stored["DeliveredCount"] + 2}, mode="merge")  # another instance
    await flow_health._write_health(CLINIC, flow.row_key, ours)
    health = await health_of(flow.webhook_id)
    assert (health.delivered_count, health.failed_count) == (4, 4)
