"""The delivery log (``shared.records.delivery_log``) as the delivery path writes it: one row per (event, flow)
delivery whose attempts overwrite it, the flows an event's filters left out, a replayed dead letter, paging newest
first across days, and pruning whole day partitions past ``DELIVERY_LOG_RETENTION_DAYS``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from shared.adapters.storage import DELIVERY_LOG_TABLE, MAILBOX_TABLE, get_store
from shared.records import delivery_log, outbox
from shared.records.dead_letters import DeadLetters
from shared.records.flows import FlowRegistry
from shared.services import dead_letters as dead_letter_service
from shared.workers import outbox_sweep
from testing.receiver import SECRET
from testing.rows import CLINIC, add_event, add_flow
from tests.delivery.conftest import fan_out, run_worker, set_env
from tests.delivery.test_fan_out import flow, payload


async def log_rows() -> list[dict]:
    """The log's rows once what was noted so far is written (delivered and filtered-out rows are written behind)."""
    await delivery_log.flush()
    return [dict(e) async for e in get_store().table(DELIVERY_LOG_TABLE).list_entities()]


async def test_one_row_per_delivery_its_attempts_overwrite_it_ids_and_statuses_only(env, receiver) -> None:
    ok = await add_flow(receiver.url("ok"))
    flaky = await add_flow(receiver.url("flaky"))
    receiver.plan("flaky", 503, 503, 202)
    event = await add_event()
    await fan_out(CLINIC, [event])
    await run_worker(lambda: len(receiver.requests("flaky")) == 3 and len(receiver.requests("ok")) == 1)
    rows = {row["FlowId"]: row for row in await log_rows()}
    assert set(rows) == {ok.webhook_id, flaky.webhook_id}  # three attempts to "flaky", one row
    assert (rows[ok.webhook_id]["State"], rows[ok.webhook_id]["Attempts"]) == ("delivered", 1)
    assert (rows[flaky.webhook_id]["State"], rows[flaky.webhook_id]["Attempts"]) == ("delivered", 3)
    assert rows[flaky.webhook_id]["LastStatus"] == 202
    row = rows[flaky.webhook_id]
    assert (row["EventId"], row["Trigger"], row["AppointmentId"]) == (event, "AppointmentCreated", "appt-1")
    # Ids and statuses only: no customer, no payload, no callback URL.
    text = json.dumps(row, default=str)
    assert "Aiko" not in text and "Payload" not in text and SECRET not in text and "127.0.0.1" not in text


async def test_a_delivery_failing_for_good_shows_dead_lettered_with_its_last_status(env, receiver) -> None:
    rejecting = await add_flow(receiver.url("rejecting"))
    receiver.plan("rejecting", 400)
    event = await add_event()
    await fan_out(CLINIC, [event])
    await run_worker(lambda: len(receiver.requests("rejecting")) == 1)
    (row,) = await log_rows()
    assert (row["FlowId"], row["State"], row["LastStatus"], row["Attempts"]) == (rejecting.webhook_id,
                                                                                 "deadLettered", 400, 1)
    # Replayed: the dead-lettered delivery says so, and the replay is a delivery of its own.
    (letter,) = await DeadLetters().list(CLINIC)
    await dead_letter_service.replay(letter, FlowRegistry(get_store().table(MAILBOX_TABLE), 5), DeadLetters())
    await run_worker(lambda: len(receiver.requests("rejecting")) == 2)
    assert sorted(row["State"] for row in await log_rows()) == ["delivered", "replayed"]


async def test_flows_an_events_filters_left_out_are_listed_as_filtered_out(env, receiver) -> None:
    bikes = await flow(receiver.url("bikes"), services=("svc-bikes",))
    repairs = await flow(receiver.url("repairs"), services=("svc-repairs",))
    operation = outbox.event_operation(CLINIC, "e-1", "Created", "appt-1", payload(1, "svc-bikes", []),
                                       datetime.now(UTC))
    await get_store().table(MAILBOX_TABLE).upsert_entity(operation[1], **operation[2])
    assert await fan_out(CLINIC, ["e-1"]) == 1
    (row,) = await log_rows()
    assert (row["FlowId"], row["State"], row["Attempts"], row["EventId"]) == (repairs, "filteredOut", 0, "e-1")
    await run_worker(lambda: len(receiver.requests("bikes")) == 1)
    assert {row["FlowId"]: row["State"] for row in await log_rows()} == {bikes: "delivered", repairs: "filteredOut"}


def delivery(flow_id: str, event: str, at: datetime) -> delivery_log.Delivery:
    return delivery_log.Delivery(CLINIC, flow_id, event, at, "AppointmentCreated", "appt-1")


async def test_pages_are_newest_first_across_days_and_pruning_drops_whole_old_days(env, monkeypatch) -> None:
    set_env(monkeypatch, DELIVERY_LOG_RETENTION_DAYS="7")
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    flow_id, other = "0d8e2b7e-0000-4000-8000-000000000001", "0d8e2b7e-0000-4000-8000-000000000002"
    # Two a day for ten days, and one of another flow each day (never listed with the first).
    for days_ago in range(10):
        for hour in (9, 15):
            at = now - timedelta(days=days_ago, hours=12 - hour)
            await delivery_log.record(delivery(flow_id, f"e{days_ago}h{hour}", at), "delivered", attempts=1,
                                      status=202)
        await delivery_log.record(delivery(other, f"x{days_ago}", now - timedelta(days=days_ago)), "delivered",
                                  attempts=1, status=202)
    seen: list[str] = []
    after = None
    while True:
        rows, more = await delivery_log.page(CLINIC, flow_id, after=after, top=3, now=now, retention_days=7)
        seen += [row["EventId"] for row in rows]
        if not more:
            break
        after = delivery_log.parse_cursor(delivery_log.cursor(rows[-1]))
    # Days 0 to 7 back are kept (at least 7 days), newest first; the page boundary never skips or repeats.
    assert seen == [f"e{d}h{h}" for d in range(8) for h in (15, 9)]
    # Pruning deletes the days before: 2 rows of this flow and 1 of the other per day, days 8 and 9.
    assert await delivery_log.prune(now, 7) == 6
    assert await delivery_log.prune(now, 7) == 0
    assert len(await log_rows()) == 30 - 6
    assert delivery_log.parse_cursor("20261207.0000:x") is None and delivery_log.parse_cursor("x.1:e") is None


async def test_the_outbox_sweep_prunes_the_log(env, monkeypatch) -> None:
    set_env(monkeypatch, DELIVERY_LOG_RETENTION_DAYS="2")
    old = datetime.now(UTC) - timedelta(days=3)
    await delivery_log.record(delivery("f", "old", old), "delivered", attempts=1, status=200)
    await delivery_log.record(delivery("f", "new", datetime.now(UTC)), "delivered", attempts=1, status=200)
    report = await outbox_sweep.sweep_outbox()
    assert report.deliveries_forgotten == 1
    assert [row["EventId"] for row in await log_rows()] == ["new"]
