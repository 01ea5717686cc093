"""The renewal sweep and the subscription task worker, against the sandbox and Azurite."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from datetime import UTC, datetime, timedelta

import httpx
from azure.storage.queue import QueueClient
from cachetools import TTLCache

from shared.adapters.monitoring import telemetry_context
from shared.adapters.storage import MAILBOX_CHANGES_QUEUE, MAILBOX_TABLE, SUBSCRIPTION_TASKS_QUEUE, get_store
from shared.messages.subscription_tasks import task
from shared.records import mailbox as mailbox_rows
from shared.records import subscription_rows
from shared.services.subscriptions import Subscriptions
from shared.workers import renewal
from shared.workers.renewal import plan_sweep, run_task, sweep
from tests.subscriptions.conftest import sandbox_subscriptions

CLINIC = "clinic@contoso.test"
SALON = "salon@contoso.test"


async def give_flows(mailbox: str, count: int = 1) -> None:
    await get_store().table(MAILBOX_TABLE).upsert_entity({"PartitionKey": mailbox, "RowKey": "quota",
                                                          "FlowCount": count})


async def expire_soon(mailbox: str, minutes: int = 60) -> None:
    """As if Graph had given the subscription this expiration (through the row's owner, which keeps the
    renewal sweep's index in step)."""
    record = await subscription_rows.get(mailbox)
    assert record is not None
    await subscription_rows.record_expiration(record, datetime.now(UTC) + timedelta(minutes=minutes))


def queued(azurite, name: str) -> list[dict]:
    client = QueueClient.from_connection_string(azurite.connection_string, name)
    return [json.loads(base64.b64decode(m.content)) for m in client.peek_messages(max_messages=32)]


async def sweep_as(correlation_id: str) -> renewal.SweepReport:
    """The renewal timer's run, in a known correlation id."""
    with telemetry_context(correlationId=correlation_id):
        return await sweep()


async def test_sweep_plans_renewals_due_and_repairs(app_host, sandbox) -> None:
    await give_flows(CLINIC)
    await give_flows(SALON)
    clinic = await Subscriptions().ensure(CLINIC)
    await expire_soon(CLINIC)
    # SALON has flows but no subscription (e.g. someone deleted it by hand).
    report = await plan_sweep()
    assert [(t["action"], t["mailbox"]) for t in report.tasks] == [("renew", CLINIC), ("repair", SALON)]
    assert report.tasks[0]["subscriptionId"] == clinic.subscription_id
    await expire_soon(CLINIC, minutes=3 * 24 * 60)  # not due within the 24 h window
    assert [t["action"] for t in (await plan_sweep()).tasks] == ["repair"]


async def test_the_sweep_plans_from_its_index_and_drops_the_rows_of_deleted_subscriptions(app_host, sandbox) -> None:
    """The sweep reads the index partition (the subscription rows' copy), not the mailbox partitions: a row
    changed behind its owner's back is planned as the copy says, until a task reads the real row and writes
    the copy again. A deleted subscription's index row goes once the sweep has seen the real row gone."""
    await give_flows(CLINIC)
    record = await Subscriptions().ensure(CLINIC)
    assert (await plan_sweep()).tasks == []  # builds the indexes; the new subscription is not due
    copy = await mailbox_rows.get_index(subscription_rows.INDEX, CLINIC)
    assert (copy["State"], copy["SubscriptionId"]) == ("active", record.subscription_id)
    # A crash between the real write and the copy: the real row says 'deleting' (owner gone), the copy not.
    await get_store().table(MAILBOX_TABLE).update_entity(
        {"PartitionKey": CLINIC, "RowKey": subscription_rows.SUBSCRIPTION_ROW, "State": "deleting",
         "LeaseUntil": datetime.now(UTC) - timedelta(seconds=1)})
    assert (await plan_sweep()).tasks == []
    assert await run_task(task("renew", CLINIC, record.subscription_id, "expiring")) == "stale task"
    assert [(t["action"], t["reason"]) for t in (await plan_sweep()).tasks] == [("repair", "stuck deleting")]
    await give_flows(CLINIC, 0)
    assert await run_task(task("repair", CLINIC, record.subscription_id, "stuck deleting")) == "released"
    assert (await mailbox_rows.get_index(subscription_rows.INDEX, CLINIC))["State"] == subscription_rows.DELETED
    report = await plan_sweep()  # the real row is gone: the index row goes, and the flows' one by its task
    assert [(t["action"], t["mailbox"]) for t in report.tasks] == [("repair", CLINIC)]
    assert await mailbox_rows.get_index(subscription_rows.INDEX, CLINIC) is None
    assert await run_task(report.tasks[0]) == "nothing to do"
    assert await plan_sweep() == renewal.SweepReport()


async def test_sweep_paces_tasks_under_graphs_write_limit(clean_env, azurite, monkeypatch) -> None:
    from shared.adapters.settings import reset_settings_cache

    monkeypatch.setenv("SUBSCRIPTION_WRITES_PER_SECOND", "1")
    monkeypatch.setattr(renewal, "TASKS_PER_MESSAGE", 1)
    reset_settings_cache()
    for mailbox in (CLINIC, SALON):
        await give_flows(mailbox)
    await sweep_as("cid")  # two repairs: the first visible now, the second one second later
    client = QueueClient.from_connection_string(azurite.connection_string, SUBSCRIPTION_TASKS_QUEUE)
    visible = client.peek_messages(max_messages=32)
    assert len(visible) == 1


async def test_sweep_groups_tasks_into_messages_visible_at_their_first_tasks_time(clean_env, azurite,
                                                                                  monkeypatch) -> None:
    from shared.adapters.settings import reset_settings_cache

    monkeypatch.setenv("SUBSCRIPTION_WRITES_PER_SECOND", "10")
    reset_settings_cache()
    mailboxes = [f"m{i:03d}@contoso.test" for i in range(2 * renewal.TASKS_PER_MESSAGE + 5)]
    await asyncio.gather(*(give_flows(m) for m in mailboxes))
    report = await sweep_as("cid")  # a repair per mailbox: 3 messages, at 0 s, 5 s and 10 s
    assert report.repairs == len(mailboxes)
    client = QueueClient.from_connection_string(azurite.connection_string, SUBSCRIPTION_TASKS_QUEUE)
    assert client.get_queue_properties().approximate_message_count == 3
    visible = [json.loads(base64.b64decode(m.content)) for m in client.peek_messages(max_messages=32)]
    assert len(visible) == 1 and len(visible[0]["tasks"]) == renewal.TASKS_PER_MESSAGE
    assert all(t["correlationId"] == "cid" and t["action"] == "repair" for t in visible[0]["tasks"])


async def test_a_task_message_runs_each_task_and_retries_a_failing_one_alone(clean_env, azurite, monkeypatch,
                                                                            caplog) -> None:
    import azure.functions as func

    done: list[str] = []

    async def fake_run(item):
        if item["mailbox"] == SALON:
            raise ConnectionError("storage hiccup")
        done.append(item["mailbox"])
        return "renewed"

    monkeypatch.setattr(renewal, "run_task", fake_run)
    monkeypatch.setattr(renewal, "RETRY_AFTER_ERROR_SECONDS", 0)
    body = {"version": 1, "tasks": [task("renew", CLINIC, "s1", "expiring"),
                                     task("renew", SALON, "s2", "expiring"),
                                     {"action": "explode"}]}
    with caplog.at_level(logging.INFO):
        await renewal.handle_message(func.QueueMessage(body=json.dumps(body).encode()))
    assert done == [CLINIC]
    assert "dropped a malformed subscription task" in caplog.text
    await asyncio.sleep(2.5)  # the retry's spread delay (at least 1 s)
    retried = queued(azurite, SUBSCRIPTION_TASKS_QUEUE)
    assert [(t["mailbox"], t["attempt"]) for t in retried] == [(SALON, 1)]


async def test_renew_extends_the_subscription(app_host, sandbox) -> None:
    await give_flows(CLINIC)
    record = await Subscriptions().ensure(CLINIC)
    await expire_soon(CLINIC)
    outcome = await run_task(task("renew", CLINIC, record.subscription_id, "expiring"))
    assert outcome == "renewed"
    renewed = await Subscriptions().get(CLINIC)
    assert renewed.expiration > datetime.now(UTC) + timedelta(minutes=4000)
    patches = [r for r in sandbox.requests() if r["method"] == "PATCH"]
    assert len(patches) == 1 and record.subscription_id in patches[0]["path"]


async def test_renew_of_a_vanished_subscription_recreates_and_resyncs(app_host, sandbox, azurite) -> None:
    await give_flows(CLINIC)
    record = await Subscriptions().ensure(CLINIC)
    httpx.delete(f"{sandbox.graph_url}/subscriptions/{record.subscription_id}", headers=sandbox.graph_headers())
    assert sandbox_subscriptions(sandbox) == []
    outcome = await run_task(task("renew", CLINIC, record.subscription_id, "expiring"))
    assert outcome == "recreated"
    subs = sandbox_subscriptions(sandbox)
    assert len(subs) == 1 and subs[0]["id"] != record.subscription_id
    assert (await Subscriptions().get(CLINIC)).subscription_id == subs[0]["id"]
    resyncs = [m for m in queued(azurite, MAILBOX_CHANGES_QUEUE) if m["fullResync"]]
    assert resyncs and resyncs[-1]["mailbox"] == CLINIC


async def test_throttled_renewal_is_put_back_with_retry_after(live_app_host, sandbox, azurite) -> None:
    app_host = live_app_host
    await give_flows(CLINIC)
    record = await Subscriptions().ensure(CLINIC)
    sandbox.add_fault(method="PATCH", path="/v1.0/subscriptions/*", status=429, retryAfter=2, count=None)
    outcome = await run_task(task("renew", CLINIC, record.subscription_id, "expiring"))
    assert outcome == "throttled"
    assert queued(azurite, SUBSCRIPTION_TASKS_QUEUE) == []  # not visible yet: it waits as Graph asked
    # The host's queue worker picks the task up once it is visible, and is throttled again.
    for _ in range(80):
        if "subscription task renew for clinic@contoso.test: throttled" in app_host.log:
            break
        await asyncio.sleep(0.1)
    patches = [datetime.fromisoformat(r["time"].replace("Z", "+00:00")) for r in sandbox.requests()
               if r["method"] == "PATCH"]
    assert len(patches) >= 2
    assert (patches[1] - patches[0]).total_seconds() >= 1.9


async def test_repeated_failures_raise_an_error_naming_the_mailbox(app_host, sandbox, caplog) -> None:
    await give_flows(CLINIC)
    record = await Subscriptions().ensure(CLINIC)
    sandbox.add_fault(method="PATCH", path="/v1.0/subscriptions/*", status=500, count=None)
    outcomes = []
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            current = await Subscriptions().get(CLINIC)
            outcomes.append(await run_task(task("renew", CLINIC, current.subscription_id, "expiring")))
    assert outcomes == ["failed"] * 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and CLINIC in r.getMessage()]
    assert errors and "3 times in a row" in errors[0].getMessage()
    assert (await Subscriptions().get(CLINIC)).failures == 3
    assert record.subscription_id  # still the same subscription: failures alone never drop it


async def test_repair_creates_the_missing_subscription_and_releases_orphaned_rows(app_host, sandbox) -> None:
    await give_flows(CLINIC)
    assert await run_task(task("repair", CLINIC, "", "flows without a subscription")) == "recreated"
    assert len(sandbox_subscriptions(sandbox)) == 1
    await give_flows(CLINIC, 0)  # its flows are gone, the subscription stayed
    assert await run_task(task("repair", CLINIC, "", "no flows left")) == "released"
    assert sandbox_subscriptions(sandbox) == []


async def test_flows_the_index_lost_are_indexed_again_and_then_renewed(app_host, sandbox) -> None:
    """A registration that died between its commit and its second index write, while the last flow's removal
    deleted the index row: the sweep sees a subscription without flows; the repair finds the flows and puts
    the index row back, so the next sweep renews the subscription instead of skipping it for ever."""
    await give_flows(CLINIC)
    await Subscriptions().ensure(CLINIC)
    await plan_sweep()  # builds the indexes once (from the quota rows), as on an upgraded deployment
    await get_store().table(MAILBOX_TABLE).delete_entity(mailbox_rows.index_partition("flows"), CLINIC)
    await expire_soon(CLINIC)
    later = datetime.now(UTC) + timedelta(minutes=2)  # the creation's lease has ended
    (repair,) = (await plan_sweep(later)).tasks
    assert (repair["action"], repair["reason"]) == ("repair", "no flows left")
    assert await run_task(repair) == "already active"
    assert [t["action"] for t in (await plan_sweep(later)).tasks] == ["renew"]


async def test_lifecycle_recreate_task(app_host, sandbox) -> None:
    await give_flows(CLINIC)
    record = await Subscriptions().ensure(CLINIC)
    assert await run_task(task("recreate", CLINIC, record.subscription_id, "subscriptionRemoved")) == "recreated"
    subs = sandbox_subscriptions(sandbox)
    assert len(subs) == 1 and subs[0]["id"] != record.subscription_id


async def test_reauthorize_task(app_host, sandbox) -> None:
    await give_flows(CLINIC)
    record = await Subscriptions().ensure(CLINIC)
    assert await run_task(task("reauthorize", CLINIC, record.subscription_id, "reauthorizationRequired")) == "renewed"
    assert any(r["path"].endswith("/reauthorize") for r in sandbox.requests())


async def test_sweep_deletes_orphans_but_not_a_subscription_being_created(app_host, sandbox) -> None:
    from shared.services.subscriptions import notification_urls

    notify, lifecycle = notification_urls()
    await give_flows(CLINIC)
    kept = await Subscriptions().ensure(CLINIC)
    # An orphan: Graph has it (created by an instance that died before recording it), no row knows it.
    orphan = httpx.post(f"{sandbox.graph_url}/subscriptions", headers=sandbox.graph_headers(), json={
        "changeType": "created,updated,deleted", "resource": f"/users/{SALON}/events",
        "notificationUrl": notify, "lifecycleNotificationUrl": lifecycle, "clientState": "x" * 40,
        "expirationDateTime": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}).json()
    report = await sweep_as("cid")
    assert report.orphans_deleted == 1
    assert {s["id"] for s in sandbox_subscriptions(sandbox)} == {kept.subscription_id}
    assert orphan["id"] not in {s["id"] for s in sandbox_subscriptions(sandbox)}


async def test_a_subscription_graph_removed_silently_is_renewed_and_the_404_recreates_it(
        app_host, sandbox, azurite, monkeypatch) -> None:
    """Graph removed CLINIC's subscription and the subscriptionRemoved notification never came: the sweep finds
    it missing from Graph's (paged) list, renews it, and the renewal's 404 re-creates it with a full resync. SALON's
    subscription, which Graph still lists, is left alone."""
    await give_flows(CLINIC)
    await give_flows(SALON)
    removed = await Subscriptions().ensure(CLINIC)
    kept = await Subscriptions().ensure(SALON)
    # Another of the app's subscriptions (not one of ours to audit), and pages of one: the listing takes two pages.
    sandbox.control("POST", "subscriptions", {"value": [{"mailbox": SALON, "notificationUrl": "https://elsewhere.test/"}]})
    monkeypatch.setattr(sandbox.sandbox.config, "default_page_size", 1)
    gone = sandbox.control("DELETE", f"subscriptions/{removed.subscription_id}")
    assert gone["notified"] is False
    assert not [n for n in sandbox.notifications() if n.get("kind") == "lifecycle"]
    report = await sweep_as("cid")
    assert report.missing == 1 and report.renewals == 0
    (renewal_task,) = queued(azurite, SUBSCRIPTION_TASKS_QUEUE)
    assert (renewal_task["action"], renewal_task["mailbox"], renewal_task["subscriptionId"]) == (
        "renew", CLINIC, removed.subscription_id)
    assert len([r for r in sandbox.requests() if r["method"] == "GET" and r["path"] == "/v1.0/subscriptions"]) == 2
    assert await run_task(renewal_task) == "recreated"
    recreated = (await Subscriptions().get(CLINIC)).subscription_id
    assert recreated != removed.subscription_id
    assert {kept.subscription_id, recreated} <= {s["id"] for s in sandbox_subscriptions(sandbox)}
    assert any(m["fullResync"] and m["mailbox"] == CLINIC for m in queued(azurite, MAILBOX_CHANGES_QUEUE))
    assert (await sweep_as("cid2")).missing == 0  # the next sweep finds nothing to repair



async def test_an_unannounced_change_renews_the_subscription_once_per_cool_down(app_host, sandbox, azurite,
                                                                                 monkeypatch) -> None:
    """The delta check found a change no notification announced: the mailbox's subscription is renewed at once
    (whichever it is: the task names none), so one Graph removed without a word is re-created (its 404) without
    waiting for the sweep's audit, also right after it was created. An instance checks a mailbox at most once per
    cool-down: notifications that merely race the delta check cost few writes."""
    monkeypatch.setattr(renewal, "_checked", TTLCache(10, 0.5))  # the cool-down, scaled to 0.5 s
    await give_flows(CLINIC)
    created = await Subscriptions().ensure(CLINIC)
    assert await renewal.check_after_unannounced_change(CLINIC) is True
    assert await renewal.check_after_unannounced_change(CLINIC) is False  # within the cool-down: nothing queued
    (fresh,) = queued(azurite, SUBSCRIPTION_TASKS_QUEUE)
    assert (fresh["action"], fresh["mailbox"], fresh["subscriptionId"], fresh["reason"]) == (
        "renew", CLINIC, "", renewal.UNANNOUNCED_CHANGE)
    assert await run_task(fresh) == "renewed"
    sandbox.control("DELETE", f"subscriptions/{created.subscription_id}")  # Graph removes it, tells nobody
    await asyncio.sleep(0.6)
    assert await renewal.check_after_unannounced_change(CLINIC) is True
    assert await run_task(fresh) == "recreated"
    assert (await Subscriptions().get(CLINIC)).subscription_id != created.subscription_id


async def test_a_subscription_removed_silently_is_recreated_once_its_mailbox_changes(app_host, sandbox,
                                                                                     azurite) -> None:
    """End to end in process: Graph removes CLINIC's subscription without a word; the next booking is announced to
    nobody, the delta check finds it, its reconcile delivers it and renews the subscription, and the renewal's 404
    re-creates it, with no renewal sweep."""
    from shared.messages.mailbox_changes import parse as parse_hint
    from shared.workers.delta_check import check_all
    from shared.workers.reconcile import reconcile
    from tests.reconcile.test_delta_check import take_hints
    from tests.reconcile.test_reconcile import Bookings, outbox

    renewal._checked.clear()
    await give_flows(CLINIC)
    removed = await Subscriptions().ensure(CLINIC)
    for baseline in take_hints(azurite):
        await reconcile(parse_hint(json.dumps(baseline).encode()))
    assert (await check_all()).outcomes == {"started": 1}
    sandbox.control("DELETE", f"subscriptions/{removed.subscription_id}")
    booked = Bookings(sandbox).create()
    assert [n["kind"] for n in sandbox.notifications()] == ["validation", "validation"]  # nobody was told
    assert (await check_all()).hints == 1
    (hint,) = take_hints(azurite)
    assert await reconcile(hint) == "reconciled"
    assert [e["AppointmentId"] for e in await outbox()] == [booked["id"]]
    (check,) = queued(azurite, SUBSCRIPTION_TASKS_QUEUE)
    assert await run_task(check) == "recreated"
    assert (await Subscriptions().get(CLINIC)).subscription_id in {s["id"] for s in sandbox_subscriptions(sandbox)}
