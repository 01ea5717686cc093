"""The delta check against the Graph sandbox and Azurite: a change nobody notified is found and reconciled."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from shared.adapters.storage import MAILBOX_CHANGES_QUEUE, MAILBOX_TABLE, SUBSCRIPTION_TASKS_QUEUE, get_store
from shared.records import delta_tokens, flows
from shared.workers import reconcile as reconcile_worker
from shared.workers import renewal
from shared.workers.delta_check import check_all
from shared.workers.reconcile import reconcile
from shared.workers.renewal import UNANNOUNCED_CHANGE
from tests.app_insights import alert_rows, capture, fires
from tests.reconcile.test_reconcile import CLINIC, Bookings, baselined, outbox
from tests.subscriptions.test_notifications import drain
from tests.subscriptions.test_renewal import queued

__all__ = ["baselined"]  # the fixture, shared with the reconcile tests


async def give_flows(mailbox: str, count: int = 1) -> None:
    await get_store().table(MAILBOX_TABLE).upsert_entity({"PartitionKey": mailbox, "RowKey": "quota",
                                                          "FlowCount": count})


def take_hints(azurite) -> list[dict]:
    """The hints queued since the last call (received and deleted)."""
    return drain(azurite, MAILBOX_CHANGES_QUEUE)


async def test_a_change_nobody_notified_is_found_by_the_next_check_and_reconciled(baselined: Bookings, sandbox,
                                                                                   azurite, monkeypatch) -> None:
    monkeypatch.setattr(reconcile_worker, "UNANNOUNCED_GRACE", timedelta(seconds=1))  # Graph's 3 min, scaled
    renewal._checked.clear()  # no cool-down left by an earlier test in this process
    await give_flows(CLINIC)
    first = await check_all()
    assert first.outcomes == {"started": 1} and take_hints(azurite) == []  # a full round, nothing to announce
    booked = baselined.create()  # no subscription here: Graph notifies nobody
    await asyncio.sleep(1)
    found = await check_all()
    assert (found.outcomes, found.requests, found.hints) == ({"changed": 1}, 1, 1)
    (hint,) = take_hints(azurite)
    assert (hint["mailbox"], hint["reason"], hint["fullResync"]) == (CLINIC, "delta", False)
    assert {c["changeType"] for c in hint["changes"]} == {"updated"}
    with capture() as captured:
        assert await reconcile(hint) == "reconciled"
    assert [(e["ChangeType"], e["AppointmentId"]) for e in await outbox()] == [("Created", booked["id"])]
    # No notification announced it: said loudly, and the mailbox's subscription is checked at once.
    (check,) = queued(azurite, SUBSCRIPTION_TASKS_QUEUE)
    assert (check["action"], check["mailbox"], check["reason"]) == ("renew", CLINIC, UNANNOUNCED_CHANGE)
    (row,) = alert_rows("notifications-missing", captured)
    assert (row["mailbox"], row["changes"]) == (CLINIC, 1)
    assert not fires("notifications-missing", [row]) and fires("notifications-missing", [row] * 11)
    quiet = await check_all()  # nothing changed since: one request, no hint
    assert (quiet.outcomes, quiet.requests, quiet.hints) == ({"unchanged": 1}, 1, 0)
    baselined.cancel(booked["id"])
    assert (await check_all()).hints == 1
    (removal,) = take_hints(azurite)
    assert [c["changeType"] for c in removal["changes"]] == ["deleted"]
    assert await reconcile(removal) == "reconciled"
    assert sorted(e["ChangeType"] for e in await outbox()) == ["Cancelled", "Created"]


async def test_a_change_the_notification_path_reconciled_is_covered(baselined: Bookings, azurite) -> None:
    await give_flows(CLINIC)
    await check_all()
    baselined.create()
    await asyncio.sleep(2.1)  # the reconcile's coverage margin: Graph may show a change a moment late
    assert await reconcile({**(await _full_hint()), "reason": "notification"}) == "reconciled"
    await check_all()
    (hint,) = take_hints(azurite)
    assert await reconcile(hint) == "covered"  # no Graph read: the notification's reconcile began after the change
    assert len(await outbox()) == 1
    assert queued(azurite, SUBSCRIPTION_TASKS_QUEUE) == []  # notified: nothing to check


async def test_a_token_graph_dropped_means_a_full_resync_and_a_new_round(baselined: Bookings, sandbox,
                                                                         azurite) -> None:
    await give_flows(CLINIC)
    await check_all()
    sandbox.control("POST", "delta", {"expireMailbox": CLINIC})
    expired = await check_all()
    assert expired.outcomes == {"expired": 1}
    (hint,) = take_hints(azurite)
    assert (hint["fullResync"], hint["reason"]) == (True, "delta")
    assert (await check_all()).outcomes == {"unchanged": 1}  # the new round's token works


async def test_a_mailbox_without_flows_loses_its_round(baselined: Bookings, azurite) -> None:
    await give_flows(CLINIC)
    await check_all()
    assert CLINIC in await delta_tokens.read_all()
    await give_flows(CLINIC, 0)
    await flows.drop_index_if_unused(CLINIC)  # as the renewal sweep's repair does
    assert (await check_all()).outcomes == {}
    assert await delta_tokens.read_all() == {}


async def _full_hint() -> dict:
    from shared.messages.mailbox_changes import change_message

    return dict(change_message(CLINIC, full_resync=True, reason="notification"))


async def test_rounds_travel_20_to_a_batch_and_a_throttled_one_is_checked_again_next_time(
        baselined: Bookings, sandbox, azurite) -> None:
    salon = "salon@contoso.test"
    await give_flows(CLINIC)
    await give_flows(salon)
    assert (await check_all()).outcomes == {"started": 2}
    quiet = await check_all()
    assert (quiet.outcomes, quiet.requests, quiet.http_requests) == ({"unchanged": 2}, 2, 1)  # one $batch
    baselined.create()
    sandbox.add_fault(method="GET", path=f"/v1.0/users/{CLINIC}/calendarView/delta", status=429, retryAfter=1)
    throttled = await check_all()
    assert throttled.outcomes == {"failed": 1, "unchanged": 1} and take_hints(azurite) == []
    again = await check_all()  # the same round again: the change is still there to find
    assert again.outcomes == {"changed": 1, "unchanged": 1} and len(take_hints(azurite)) == 1


async def test_week_old_windows_roll_a_few_a_run_after_their_changes_were_taken(baselined: Bookings, azurite,
                                                                             monkeypatch) -> None:
    from datetime import UTC, datetime, timedelta

    from shared.workers import delta_check

    salon = "salon@contoso.test"
    await give_flows(CLINIC)
    await give_flows(salon)
    await check_all()
    monkeypatch.setattr(delta_check, "ROLLS_PER_RUN", 1)
    assert (await check_all(datetime.now(UTC) + timedelta(days=6, hours=23))).rolled == 0  # within the week
    baselined.create()
    later = datetime.now(UTC) + timedelta(days=7, minutes=1)
    first = await check_all(later)
    assert (first.rolled, first.hints) == (1, 1)  # the change was taken from the old round first
    assert (await check_all(later)).rolled == 1  # the other one, next run
    assert (await check_all(later)).rolled == 0
    windows = {m: r.window_start for m, r in (await delta_tokens.read_all()).items()}
    assert all(start > later - timedelta(days=8) for start in windows.values())


async def test_a_hint_that_could_not_be_queued_is_found_again_next_run(baselined: Bookings, azurite,
                                                                        monkeypatch) -> None:
    from shared.messages import mailbox_changes

    await give_flows(CLINIC)
    await check_all()
    baselined.create()
    real = mailbox_changes.enqueue

    async def storage_down(*args, **kwargs) -> None:
        raise ConnectionError("queue unreachable")

    monkeypatch.setattr(mailbox_changes, "enqueue", storage_down)
    await check_all()
    monkeypatch.setattr(mailbox_changes, "enqueue", real)
    assert take_hints(azurite) == []
    assert (await check_all()).hints == 1  # the round was not moved on: the change is still there to find
    assert len(take_hints(azurite)) == 1


def test_a_round_with_many_changes_asks_for_a_full_resync() -> None:
    from shared.services.calendar_changes import MAX_HINT_CHANGES, hint_for

    few = hint_for(CLINIC, [{"id": "e1", "lastModifiedDateTime": "2026-12-07T09:00:00Z"}])
    assert few is not None and few["receivedAt"].startswith("2026-12-07T09:00:00") and not few["fullResync"]
    many = hint_for(CLINIC, [{"id": f"e{n}"} for n in range(MAX_HINT_CHANGES + 1)])
    assert many is not None and many["fullResync"] and many["changes"] == []


async def test_a_change_the_check_saw_before_its_notification_is_not_called_unannounced(baselined: Bookings, sandbox,
                                                                                       azurite) -> None:
    """Graph's calendar notifications take up to 3 minutes: a change the delta check finds sooner is delivered and
    the subscription checked, but ChangeNotNotified (what the notifications-missing alert counts) waits for that."""
    renewal._checked.clear()
    await give_flows(CLINIC)
    await check_all()
    baselined.create()
    await check_all()
    (hint,) = take_hints(azurite)
    with capture() as captured:
        assert await reconcile(hint) == "reconciled"
    assert len(await outbox()) == 1
    assert alert_rows("notifications-missing", captured) == []
    (check,) = queued(azurite, SUBSCRIPTION_TASKS_QUEUE)
    assert check["reason"] == UNANNOUNCED_CHANGE


async def test_a_window_shorter_than_a_new_rounds_rolls_at_once(baselined: Bookings, azurite) -> None:
    """A round started with a shorter window (by an earlier version, or before RESYNC_HORIZON_DAYS was raised) does
    not cover the horizon: it rolls at the next run, after its changes were taken."""
    from dataclasses import replace

    from shared.services import calendar_changes

    await give_flows(CLINIC)
    await check_all()
    (state,) = (await delta_tokens.read_all()).values()
    assert not calendar_changes.needs_roll(state, state.checked_at)
    short = replace(state, window_end=state.window_end - calendar_changes.WINDOW_ROLL)
    assert calendar_changes.needs_roll(short, state.checked_at)
    await delta_tokens.put(short)
    assert (await check_all()).rolled == 1
    (rolled,) = (await delta_tokens.read_all()).values()
    assert rolled.window_end - rolled.window_start == state.window_end - state.window_start


async def test_a_mailbox_whose_check_keeps_failing_is_reported_and_resynced_every_so_many_runs(
        baselined: Bookings, sandbox, azurite, monkeypatch) -> None:
    """Graph refuses CLINIC's calendar (403) from its first round on: its failures are counted on its row, and every
    FAILURES_PER_REPORT in a row it gets DeltaCheckFailing (the alert) and a full-resync hint. A round that works
    again starts afresh, and the count with it."""
    from shared.workers import delta_check

    monkeypatch.setattr(delta_check, "FAILURES_PER_REPORT", 2)
    await give_flows(CLINIC)
    sandbox.add_fault(method="GET", path=f"/v1.0/users/{CLINIC}/calendarView/delta", status=403, count=None)
    with capture() as captured:
        assert (await check_all()).failed == {CLINIC: 403}
        assert take_hints(azurite) == [] and alert_rows("delta-check-failing", captured) == []
        await check_all()
    (row,) = alert_rows("delta-check-failing", captured)
    assert (row["mailbox"], row["consecutiveFailures"], row["status"]) == (CLINIC, 2, 403)
    (hint,) = take_hints(azurite)
    assert (hint["mailbox"], hint["fullResync"], hint["reason"]) == (CLINIC, True, delta_check.FAILING)
    await check_all()
    assert take_hints(azurite) == []  # the third: not yet the next report
    sandbox.http.delete("/_sandbox/faults").raise_for_status()
    assert (await check_all()).outcomes == {"started": 1}
    (state,) = (await delta_tokens.read_all()).values()
    assert state.started and state.failures == 0
    sandbox.add_fault(method="GET", path=f"/v1.0/users/{CLINIC}/calendarView/delta", status=403, count=None)
    assert (await check_all()).failed == {CLINIC: 403}  # an ongoing round refused inside its batch
    (kept,) = (await delta_tokens.read_all()).values()
    assert (kept.delta_link, kept.failures) == (state.delta_link, 1)  # the round kept, the failure counted
