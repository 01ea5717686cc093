"""The time-relative triggers' due index and timer, in process against Azurite and the Graph sandbox: what the
reconcile schedules and withdraws, what the timer reads, and a reminder held up by Graph or by a crash going
out once, late, under its one key."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.adapters.settings import reset_settings_cache
from shared.records import reminders as due_index
from shared.records.flows import FlowRegistry
from shared.records.mailbox import mailbox_table
from shared.records.reminders import DUE_PREFIX, DueReminder
from shared.services import reminders as scheduling
from shared.workers import reminders as timer
from shared.workers.reconcile import reconcile
from testing.receiver import Receiver
from tests.reconcile.test_reconcile import CLINIC, Bookings, hint


async def due_rows() -> list[DueReminder]:
    hi = DUE_PREFIX[:-1] + chr(ord(DUE_PREFIX[-1]) + 1)
    query = "PartitionKey ge @lo and PartitionKey lt @hi"
    return [DueReminder.from_entity(e) async for e in mailbox_table().query_entities(
        query, parameters={"lo": DUE_PREFIX, "hi": hi})]


def graph_time(text: str) -> datetime:
    return datetime.fromisoformat(text[:19]).replace(tzinfo=UTC)


@pytest.fixture(autouse=True)
def fast_timer(clean_env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The timer every 2 s: a run fires what is due within 2 s (the shipped minute would hold each run a minute)."""
    monkeypatch.setenv("REMINDER_SCHEDULE", "*/2 * * * * *")
    reset_settings_cache()


@pytest.fixture
async def starting(clean_env, sandbox) -> tuple[Bookings, Any]:
    """A flow *about to start* (60 minutes before) on the clinic, registered before its baseline."""
    flow = await FlowRegistry.default().register(CLINIC, "AppointmentStarting", "http://127.0.0.1:9/flow",
                                                 created_by_oid="o", created_by_upn="admin@contoso.test",
                                                 offset_minutes=60)
    assert await reconcile(hint(full_resync=True)) == "reconciled"
    return Bookings(sandbox), flow


async def test_the_reconcile_schedules_moves_and_withdraws_due_rows(starting) -> None:
    bookings, flow = starting
    baseline = {r.appointment_id for r in await due_rows()}
    created = bookings.create(minutes_from_now=24 * 60)
    await reconcile(hint(full_resync=True))
    (row,) = [r for r in await due_rows() if r.appointment_id == created["id"]]
    start = graph_time(created["startDateTime"]["dateTime"])
    assert row.scheduled_for == row.fire_at == start - timedelta(minutes=60) and row.flow_id == flow.webhook_id

    bookings.update(created["id"], serviceNotes="only the notes")  # same times: nothing rescheduled
    await reconcile(hint(full_resync=True))
    assert [r for r in await due_rows() if r.appointment_id == created["id"]] == [row]

    later = start + timedelta(hours=2)
    bookings.update(created["id"], startDateTime={"dateTime": later.replace(tzinfo=None).isoformat(),
                                                  "timeZone": "UTC"},
                    endDateTime={"dateTime": (later + timedelta(minutes=30)).replace(tzinfo=None).isoformat(),
                                 "timeZone": "UTC"})
    await reconcile(hint(full_resync=True))
    moved = [r for r in await due_rows() if r.appointment_id == created["id"]]
    assert [r.scheduled_for for r in moved] == [later - timedelta(minutes=60)]  # the old time's row is gone

    bookings.cancel(created["id"])
    await reconcile(hint(full_resync=True))
    assert {r.appointment_id for r in await due_rows()} == baseline


async def test_due_by_stops_at_its_horizon(clean_env) -> None:
    now = datetime.now(UTC)
    rows = [DueReminder(CLINIC, f"a{i}", "f", "AppointmentStarting", at, at)
            for i, at in enumerate([now - timedelta(hours=3), now - timedelta(seconds=5), now + timedelta(seconds=20),
                                    now + timedelta(minutes=3), now + timedelta(days=6)])]
    await due_index.put(rows)
    got = await due_index.due_by(now + timedelta(seconds=30), 100)
    assert sorted(r.appointment_id for r in got) == ["a0", "a1", "a2"]
    assert [r.appointment_id for r in await due_index.due_by(now, 1)] == ["a0"]  # earliest minutes first


async def test_graph_down_at_the_instant_fires_once_when_it_answers(starting, sandbox) -> None:
    bookings, _ = starting
    with Receiver() as receiver:
        flow = await FlowRegistry.default().register(
            CLINIC, "AppointmentStarting", receiver.url("late"), created_by_oid="o",
            created_by_upn="admin@contoso.test", offset_minutes=5)
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5, seconds=2)  # due in 2 s
        created = bookings.create(startDateTime={"dateTime": start.replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
                                  endDateTime={"dateTime": (start + timedelta(minutes=30)).replace(tzinfo=None)
                                               .isoformat(), "timeZone": "UTC"})
        await reconcile(hint(full_resync=True))
        (row,) = [r for r in await due_rows() if r.flow_id == flow.webhook_id]
        assert row.scheduled_for == start - timedelta(minutes=5) and flow.created <= row.scheduled_for

        sandbox.add_fault(method="GET", path="*/appointments/*", status=503, count=None)  # a storm across it
        assert (await timer.run())["later"] >= 1  # the run waits for the instant, then Graph answers 503
        assert receiver.requests("late") == [] and row in await due_rows()  # kept, not dropped
        sandbox.control("DELETE", "faults")

        assert (await timer.run())["fired"] >= 1
        (first,) = receiver.wait_for(1, "late", timeout=10)
        payload = json.loads(first.body)
        assert payload["AppointmentId"] == created["id"]
        assert payload["ScheduledFor"] == row.scheduled_for.isoformat().replace("+00:00", "Z")
        assert row not in await due_rows()

        await due_index.put([row])  # as if the run had died after the delivery, before deleting the row
        assert (await timer.run())["fired"] >= 1
        assert len(receiver.requests("late")) == 1  # the event exists: not sent again, not under a new key


async def test_the_late_rule(clean_env) -> None:
    """Booked or moved inside the window: *about to start* fires at once while the appointment has not
    started and the flow existed at the instant; *has ended* never."""
    now = datetime.now(UTC)
    registry = FlowRegistry.default()
    starting = await registry.register(CLINIC, "AppointmentStarting", "http://127.0.0.1:9/s", created_by_oid="o",
                                       created_by_upn="u", offset_minutes=60)
    ended = await registry.register(CLINIC, "AppointmentEnded", "http://127.0.0.1:9/e", created_by_oid="o",
                                    created_by_upn="u", offset_minutes=0)
    later = now + timedelta(minutes=1)
    inside = (now + timedelta(minutes=30), now + timedelta(minutes=60))  # instant 30 minutes ago
    assert scheduling.due_reminder(starting, "a", inside, later) is None  # the flow did not exist then
    old_flow = type(starting)(**{**starting.__dict__, "created": now - timedelta(hours=2)})
    at_once = scheduling.due_reminder(old_flow, "a", inside, later)
    assert at_once is not None and at_once.fire_at == later and at_once.scheduled_for == inside[0] - timedelta(hours=1)
    assert scheduling.due_reminder(old_flow, "a", (now - timedelta(minutes=1), now), later) is None  # started
    old_ended = type(ended)(**{**ended.__dict__, "created": now - timedelta(hours=2)})
    assert scheduling.due_reminder(old_ended, "a", (now - timedelta(minutes=30), now), later) is None
    ahead = scheduling.due_reminder(old_ended, "a", (now, now + timedelta(minutes=30)), later)
    assert ahead is not None and ahead.fire_at == ahead.scheduled_for == now + timedelta(minutes=30)


async def test_a_row_written_during_a_run_fires_in_that_run(clean_env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row written after the run began and due before the next one (a booking just before its instant, the late
    rule's at-once rows) is found by the run's re-reads while it waits for a later row: seconds late, not a
    period."""
    import asyncio

    monkeypatch.setenv("REMINDER_SCHEDULE", "*/3 * * * * *")
    reset_settings_cache()
    monkeypatch.setattr(timer, "REREAD_SECONDS", 0.5)
    later = datetime.now(UTC) + timedelta(seconds=2)
    await due_index.put([DueReminder(CLINIC, "b", "no-such-flow", "AppointmentStarting", later, later)])
    running = asyncio.ensure_future(timer.run())
    await asyncio.sleep(1.0)
    now = datetime.now(UTC)
    await due_index.put([DueReminder(CLINIC, "a", "no-such-flow", "AppointmentStarting", now, now)])
    outcomes = await running
    assert outcomes["flow removed"] == 2 and await due_rows() == []


async def test_a_run_with_nothing_due_ends_at_once(clean_env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing due within the period: one read and the run ends (Flex Consumption bills the time an execution is
    open: a run held for its whole minute would bill every minute of the month)."""
    import time

    monkeypatch.setenv("REMINDER_SCHEDULE", "0 * * * * *")
    reset_settings_cache()
    later = datetime.now(UTC) + timedelta(minutes=5)
    await due_index.put([DueReminder(CLINIC, "a", "no-such-flow", "AppointmentStarting", later, later)])
    started = time.monotonic()
    assert await timer.run() == {}
    assert time.monotonic() - started < 5  # not the minute of the period
    assert len(await due_rows()) == 1


async def test_a_test_event_of_a_time_relative_flow_says_when_it_was_due(clean_env) -> None:
    from shared.records import outbox
    from shared.services import test_events

    flow = await FlowRegistry.default().register(CLINIC, "AppointmentStarting", "http://127.0.0.1:9/s",
                                                 created_by_oid="o", created_by_upn="u", offset_minutes=90)
    payload = outbox.read_payload(await outbox.get(CLINIC, await test_events.send(CLINIC, flow)))
    start = datetime.fromisoformat(payload["StartTime"].replace("Z", "+00:00"))
    assert payload["IsTest"] is True
    assert payload["ScheduledFor"] == (start - timedelta(minutes=90)).isoformat().replace("+00:00", "Z")
