"""Fan-out honours each flow's service and staff filters, for events stored with their filter keys and for
events stored before those keys existed (read from the payload): a flow filtered out gets no message at all."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.adapters.storage import MAILBOX_TABLE, get_store
from shared.records import outbox
from shared.records.flows import FlowRegistry
from testing.rows import CLINIC, add_event, appointment
from tests.delivery.conftest import fan_out, queued


async def flow(url: str, services: tuple[str, ...] = (), staff: tuple[str, ...] = ()) -> str:
    registry = FlowRegistry(get_store().table(MAILBOX_TABLE), 5)
    registered = await registry.register(CLINIC, "AppointmentCreated", url, created_by_oid="oid-admin",
                                         created_by_upn="admin@contoso.test", service_ids=services,
                                         staff_member_ids=staff)
    return registered.webhook_id


def payload(number: int, service: str, staff: list[str]) -> dict:
    return {**appointment(number), "ServiceId": service,
            "StaffMembers": [{"DisplayName": s, "EmailAddress": "", "Id": s} for s in staff]}


async def test_filtered_flows_get_only_their_events_old_rows_included(env, receiver) -> None:
    everything = await flow(receiver.url("all"))
    bikes = await flow(receiver.url("bikes"), services=("svc-bikes",))
    repairs = await flow(receiver.url("repairs"), services=("svc-repairs",))
    sam_on_bikes = await flow(receiver.url("sam"), services=("svc-bikes",), staff=("staff-sam",))
    # Stored today: the row carries its filter keys.
    operation = outbox.event_operation(CLINIC, "e-new", "Created", "appt-1", payload(1, "svc-bikes", ["staff-sam"]),
                                       datetime.now(UTC))
    await get_store().table(MAILBOX_TABLE).upsert_entity(operation[1], **operation[2])
    assert await fan_out(CLINIC, ["e-new"]) == 3
    assert sorted(m["flowId"] for m in await queued()) == sorted([everything, bikes, sam_on_bikes])
    # Stored before the filter keys existed: they come from the payload.
    old = await add_event(number=2, payload=payload(2, "svc-repairs", ["staff-kim"]))
    row = await get_store().table(MAILBOX_TABLE).get_entity(CLINIC, outbox.outbox_row_key(old))
    assert "ServiceIds" not in row
    assert await fan_out(CLINIC, [old]) == 2
    assert sorted(m["flowId"] for m in (await queued())[3:]) == sorted([everything, repairs])
    row = await get_store().table(MAILBOX_TABLE).get_entity(CLINIC, outbox.outbox_row_key(old))
    assert row["FlowCount"] == 2  # filtered out is not a delivery

