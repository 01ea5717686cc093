"""The flow export and the rows a restore writes, against Azurite (tables and blobs), no host: the export holds
what a restore needs and logs no callback URL; ``FlowRegistry.restore`` puts a flow back with its own id, once;
a dry run writes nothing; the restore route's options are checked. The whole round trip with subscriptions and a
booking reaching each flow: tests/e2e/test_restore.py."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from shared.adapters.blobs import FLOW_BACKUP_CONTAINER, get_blobs
from shared.adapters.storage import MAILBOX_TABLE, get_store
from shared.contracts.errors import ApiError
from shared.endpoints import backups as backup_api
from shared.records.flows import FlowLimitReached, FlowRegistry
from shared.services import backup
from testing.rows import CLINIC
from testing.storage import clean_app_storage

SIG = "sig=VERY-SECRET-SIGNATURE"
URL = f"https://prod-01.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?{SIG}"
LOCAL = f"http://127.0.0.1:9/flows/a?{SIG}"  # what a restore admits locally (ALLOW_LOOPBACK_CALLBACKS, no DNS)


@pytest.fixture
async def env(app_env: dict[str, str], azurite: Any) -> AsyncIterator[dict[str, str]]:
    clean_app_storage(azurite.connection_string)
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(
        FLOW_BACKUP_CONTAINER)
    if container.exists():
        for blob in container.list_blobs():
            container.delete_blob(blob.name)
    yield app_env
    await get_blobs().close()
    await get_store().close()


def registry() -> FlowRegistry:
    return FlowRegistry(get_store().table(MAILBOX_TABLE), 5)


async def flow_rows() -> list[dict[str, Any]]:
    table = get_store().table(MAILBOX_TABLE)
    return sorted([dict(e) async for e in table.list_entities() if e["RowKey"].startswith(("flow:", "quota"))
                   or e["PartitionKey"] == "~index:flows"], key=lambda e: (e["PartitionKey"], e["RowKey"]))


async def wipe() -> None:
    table = get_store().table(MAILBOX_TABLE)
    async for entity in table.list_entities(select=["PartitionKey", "RowKey"]):
        await table.delete_entity(entity["PartitionKey"], entity["RowKey"])


async def test_the_export_holds_what_a_restore_needs_and_logs_no_callback_url(env, caplog) -> None:
    flow = await registry().register(CLINIC, "AppointmentUpdated", URL, created_by_oid="oid-1",
                                     created_by_upn="admin@contoso.test", service_ids=("svc-1",))
    caplog.set_level(logging.DEBUG)
    summary = await backup.export_flows()
    assert (summary.flows, summary.mailboxes) == (1, 1) and summary.blob.startswith("flows-")
    assert "FlowsExported" in caplog.text  # the event a missing-export alert can count
    assert SIG not in caplog.text
    document = json.loads(await get_blobs().get(FLOW_BACKUP_CONTAINER, summary.blob))
    assert document["flows"] == [{"mailbox": CLINIC, "webhookId": flow.webhook_id, "trigger": "AppointmentUpdated",
                                  "callbackUrl": URL, "createdByOid": "oid-1", "createdByUpn": "admin@contoso.test",
                                  "createdDateTime": document["flows"][0]["createdDateTime"],
                                  "serviceIds": ["svc-1"], "staffMemberIds": []}]
    listed = await backup.list_exports()
    assert listed[0]["blob"] == summary.blob and listed[0]["flows"] == 1
    assert SIG not in json.dumps(listed)  # the metadata is counts only


async def test_restoring_a_flow_twice_writes_it_once_with_its_own_id(env) -> None:
    flow = await registry().register(CLINIC, "AppointmentCreated", URL, created_by_oid="oid-1",
                                     created_by_upn="admin@contoso.test")
    before = await flow_rows()
    await wipe()
    assert await registry().restore(flow) is True
    assert await registry().restore(flow) is False
    after = await flow_rows()
    strip = ("Timestamp",)
    assert [{k: v for k, v in e.items() if k not in strip} for e in after] == \
        [{k: v for k, v in e.items() if k not in strip} for e in before]
    assert (await registry().get_flow(CLINIC, flow.webhook_id)).callback_url == URL


async def test_a_restore_into_a_full_mailbox_is_refused(env) -> None:
    small = FlowRegistry(get_store().table(MAILBOX_TABLE), 1)
    first = await small.register(CLINIC, "AppointmentCreated", URL, created_by_oid="o", created_by_upn="u")
    other = await small.register("salon@contoso.test", "AppointmentCreated", URL, created_by_oid="o",
                                 created_by_upn="u")
    moved = type(other)(**{**other.__dict__, "mailbox": CLINIC})
    with pytest.raises(FlowLimitReached):
        await small.restore(moved)
    assert [f.webhook_id for f in await small.list_flows(CLINIC)] == [first.webhook_id]


async def test_a_dry_run_writes_nothing_and_reports_what_it_would_do(env) -> None:
    await registry().register(CLINIC, "AppointmentCreated", LOCAL, created_by_oid="o", created_by_upn="u")
    await registry().register("salon@contoso.test", "AppointmentCreated", LOCAL, created_by_oid="o",
                              created_by_upn="u")
    await backup.export_flows()
    await wipe()
    report = await backup.restore_flows(dry_run=True, limit=1)
    assert (report.restored, report.present, report.mailboxes, report.next_after) == (1, 0, [CLINIC], CLINIC)
    report = await backup.restore_flows(dry_run=True, after=report.next_after or "", limit=1)
    assert (report.mailboxes, report.next_after) == (["salon@contoso.test"], None)
    assert await flow_rows() == []


async def test_an_edited_export_is_judged_as_registrations_are(env) -> None:
    good = await registry().register(CLINIC, "AppointmentCreated", LOCAL, created_by_oid="o", created_by_upn="u")
    summary = await backup.export_flows()
    document = json.loads(await get_blobs().get(FLOW_BACKUP_CONTAINER, summary.blob))
    template = document["flows"][0]
    document["flows"] = [
        {**template, "webhookId": "11111111-1111-4111-8111-111111111111",
         "callbackUrl": f"https://attacker.example/hook?{SIG}"},  # not on the allowlist
        {**template, "webhookId": "22222222-2222-4222-8222-222222222222", "callbackUrl": f"http://10.0.0.5/x?{SIG}"},
        {**template, "webhookId": "not-a-uuid"},
        {**template, "webhookId": "33333333-3333-4333-8333-333333333333", "trigger": "Whatever"},
        {**template, "mailbox": "~index:flows", "webhookId": "44444444-4444-4444-8444-444444444444"},
    ]
    name = backup.blob_name(datetime.now(UTC) + timedelta(minutes=1))
    await get_blobs().put(FLOW_BACKUP_CONTAINER, name, json.dumps(document).encode(), {})
    await wipe()
    report = await backup.restore_flows(name)  # not a dry run: nothing passes, so no subscription is asked for
    reasons = {r["webhookId"]: r["reason"] for r in report.refused}
    assert "not on the allowlist" in reasons["11111111-1111-4111-8111-111111111111"]
    assert "22222222-2222-4222-8222-222222222222" in reasons and reasons["not-a-uuid"] and \
        reasons["33333333-3333-4333-8333-333333333333"] == "unknown trigger"
    assert reasons["44444444-4444-4444-8444-444444444444"] == "not a mailbox address"
    assert (report.restored, report.subscriptions) == (0, 0) and SIG not in json.dumps(report.body())
    assert await flow_rows() == [] and good.webhook_id not in reasons


async def test_no_export_is_a_catalogued_404(env) -> None:
    with pytest.raises(ApiError) as caught:
        await backup.restore_flows(dry_run=True)
    assert caught.value.code == "FlowExportNotFound" and caught.value.status == 404


@pytest.mark.parametrize("body", [{"dryRun": "yes"}, {"limit": 0}, {"limit": 500}, {"export": 3},
                                  {"export": "../x"}, {"after": 1}])
async def test_the_restore_route_refuses_bad_options(env, body: dict[str, Any]) -> None:
    await backup.export_flows()
    request = func.HttpRequest("POST", "http://localhost/api/backups/flows/restore", body=json.dumps(body).encode())
    answer = await backup_api.restore(request)
    assert answer.status_code == 400 and json.loads(answer.get_body())["error"]["code"] == "InvalidRequest"


async def test_a_stopped_export_fires_the_flow_export_missing_alert(env, graph_env, monkeypatch) -> None:
    from shared.adapters.settings import reset_settings_cache
    from shared.workers.renewal import sweep
    from tests.app_insights import alert_rows, capture, dimensions, fires

    with capture() as exported:
        await backup.export_flows(datetime(2026, 12, 7, 2, 30, tzinfo=UTC))
    (event,) = [e for e in exported.rows()["customEvents"] if e["name"] == "FlowsExported"]
    # The default BACKUP_SCHEDULE's next instant after that export: the next day at 02:30.
    assert dimensions(event)["nextExportAt"] == "2026-12-08T02:30:00Z"

    # An export every minute: the next one's instant is 1 minute after the last; the rule compares it with now.
    monkeypatch.setenv("BACKUP_SCHEDULE", "0 * * * * *")
    reset_settings_cache()
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    with capture() as on_time:  # the next export was due 1 h 58 min ago: not late enough yet
        await backup.export_flows(minute - timedelta(minutes=119))
    assert alert_rows("flow-export-missing", on_time) == []
    with capture() as late:  # due 2 h 2 min ago, none since
        last = await backup.export_flows(minute - timedelta(minutes=123))
    (row,) = alert_rows("flow-export-missing", late)
    assert (row["state"], row["export"]) == ("exportOverdue", last.blob)

    # No export at all: quiet while the app is younger than 36 hours (a new deployment), firing after.
    with capture() as swept:
        await sweep()  # the app's heartbeat: the renewal sweep, every 30 minutes
    swept.shift = timedelta(hours=35)
    assert not fires("flow-export-missing", alert_rows("flow-export-missing", swept))
    swept.shift = timedelta(hours=37)
    (row,) = alert_rows("flow-export-missing", swept)
    assert row["state"] == "noExport"
