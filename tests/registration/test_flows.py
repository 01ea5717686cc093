"""Registrations in Table storage (real Azurite): the flow limit holds under concurrency."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.adapters.storage import MAILBOX_TABLE
from shared.endpoints.flow_webhooks import answer_for
from shared.records.flows import QUOTA_ROW, FlowLimitReached, FlowRegistry, TooManyConcurrentChanges, Unregistered

SECRET_URL = "https://prod-1.westeurope.logic.azure.com/workflows/w1/triggers/manual/paths/invoke?sig=TOP-SECRET"


@pytest.fixture
async def table(azurite) -> AsyncIterator[TableClient]:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    await service.create_table_if_not_exists(MAILBOX_TABLE)
    yield service.get_table_client(MAILBOX_TABLE)
    await service.close()


@pytest.fixture
def business() -> str:
    return f"clinic-{uuid.uuid4().hex[:8]}@contoso.test"


def registry(table: TableClient, limit: int = 5, serialize_locally: bool = False) -> FlowRegistry:
    # Without the in-process queue by default: every concurrent call then behaves like a call on another
    # instance, so the ETag-guarded transactions alone must keep the count exact.
    return FlowRegistry(table, limit, serialize_locally=serialize_locally)


async def register(reg: FlowRegistry, business: str, trigger: str = "AppointmentCreated", n: int = 0):
    return await reg.register(business, trigger, f"{SECRET_URL}-{n}", created_by_oid=f"oid-{n}",
                              created_by_upn=f"admin{n}@contoso.test")


async def flow_rows(table: TableClient, business: str) -> list[dict]:
    return [e async for e in table.query_entities("PartitionKey eq @pk and RowKey ge 'flow:' and RowKey lt 'flow;'",
                                                  parameters={"pk": business})]


async def quota(table: TableClient, business: str) -> int:
    return (await table.get_entity(business, QUOTA_ROW))["FlowCount"]


async def test_register_stores_the_flow(table: TableClient, business: str) -> None:
    reg = registry(table)
    flow = await register(reg, business, "AppointmentUpdated")
    uuid.UUID(flow.webhook_id)
    stored = await reg.get_flow(business, flow.webhook_id)
    assert stored == flow
    assert stored.callback_url == f"{SECRET_URL}-0"
    assert await quota(table, business) == 1
    [listing] = [f.listing() for f in await reg.list_flows(business)]
    assert listing["webhookId"] == flow.webhook_id and listing["trigger"] == "AppointmentUpdated"
    assert listing["callbackHostPath"] == "https://prod-1.westeurope.logic.azure.com/workflows/w1/triggers/manual/paths/invoke"
    assert "sig=" not in str(listing) and "SECRET" not in str(listing) and "SECRET" not in repr(flow)
    assert listing["createdByUpn"] == "admin0@contoso.test" and listing["createdDateTime"].endswith("Z")
    assert listing["deliveredCount"] == 0 and listing["lastDeliveryDateTime"] is None


async def test_fifty_parallel_registrations_yield_exactly_the_limit(table: TableClient, business: str) -> None:
    reg = registry(table, limit=5)
    results = await asyncio.gather(*(register(reg, business, n=i) for i in range(50)), return_exceptions=True)
    created = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(created) == 5
    assert len(refused) == 45
    assert all(isinstance(r, FlowLimitReached) for r in refused)
    answers = [answer_for(r) for r in refused]  # what the registration endpoint answers
    assert all(a.code == "FlowLimitReached" and a.status == 429 for a in answers)
    assert all(r.count == 5 and r.limit == 5 and a.details["count"] == 5 and a.details["limit"] == 5
               for r, a in zip(refused, answers, strict=True))
    rows = await flow_rows(table, business)
    assert sorted(r["WebhookId"] for r in rows) == sorted(f.webhook_id for f in created)
    assert await quota(table, business) == 5
    assert reg.conflicts > 0  # the race really happened: writers lost ETag races and retried


async def test_in_process_queue_avoids_conflicts_and_keeps_the_limit(table: TableClient, business: str) -> None:
    reg = registry(table, limit=5, serialize_locally=True)
    results = await asyncio.gather(*(register(reg, business, n=i) for i in range(50)), return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 5
    assert all(isinstance(r, FlowLimitReached) for r in results if isinstance(r, BaseException))
    assert reg.conflicts == 0 and len(await flow_rows(table, business)) == 5


async def test_instances_with_and_without_the_queue_race_safely(table: TableClient, business: str) -> None:
    queued, unqueued = registry(table, serialize_locally=True), registry(table)
    results = await asyncio.gather(*(register(queued if i % 2 else unqueued, business, n=i) for i in range(40)),
                                   return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 5
    assert len(await flow_rows(table, business)) == 5 and await quota(table, business) == 5


async def test_the_limit_is_per_mailbox(table: TableClient, business: str) -> None:
    reg = registry(table, limit=2)
    other = f"other-{business}"
    await asyncio.gather(*(register(reg, business, n=i) for i in range(2)))
    with pytest.raises(FlowLimitReached):
        await register(reg, business)
    await register(reg, other)
    assert len(await reg.list_flows(other)) == 1


async def test_the_limit_is_a_setting(table: TableClient, business: str) -> None:
    reg = registry(table, limit=7)
    results = await asyncio.gather(*(register(reg, business, n=i) for i in range(12)), return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 7
    assert len(await flow_rows(table, business)) == 7


async def test_delete_is_idempotent_and_reports_the_last_flow(table: TableClient, business: str) -> None:
    reg = registry(table)
    first, second = await register(reg, business, n=1), await register(reg, business, n=2)
    assert await reg.unregister(business, first.webhook_id) == Unregistered(removed=True, remaining=1)
    assert await reg.unregister(business, first.webhook_id) == Unregistered(removed=False, remaining=1)
    result = await reg.unregister(business, second.webhook_id)
    assert result == Unregistered(removed=True, remaining=0) and result.mailbox_now_empty
    assert await reg.unregister(business, second.webhook_id) == Unregistered(removed=False, remaining=0)
    assert await reg.unregister(f"never-{business}", str(uuid.uuid4())) == Unregistered(removed=False, remaining=0)
    assert await flow_rows(table, business) == [] and await quota(table, business) == 0


async def test_parallel_deletes(table: TableClient, business: str) -> None:
    reg = registry(table)
    flows = await asyncio.gather(*(register(reg, business, n=i) for i in range(5)))
    # Every flow deleted three times at once (Power Automate retries deletes).
    results = await asyncio.gather(*(reg.unregister(business, f.webhook_id) for f in flows for _ in range(3)))
    assert sum(r.removed for r in results) == 5
    assert sum(r.removed and r.mailbox_now_empty for r in results) == 1  # exactly one caller saw the last go
    assert await flow_rows(table, business) == [] and await quota(table, business) == 0


async def test_register_again_after_delete(table: TableClient, business: str) -> None:
    reg = registry(table)
    flows = await asyncio.gather(*(register(reg, business, n=i) for i in range(5)))
    with pytest.raises(FlowLimitReached):
        await register(reg, business)
    await reg.unregister(business, flows[0].webhook_id)
    again = await register(reg, business, n=9)
    assert again.webhook_id not in {f.webhook_id for f in flows}
    with pytest.raises(FlowLimitReached):
        await register(reg, business)
    assert len(await flow_rows(table, business)) == 5 and await quota(table, business) == 5


async def test_registrations_and_deletions_racing_keep_the_count_exact(table: TableClient, business: str) -> None:
    reg = registry(table)
    flows = await asyncio.gather(*(register(reg, business, n=i) for i in range(3)))
    results = await asyncio.gather(
        *(reg.unregister(business, f.webhook_id) for f in flows),
        *(register(reg, business, n=10 + i) for i in range(10)),
        return_exceptions=True,
    )
    unexpected = [r for r in results if isinstance(r, BaseException)
                  and not isinstance(r, FlowLimitReached)]
    assert unexpected == []
    rows = await flow_rows(table, business)
    assert len(rows) == await quota(table, business) <= 5
    assert len(rows) >= 2  # the 3 deletions freed room; at least the first registrations got in


async def test_other_rows_in_the_partition_are_not_flows(table: TableClient, business: str) -> None:
    reg = registry(table)
    await table.create_entity({"PartitionKey": business, "RowKey": "snapshot:abc", "Kind": "snapshot"})
    await table.create_entity({"PartitionKey": business, "RowKey": "mailbox", "Kind": "mailbox"})
    flow = await register(reg, business)
    assert [f.webhook_id for f in await reg.list_flows(business)] == [flow.webhook_id]


async def test_unknown_trigger_is_a_programming_error(table: TableClient, business: str) -> None:
    with pytest.raises(ValueError, match="trigger"):
        await register(registry(table), business, "AppointmentExploded")


def test_the_registry_refusals_keep_their_answers() -> None:
    """The endpoint's answers to the registry's refusals: the catalogue's codes, statuses and details."""
    limit = answer_for(FlowLimitReached("clinic@contoso.test", 5, 5))
    assert (limit.code, limit.status) == ("FlowLimitReached", 429)
    assert limit.details == {"business": "clinic@contoso.test", "count": 5, "limit": 5}
    busy = answer_for(TooManyConcurrentChanges("clinic@contoso.test"))
    assert (busy.code, busy.status, busy.details) == ("TooManyConcurrentChanges", 503,
                                                       {"business": "clinic@contoso.test"})
