"""Flow and outbox rows written as the registration API and the reconcile write them (state pending), on
the storage the app's settings name: what delivery tests and the delivery benchmark start from."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from shared.adapters.storage import MAILBOX_TABLE, get_store
from shared.records import outbox
from shared.records.flows import Flow, FlowRegistry
from shared.records.outbox import TRIGGER_OF_CHANGE, event_id, outbox_row_key, payload_properties

CLINIC = "clinic@contoso.test"
ZERO_GUID = "00000000-0000-0000-0000-000000000000"


async def add_flow(url: str, trigger: str = "AppointmentCreated", mailbox: str = CLINIC) -> Flow:
    registry = FlowRegistry(get_store().table(MAILBOX_TABLE), 5)
    return await registry.register(mailbox, trigger, url, created_by_oid="oid-admin",
                                   created_by_upn="admin@contoso.test")


def appointment(number: int = 1) -> dict[str, Any]:
    """A payload as the reconcile stores it today (a staff-made appointment: the zero GUID as its ids)."""
    return {"Id": ZERO_GUID, "SelfServiceAppointmentId": ZERO_GUID, "AppointmentId": f"appt-{number}",
            "CustomerName": "Aiko 山田", "ServiceName": "Consultation", "Duration": 30, "StaffMembers": [],
            "Customers": [], "ChangedFields": [], "IsTest": False, "CancelledBy": "",
            "Previous": {"Duration": 0, "EndTime": "", "ServiceId": "", "ServiceName": "", "StaffMembers": [],
                         "StartTime": ""}}


async def add_event(change_type: str = "Created", number: int = 1, mailbox: str = CLINIC,
                    payload: dict[str, Any] | None = None, **extra: Any) -> str:
    """An outbox row as the reconcile commits it (state pending)."""
    data = payload if payload is not None else appointment(number)
    eid = event_id(mailbox, f"appt-{number}", change_type, f"v-{number}-{time.time_ns()}")
    await outbox.before_writing(mailbox)
    await get_store().table(MAILBOX_TABLE).upsert_entity({
        "PartitionKey": mailbox, "RowKey": outbox_row_key(eid), "EventId": eid,
        "Trigger": TRIGGER_OF_CHANGE[change_type], "ChangeType": change_type, "AppointmentId": f"appt-{number}",
        "DetectedAt": datetime.now(UTC), "State": "pending", **payload_properties(data), **extra})
    return eid
