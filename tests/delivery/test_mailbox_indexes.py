"""The sweeps' index rows (``shared.records.mailbox``, index rows): sweeps read their index partition and the
rows it points at, never the rest of the mailbox table; writers keep each index a superset of its rows; a
sweep drops the index rows it finds without rows; an index built before (or rebuilt after) is a scan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.adapters.storage import MAILBOX_TABLE, get_store
from shared.records import dead_letters, flows, mailbox, outbox
from shared.records.dead_letters import DeadLetters
from shared.records.flows import FlowRegistry
from shared.records.outbox import outbox_row_key
from shared.workers import outbox_sweep, resync
from testing.rows import CLINIC, add_event, add_flow
from tests.delivery.conftest import fan_out, queued

SALON = "salon@contoso.test"


def table():
    return get_store().table(MAILBOX_TABLE)


async def index(kind: str) -> dict[str, dict]:
    return {e["RowKey"]: e for e in await mailbox.index_rows(kind)}


async def test_an_outbox_row_written_without_its_index_is_found_only_by_a_rebuild(env, receiver) -> None:
    """The sweep does not scan: a row no index names (as a version before the index wrote it) stays unseen
    until the index is rebuilt (its marker deleted), which is the repair path for such rows."""
    await add_flow(receiver.url("i"))
    assert (await outbox_sweep.sweep_outbox(older_than=timedelta(0))).fanned_out == 0  # builds the index
    assert await mailbox.index_built(outbox.INDEX)
    eid = "e" * 32
    await table().upsert_entity({"PartitionKey": CLINIC, "RowKey": outbox_row_key(eid), "EventId": eid,
                                 "Trigger": "AppointmentCreated", "ChangeType": "Created", "AppointmentId": "a",
                                 "DetectedAt": datetime.now(UTC), "State": "pending", "Payload0": "{}"})
    assert (await outbox_sweep.sweep_outbox(older_than=timedelta(0))).fanned_out == 0
    await table().delete_entity(mailbox.INDEXES_BUILT, f"built:{outbox.INDEX}")
    report = await outbox_sweep.sweep_outbox(older_than=timedelta(0))
    assert report.fanned_out == 1 and [m["eventId"] for m in await queued()] == [eid]


async def test_the_outbox_index_follows_the_rows_and_goes_with_the_last(env, receiver, monkeypatch) -> None:
    await add_flow(receiver.url("f"))
    eid = await add_event(number=1)  # makes the mailbox due first
    assert set(await index(outbox.INDEX)) == {CLINIC}
    report = await outbox_sweep.sweep_outbox()  # younger than a minute: left pending, due again next sweep
    assert report.fanned_out == 0 and (await index(outbox.INDEX))[CLINIC]["DueAt"] <= datetime.now(UTC)
    await fan_out(CLINIC, [eid])
    await outbox_sweep.sweep_outbox()  # fanned out: due when its retention ends
    due = (await index(outbox.INDEX))[CLINIC]["DueAt"]
    assert due > datetime.now(UTC) + outbox_sweep.retention() - timedelta(minutes=5)
    assert await outbox.due(datetime.now(UTC)) == []
    # Past retention (as if a day had gone by): pruned, and the index row with it once no writer is near.
    long_ago = datetime.now(UTC) - outbox_sweep.retention() - timedelta(minutes=5)
    await table().update_entity({"PartitionKey": CLINIC, "RowKey": outbox_row_key(eid), "LastEnqueuedAt": long_ago})
    await mailbox.put_index(outbox.INDEX, CLINIC, {"DueAt": long_ago})
    assert (await outbox_sweep.sweep_outbox()).pruned == 1
    kept = (await index(outbox.INDEX))[CLINIC]  # touched moments ago: kept for INDEX_GRACE, then gone
    assert kept["DueAt"] > datetime.now(UTC)
    monkeypatch.setattr(mailbox, "INDEX_GRACE", timedelta(0))
    await mailbox.put_index(outbox.INDEX, CLINIC, {"DueAt": long_ago})
    await outbox_sweep.sweep_outbox()
    assert await index(outbox.INDEX) == {}


async def test_a_write_after_the_sweep_read_the_index_keeps_it(env) -> None:
    """The sweep moves or deletes an index row only as it read it (ETag): a writer's touch in between wins."""
    await outbox.before_writing(CLINIC)
    (seen,) = await outbox.due(datetime.now(UTC))
    await outbox.before_writing(CLINIC)  # a reconcile about to commit
    await outbox.reschedule_mailbox(seen, None, datetime.now(UTC) + timedelta(days=1))
    assert set(await index(outbox.INDEX)) == {CLINIC}


async def test_dead_letters_are_found_through_their_index(env) -> None:
    letters = DeadLetters()
    await letters.record(CLINIC, "e1", "f1", trigger="AppointmentCreated", change_type="Created",
                         appointment_id="a", reason="rejected", status=400, error_code="Rejected", error_text="",
                         attempts=1, first_attempt_at=datetime.now(UTC), correlation_id="c")
    assert set(await index(dead_letters.INDEX)) == {CLINIC}
    report = await outbox_sweep.sweep_outbox()
    assert report.dead_letters_deleted == 0
    due = (await index(dead_letters.INDEX))[CLINIC]["DueAt"]  # when the letter's retention ends
    assert due > datetime.now(UTC) + timedelta(days=29)


async def test_the_flows_index_has_the_mailboxes_with_flows(env, receiver) -> None:
    registry = FlowRegistry(table(), 5)
    clinic = await add_flow(receiver.url("a"))
    await add_flow(receiver.url("b"), mailbox=SALON)
    assert sorted(await flows.mailboxes_with_flows()) == [CLINIC, SALON]
    await registry.unregister(CLINIC, clinic.webhook_id)  # the last flow: the index row goes after it
    assert await flows.mailboxes_with_flows() == [SALON]
    assert await resync.resync_all() == 1


async def test_an_index_row_without_flows_is_dropped_unless_a_flow_came(env, receiver) -> None:
    await mailbox.put_index(flows.INDEX, CLINIC, {"Kind": "flows"})  # left by a registration that failed
    assert await flows.drop_index_if_unused(CLINIC)
    await add_flow(receiver.url("c"))
    assert not await flows.drop_index_if_unused(CLINIC)
    assert await flows.mailboxes_with_flows() == [CLINIC]


async def test_the_flows_index_is_built_from_the_quota_rows_once(env) -> None:
    """A deployment older than the index: its quota rows are found by one scan, the first time."""
    await table().upsert_entity({"PartitionKey": CLINIC, "RowKey": flows.QUOTA_ROW, "FlowCount": 2})
    await table().upsert_entity({"PartitionKey": SALON, "RowKey": flows.QUOTA_ROW, "FlowCount": 0})
    assert await resync.resync_all() == 1
    await table().upsert_entity({"PartitionKey": SALON, "RowKey": flows.QUOTA_ROW, "FlowCount": 1})
    assert await resync.resync_all() == 1  # built: no scan any more


async def test_the_resync_spreads_its_mailboxes_over_its_period(env, monkeypatch) -> None:
    """25 mailboxes over 100 s: 10 slots 10 s apart, so only the first slot's hints are visible at once."""
    from shared.adapters.settings import reset_settings_cache
    from shared.adapters.storage import MAILBOX_CHANGES_QUEUE
    from shared.messages import mailbox_changes

    monkeypatch.setenv("RESYNC_SPREAD_MINUTES", "1")
    reset_settings_cache()
    mailboxes = [f"m{i:02d}@contoso.test" for i in range(25)]
    for m in mailboxes:
        await mailbox.put_index(flows.INDEX, m, {"Kind": "flows"})
    assert await resync.resync_all() == 25
    queue = get_store().queue(MAILBOX_CHANGES_QUEUE)
    assert (await queue.get_queue_properties()).approximate_message_count == 6  # 60 s / SLOT_SECONDS
    (visible,) = [mailbox_changes.parse(m.content.encode()) for m in await queue.peek_messages(max_messages=32)]
    assert [m["mailbox"] for m in visible["bundle"]] == mailboxes[:5]
    assert all(m["fullResync"] and m["reason"] == "timer" for m in visible["bundle"])


def test_a_resync_schedule_gives_every_mailbox_one_slot_in_order() -> None:
    mailboxes = [f"m{i}" for i in range(7)]
    planned = resync.schedule(mailboxes, 3000)
    assert [delay for delay, _ in planned] == [round(i * 3000 / 7) for i in range(7)]
    assert [m for _, slot in planned for m in slot] == mailboxes
    assert resync.schedule(mailboxes, 25) == [(0, mailboxes[:4]), (12, mailboxes[4:])]
    assert resync.schedule([], 3000) == []
