"""The due index of the time-relative triggers: one row per (appointment, flow, instant) a reminder is due.

*When an appointment is about to start* and *When an appointment has ended* fire at an instant derived from
the appointment's time and the flow's offset. The timer (``shared.workers.reminders``) must find the rows due
now without reading the appointments that are not due, so the rows are partitioned by the minute they fire:

- PartitionKey ``~due:<YYYYMMDDHHMM>``: the UTC minute of ``FireAt`` (``~`` sorts after every mailbox address's
  first character, and ``~due:`` before ``~index:``, so the range the timer reads holds due rows only);
- RowKey: the first 32 hex digits of SHA-256 of (mailbox, appointment id, flow id, scheduled instant), so
  writing the same reminder twice writes one row;
- ``Mailbox``, ``AppointmentId``, ``FlowId``, ``Trigger``, ``ScheduledFor`` (the instant it is due: start minus
  the offset, or end plus it), ``FireAt`` (when the timer fires it: ``ScheduledFor``, or, for an instant already
  past when the app learned the appointment's time, that moment: ``shared.services.reminders``), ``WrittenAt``.

Ids only, no customer data. The timer reads one range of partitions (``due_by``: PartitionKey from ``~due:`` up
to the minute of its horizon, ``FireAt`` up to the horizon): the rows of the minutes to come are in later
partitions and are not read, whatever their number. A row is deleted once fired (or found stale), so the range
holds only what is due and not yet done (``bench/reminders.py`` measures it).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.records.mailbox import mailbox_table, utc

DUE_PREFIX = "~due:"
WRITE_CONCURRENCY = 8
BATCH = 100  # Table transactions hold at most 100 operations, all of one partition


def partition(moment: datetime) -> str:
    """The due partition of ``moment``: its UTC minute."""
    return f"{DUE_PREFIX}{moment.astimezone(UTC):%Y%m%d%H%M}"


@dataclass(frozen=True)
class DueReminder:
    mailbox: str
    appointment_id: str
    flow_id: str
    trigger: str
    scheduled_for: datetime
    fire_at: datetime
    # The keys the row was read under (``due_by``): what deletes it, whatever storage made of its times.
    stored: tuple[str, str] | None = field(default=None, compare=False)

    @property
    def keys(self) -> tuple[str, str]:
        return self.stored or (partition(self.fire_at), self.row_key)

    @property
    def row_key(self) -> str:
        instant = self.scheduled_for.astimezone(UTC).isoformat()
        text = f"{self.mailbox}\n{self.appointment_id}\n{self.flow_id}\n{instant}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def entity(self) -> dict[str, Any]:
        return {"PartitionKey": partition(self.fire_at), "RowKey": self.row_key, "Mailbox": self.mailbox,
                "AppointmentId": self.appointment_id, "FlowId": self.flow_id, "Trigger": self.trigger,
                "ScheduledFor": self.scheduled_for, "FireAt": self.fire_at, "WrittenAt": datetime.now(UTC)}

    @classmethod
    def from_entity(cls, entity: Any) -> DueReminder:
        return cls(str(entity["Mailbox"]), str(entity["AppointmentId"]), str(entity["FlowId"]),
                   str(entity["Trigger"]), utc(entity["ScheduledFor"]) or datetime.now(UTC),
                   utc(entity["FireAt"]) or datetime.now(UTC), (str(entity["PartitionKey"]), str(entity["RowKey"])))


def _by_partition(reminders: Iterable[DueReminder]) -> list[list[DueReminder]]:
    groups: dict[str, dict[str, DueReminder]] = defaultdict(dict)
    for reminder in reminders:
        groups[partition(reminder.fire_at)][reminder.row_key] = reminder  # one operation per row
    return [batch[i:i + BATCH] for batch in (list(g.values()) for g in groups.values())
            for i in range(0, len(batch), BATCH)]


async def put(reminders: Iterable[DueReminder]) -> int:
    """Write (upsert) the rows: one transaction per partition and 100 rows. Returns how many."""
    batches = _by_partition(reminders)
    limit = asyncio.Semaphore(WRITE_CONCURRENCY)
    table = mailbox_table()

    async def write(batch: list[DueReminder]) -> None:
        async with limit:
            if len(batch) == 1:
                await table.upsert_entity(batch[0].entity(), mode=UpdateMode.REPLACE)
            else:
                await table.submit_transaction([("upsert", r.entity(), {"mode": UpdateMode.REPLACE}) for r in batch])

    await asyncio.gather(*(write(batch) for batch in batches))
    return sum(len(batch) for batch in batches)


async def delete(reminders: Iterable[DueReminder]) -> None:
    """Delete the rows (gone already is fine)."""
    table = mailbox_table()

    async def one(reminder: DueReminder) -> None:
        try:
            await table.delete_entity(*reminder.keys)
        except ResourceNotFoundError:
            pass

    limit = asyncio.Semaphore(WRITE_CONCURRENCY)

    async def bounded(reminder: DueReminder) -> None:
        async with limit:
            await one(reminder)

    await asyncio.gather(*(bounded(r) for r in reminders))


async def due_by(horizon: datetime, limit: int) -> list[DueReminder]:
    """The rows to fire by ``horizon`` (overdue ones included, earliest minutes first), at most ``limit``: one
    range of partitions, ``~due:`` to the horizon's minute."""
    query = "PartitionKey ge @lo and PartitionKey le @hi and FireAt le @horizon"
    found: list[DueReminder] = []
    async for entity in mailbox_table().query_entities(
            query, parameters={"lo": DUE_PREFIX, "hi": partition(horizon), "horizon": horizon},
            results_per_page=min(limit, 1000)):
        found.append(DueReminder.from_entity(entity))
        if len(found) >= limit:
            break
    return found
