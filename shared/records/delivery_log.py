"""The delivery log: one row per delivery of an event to a flow, what a flow maker lists from Power Automate.

A row holds ids and statuses only, never customer data or a callback URL: the event id, the flow, the trigger,
the appointment's Graph id, the ``State`` (``delivered`` | ``retrying`` | ``deadLettered`` | ``filteredOut`` |
``replayed``: a dead letter replayed since, whose replay is a delivery of its own), the attempts made, the last
HTTP status (0: no answer) and the times. The properties are listed in ``docs/architecture.md``.

Keys (table ``deliverylog``): PartitionKey ``<yyyymmdd>:<mailbox>`` (the UTC day of the delivery's first
attempt), RowKey ``<flowId>:<inverted first attempt, ms>:<eventId>``. So:

- one delivery is one row: every attempt of it carries the same ``firstAttemptAt`` (the ``deliveries``
  message's), and its outcome is an upsert over the row (a retry overwrites ``retrying`` with what followed);
- a flow's deliveries of a day are one RowKey range, newest first (``page`` walks the days back from today);
- pruning deletes whole day partitions: the partitions older than ``DELIVERY_LOG_RETENTION_DAYS`` are exactly
  the keys below one PartitionKey, a range query that reads nothing else (``prune``).

Writing never fails a delivery (a failed write is a warning): a flow must not be posted an event again because
its log line could not be written. Two ways in:

- ``record``: one upsert now, for the states a later attempt may overwrite or a flow maker must see however the
  process ends (``retrying``, written before the retry is queued; ``deadLettered``);
- ``note`` / ``note_filtered``: written behind (``FLUSH_SECONDS``), batched per partition, for the final states
  of the hot path (``delivered``; ``filteredOut`` at fan-out). No later state can follow them, so a batch never
  overwrites a newer row; what a killed process held is lost, as the flows' health counters are (telemetry has
  every delivery). The 5 deliveries of an event to 5 flows then cost one transaction, not 5, and the delivery
  does not wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypedDict

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient

from shared.adapters.per_loop import PerLoop
from shared.adapters.storage import DELIVERY_LOG_TABLE, TRANSACTION_MAX_OPERATIONS, get_store
from shared.records.mailbox import iso, utc

log = logging.getLogger(__name__)

DELIVERED, RETRYING, DEAD_LETTERED, FILTERED_OUT, REPLAYED = (
    "delivered", "retrying", "deadLettered", "filteredOut", "replayed")
STATES = (DELIVERED, RETRYING, DEAD_LETTERED, FILTERED_OUT, REPLAYED)
_INVERT = 10**13 - 1  # milliseconds since 1970 stay under 13 digits until the year 2286
# A delivered or filtered-out row is written within this many seconds, batched with the others noted meanwhile.
FLUSH_SECONDS = 1.0
# A prune run deletes at most this many rows (the rest in the next run): one timer invocation stays short.
PRUNE_MAX_ROWS = 5_000


class DeliveryListing(TypedDict):
    """A delivery as *List deliveries of a flow* shows it."""

    eventId: str
    trigger: str
    appointmentId: str
    state: str
    attempts: int
    lastStatus: int
    firstAttemptAt: str
    lastAttemptAt: str
    isTest: bool


@dataclass(frozen=True)
class Delivery:
    """Who, what and when of one log row (the outcome goes beside it)."""

    mailbox: str
    flow_id: str
    event_id: str
    first_attempt_at: datetime
    trigger: str
    appointment_id: str
    is_test: bool = False


def table() -> TableClient:
    return get_store().table(DELIVERY_LOG_TABLE)


def _day(moment: date) -> str:
    return moment.strftime("%Y%m%d")


def partition(mailbox: str, first_attempt_at: datetime) -> str:
    return f"{_day(first_attempt_at.astimezone(UTC).date())}:{mailbox}"


def _inverted(moment: datetime) -> str:
    return f"{_INVERT - int(moment.timestamp() * 1000):013d}"


def row_key(flow_id: str, first_attempt_at: datetime, event_id: str) -> str:
    return f"{flow_id}:{_inverted(first_attempt_at)}:{event_id}"


def _entity(delivery: Delivery, state: str, attempts: int, status: int, at: datetime) -> dict[str, Any]:
    return {"PartitionKey": partition(delivery.mailbox, delivery.first_attempt_at),
            "RowKey": row_key(delivery.flow_id, delivery.first_attempt_at, delivery.event_id),
            "EventId": delivery.event_id, "FlowId": delivery.flow_id, "Trigger": delivery.trigger,
            "AppointmentId": delivery.appointment_id, "State": state, "Attempts": attempts, "LastStatus": status,
            "FirstAttemptAt": delivery.first_attempt_at, "LastAttemptAt": at, "IsTest": delivery.is_test}


async def record(delivery: Delivery, state: str, *, attempts: int, status: int) -> bool:
    """Write the delivery's row as of now (one upsert, replacing what an earlier attempt wrote). False (and a
    warning) when storage refused: the log never fails the delivery it describes."""
    try:
        await table().upsert_entity(_entity(delivery, state, attempts, status, datetime.now(UTC)),
                                    mode=UpdateMode.REPLACE)
    except Exception as error:
        log.warning("delivery log: %s of event %s to flow %s not written (%s)", state, delivery.event_id,
                    delivery.flow_id, type(error).__name__)
        return False
    return True


def note(delivery: Delivery, state: str, *, attempts: int, status: int) -> None:
    """The delivery's final row (``delivered``), written behind: within ``FLUSH_SECONDS``, together with the
    other rows noted meanwhile, one transaction per partition (a mailbox's day)."""
    _batches.get().note(_entity(delivery, state, attempts, status, datetime.now(UTC)))


def note_filtered(mailbox: str, event_id: str, *, trigger: str, appointment_id: str, flow_ids: Iterable[str],
                  at: datetime, is_test: bool = False) -> None:
    """The rows of the flows whose filters left the event out, written behind as ``note``'s."""
    for flow_id in flow_ids:
        _batches.get().note(_entity(Delivery(mailbox, flow_id, event_id, at, trigger, appointment_id, is_test),
                                    FILTERED_OUT, 0, 0, at))


async def flush() -> None:
    """Write every row noted so far on this event loop (tests, benchmarks)."""
    await _batches.get().flush()


class _Batches:
    """One event loop's rows not yet written (by partition, then RowKey: a later note of a row replaces an
    earlier one) and the task writing them."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}
        self.task: asyncio.Task[None] | None = None
        self.now = asyncio.Event()

    def note(self, entity: dict[str, Any]) -> None:
        self.rows.setdefault(entity["PartitionKey"], {})[entity["RowKey"]] = entity
        if self.task is None or self.task.done():
            self.now = asyncio.Event()
            self.task = asyncio.get_running_loop().create_task(self._write_behind(self.now))

    async def flush(self) -> None:
        if self.task is not None:
            self.now.set()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _write_behind(self, now: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(now.wait(), FLUSH_SECONDS)
        # Rows noted while a write is in flight go out right after it; between the last check and the task's
        # end nothing else runs (no await), so a new row always finds a writer or starts one.
        while self.rows:
            rows, self.rows = self.rows, {}
            await asyncio.gather(*(_write(partition, list(entities.values()))
                                   for partition, entities in rows.items()))


_batches: PerLoop[_Batches] = PerLoop(_Batches)


async def _write(partition: str, entities: list[dict[str, Any]]) -> None:
    """Upsert one partition's rows, 100 to a transaction; a failure is logged (the log never fails a delivery,
    and what a process held when it died is lost with it, as the flows' health counters are)."""
    for start in range(0, len(entities), TRANSACTION_MAX_OPERATIONS):
        chunk = entities[start:start + TRANSACTION_MAX_OPERATIONS]
        try:
            await table().submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in chunk])
        except Exception as error:
            log.warning("delivery log: %d row(s) of %s not written (%s)", len(chunk), partition,
                        type(error).__name__)


async def mark_replayed(mailbox: str, flow_id: str, event_id: str, first_attempt_at: datetime) -> None:
    """A dead letter was replayed: its row says so (the replay is a new delivery with a row of its own).
    Nothing when the row is gone (pruned); a storage failure is only logged."""
    try:
        await table().update_entity(
            {"PartitionKey": partition(mailbox, first_attempt_at),
             "RowKey": row_key(flow_id, first_attempt_at, event_id), "State": REPLAYED}, mode=UpdateMode.MERGE)
    except ResourceNotFoundError:
        return
    except Exception as error:
        log.warning("delivery log: replay of event %s to flow %s not noted (%s)", event_id, flow_id,
                    type(error).__name__)


def listing(entity: Any) -> DeliveryListing:
    first, last = utc(entity.get("FirstAttemptAt")), utc(entity.get("LastAttemptAt"))
    return {"eventId": str(entity.get("EventId", "")), "trigger": str(entity.get("Trigger", "")),
            "appointmentId": str(entity.get("AppointmentId", "")), "state": str(entity.get("State", "")),
            "attempts": int(entity.get("Attempts", 0)), "lastStatus": int(entity.get("LastStatus", 0)),
            "firstAttemptAt": iso(first) if first else "", "lastAttemptAt": iso(last) if last else "",
            "isTest": bool(entity.get("IsTest"))}


def oldest_day(now: datetime, retention_days: int) -> date:
    """The first day whose partitions are kept: the log covers at least ``retention_days`` days back."""
    return (now.astimezone(UTC) - timedelta(days=retention_days)).date()


# A page's cursor: "<yyyymmdd>.<the RowKey after the flow id>" (URL-safe: digits, hex, '.', ':').
_CURSOR = re.compile(r"([0-9]{8})\.([0-9]{13}:[A-Za-z0-9-]{1,64})")
def cursor(entity: Any) -> str:
    day = str(entity["PartitionKey"]).split(":", 1)[0]
    return f"{day}.{str(entity['RowKey']).split(':', 1)[1]}"


def parse_cursor(raw: str) -> tuple[date, str] | None:
    """(day, RowKey suffix) of a cursor ``cursor`` made; None when it is not one."""
    match = _CURSOR.fullmatch(raw)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC).date(), match.group(2)
    except ValueError:
        return None


async def page(mailbox: str, flow_id: str, *, after: tuple[date, str] | None, top: int, now: datetime,
               retention_days: int) -> tuple[list[Any], bool]:
    """Up to ``top`` rows of the flow's deliveries, newest first (by first attempt), after the cursor ``after``;
    and whether more follow. One query per day partition looked at (at most ``retention_days + 1``)."""
    day = after[0] if after else now.astimezone(UTC).date()
    oldest = oldest_day(now, retention_days)
    rows: list[Any] = []
    while day >= oldest and len(rows) <= top:
        query = "PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi"
        lo = f"{flow_id}:{after[1]}" if after and day == after[0] else f"{flow_id}:"
        parameters = {"pk": f"{_day(day)}:{mailbox}", "lo": lo, "hi": f"{flow_id};"}
        async for entity in table().query_entities(query, parameters=parameters,
                                                   results_per_page=top + 1 - len(rows)):
            rows.append(entity)
            if len(rows) > top:
                break
        day -= timedelta(days=1)
    return rows[:top], len(rows) > top


async def prune(now: datetime, retention_days: int, limit: int = PRUNE_MAX_ROWS) -> int:
    """Delete the rows of every day partition older than the retention (whole partitions, ``limit`` rows at
    most per call); returns how many. A range query on PartitionKey: it reads the expired rows and nothing
    else, one request when there are none."""
    below = _day(oldest_day(now, retention_days))
    by_partition: dict[str, list[str]] = defaultdict(list)
    found = 0
    async for entity in table().query_entities("PartitionKey lt @below", parameters={"below": below},
                                               select=["PartitionKey", "RowKey"], results_per_page=1000):
        by_partition[entity["PartitionKey"]].append(entity["RowKey"])
        found += 1
        if found >= limit:
            break
    deleted = 0
    for key, row_keys in by_partition.items():
        for start in range(0, len(row_keys), TRANSACTION_MAX_OPERATIONS):
            chunk = row_keys[start:start + TRANSACTION_MAX_OPERATIONS]
            try:
                await table().submit_transaction([("delete", {"PartitionKey": key, "RowKey": rk}) for rk in chunk])
            except TableTransactionError:  # a row already gone (two sweeps): the next run reads what is left
                continue
            deleted += len(chunk)
    return deleted
