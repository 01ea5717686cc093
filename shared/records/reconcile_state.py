"""What the reconcile worker keeps per mailbox: the ``sync`` row, ``snap:`` snapshots, ``cancelreason:`` rows.

- ``sync``: ``LeaseUntil`` (one reconcile per mailbox at a time), ``CoveredUpTo`` (start of the last
  completed whole-horizon reconcile: hints received before it are already covered), ``BaselineAt`` /
  ``BaselineDone`` (the first reconcile after watching began records silently), ``StartedAt``,
  ``CommittedAt``. Every commit of the reconcile moves this row under its ETag, in the same transaction
  as the snapshot and outbox rows it writes: two workers can never both commit the same change.
- ``snap:<appointmentId>``: the appointment as last seen (fingerprints, times, the payload).
- ``cancelreason:<appointmentId>``: a reason given through our cancel API, until the Cancelled event
  carries it.

A reconcile's writes go through ``transactions`` (packed within Table storage's limits as it counts them,
an appointment's snapshot, cancel reason and event always in one transaction) and ``commit_isolating``
(should storage refuse one appointment's rows, the others commit without them: one bad appointment never
blocks its mailbox).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode

from shared.adapters.storage import TRANSACTION_MAX_BYTES, TRANSACTION_MAX_OPERATIONS, entity_size
from shared.contracts.graph_times import parse_graph_datetime
from shared.records.mailbox import PREFIX_FILTER, mailbox_table, prefix_bounds, row, rows_with_prefix
from shared.records.outbox import payload_properties, read_payload

log = logging.getLogger(__name__)

SYNC_ROW = "sync"
SNAPSHOT_PREFIX = "snap:"
CANCEL_REASON_PREFIX = "cancelreason:"
NO_LEASE = datetime(1970, 1, 1, tzinfo=UTC)  # a merge cannot remove a property; an expired lease is no lease
RELEASE_RETRY_DELAYS = (0.5, 1, 2, 4, 8)


class LeaseLost(Exception):
    """Another worker took the mailbox over (our lease ran out); our uncommitted work is void."""


class Refused(Exception):
    """Storage refused a transaction for what it holds (a 4xx other than the ETag's 412): retrying it as is
    cannot succeed."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"{status} {code}")
        self.status, self.code = status, code


# ---- the sync row ---------------------------------------------------------------------------------

def _new_sync_row(mailbox: str) -> dict[str, Any]:
    return row(mailbox, SYNC_ROW, BaselineDone=False, BaselineAt=datetime.now(UTC))


async def start_watching(mailbox: str) -> None:
    """Mark when watching the mailbox began, if nothing is recorded yet: the first reconcile's baseline
    then records older appointments silently and announces anything created after this. A mailbox that
    already has a sync row keeps it (a re-created subscription: the snapshot is still good), unless
    ``forget_mailbox`` marked it unwatched: then watching starts afresh."""
    table = mailbox_table()
    for _ in range(5):  # another writer in between (a release, a reconcile): look again
        try:
            await table.create_entity(_new_sync_row(mailbox))
            return
        except ResourceExistsError:
            pass
        try:
            current = await table.get_entity(mailbox, SYNC_ROW)
            if not is_unwatched(current):
                return
            await table.update_entity(_new_sync_row(mailbox), mode=UpdateMode.REPLACE,
                                      etag=current.metadata["etag"], match_condition=MatchConditions.IfNotModified)
            return
        except ResourceNotFoundError:
            continue
        except HttpResponseError as error:
            if error.status_code != 412:
                raise
    raise RuntimeError(f"the sync row of {mailbox} kept changing while watching began")


def is_unwatched(sync: Any) -> bool:
    """Whether the sync row is ``forget_mailbox``'s marker: no flow watches the mailbox."""
    return bool(sync.get("Unwatched"))


async def sync_row(mailbox: str) -> Any:
    """The mailbox's sync row, created (as by ``start_watching``) if it is missing."""
    try:
        return await mailbox_table().get_entity(mailbox, SYNC_ROW)
    except ResourceNotFoundError:
        await start_watching(mailbox)
        return await mailbox_table().get_entity(mailbox, SYNC_ROW)


async def take_lease(mailbox: str, sync: Any, now: datetime, lease: timedelta) -> str | None:
    """Take the reconcile lease from the row as read. Its new ETag, or None when another worker moved it."""
    try:
        result = await mailbox_table().update_entity(
            row(mailbox, SYNC_ROW, LeaseUntil=now + lease, StartedAt=now),
            mode=UpdateMode.MERGE, etag=sync.metadata["etag"], match_condition=MatchConditions.IfNotModified)
    except HttpResponseError as error:
        if error.status_code == 412:
            return None
        raise
    return result["etag"]


async def renew_lease(mailbox: str, etag: str, lease: timedelta) -> str | None:
    """Extend our lease (ETag: still ours). The new ETag, or None when another worker took the mailbox."""
    try:
        result = await mailbox_table().update_entity(
            row(mailbox, SYNC_ROW, LeaseUntil=datetime.now(UTC) + lease), mode=UpdateMode.MERGE, etag=etag,
            match_condition=MatchConditions.IfNotModified)
    except HttpResponseError as error:
        if error.status_code in (404, 412):
            return None
        raise
    return result["etag"]


async def release_lease(mailbox: str, etag: str) -> None:
    """Best effort, retried briefly: storage that just failed us is often back within seconds."""
    last: Exception | None = None
    for delay in RELEASE_RETRY_DELAYS:
        try:
            await mailbox_table().update_entity(row(mailbox, SYNC_ROW, LeaseUntil=NO_LEASE), mode=UpdateMode.MERGE,
                                                etag=etag, match_condition=MatchConditions.IfNotModified)
            return
        except HttpResponseError as error:
            if error.status_code in (404, 412):
                return  # gone, or someone else's lease now
            last = error
        except Exception as error:
            last = error
        await asyncio.sleep(delay)
    # Still down: the lease expires by itself; hints wait (deferred), none are lost.
    log.warning("could not release the reconcile lease of %s (%s)", mailbox, type(last).__name__)


async def commit(mailbox: str, operations: list[tuple[Any, ...]], etag: str, sync: Mapping[str, Any]) -> str:
    """One transaction: ``operations`` and a merge of ``sync`` into the sync row under ``etag``.

    Returns the sync row's new ETag; ``LeaseLost`` when it moved (another worker took over), ``Refused``
    when storage refused the operations themselves."""
    ops = [*operations, ("update", row(mailbox, SYNC_ROW, CommittedAt=datetime.now(UTC), **sync),
                         {"mode": UpdateMode.MERGE, "etag": etag, "match_condition": MatchConditions.IfNotModified})]
    try:
        results = await mailbox_table().submit_transaction(ops)
    except TableTransactionError as error:
        if error.status_code == 412 or "UpdateConditionNotSatisfied" in str(error):
            raise LeaseLost(mailbox) from None
        if error.status_code is not None and 400 <= error.status_code < 500 and error.status_code != 408:
            raise Refused(error.status_code, str(error.error_code or "")) from error
        raise
    return results[-1]["etag"]


# ---- transactions within Table storage's limits ------------------------------------------------------

OPERATION_FRAMING_BYTES = 1024  # multipart headers of one operation in a transaction request
# The sync row's operation, and a margin, come off the transaction's limits.
MAX_TRANSACTION_OPERATIONS = TRANSACTION_MAX_OPERATIONS - 1  # Azurite crashes above 100
MAX_TRANSACTION_BYTES = TRANSACTION_MAX_BYTES - 512 * 1024


def _appointment_of(operation: tuple[Any, ...]) -> str:
    """The appointment a reconcile operation belongs to (its snapshot, cancel reason or event row)."""
    entity = operation[1]
    key = str(entity.get("RowKey", ""))
    for prefix in (SNAPSHOT_PREFIX, CANCEL_REASON_PREFIX):
        if key.startswith(prefix):
            return key.removeprefix(prefix)
    return str(entity.get("AppointmentId") or key)


def appointment_groups(operations: list[tuple[Any, ...]]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """``operations`` as consecutive runs of one appointment's (its snapshot row, cancel reason and the event
    they cause, which the reconcile writes next to each other): what must commit together or not at all."""
    groups: list[tuple[str, list[tuple[Any, ...]]]] = []
    for operation in operations:
        appointment = _appointment_of(operation)
        if groups and groups[-1][0] == appointment:
            groups[-1][1].append(operation)
        else:
            groups.append((appointment, [operation]))
    return groups


def transactions(operations: list[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    """``operations`` in order, packed into transactions within Table storage's limits as it counts them
    (operations, bytes: ``storage.entity_size``), never splitting an appointment's group. At least one."""
    batches: list[list[tuple[Any, ...]]] = [[]]
    size = 0
    for _, group in appointment_groups(operations):
        group_size = sum(entity_size(op[1]) + OPERATION_FRAMING_BYTES for op in group)
        if batches[-1] and (len(batches[-1]) + len(group) > MAX_TRANSACTION_OPERATIONS
                            or size + group_size > MAX_TRANSACTION_BYTES):
            batches.append([])
            size = 0
        batches[-1].extend(group)
        size += group_size
    return batches


async def commit_isolating(mailbox: str, operations: list[tuple[Any, ...]], etag: str,
                           sync: Mapping[str, Any]) -> tuple[str, list[tuple[str, Refused]]]:
    """``commit``, except that when storage refuses the transaction its appointments' groups are committed
    one by one and only the refused ones are left out: one bad appointment never blocks the others. Returns
    the sync row's new ETag and the (appointment id, refusal) of each group left out; their snapshots did
    not move, so the next reconcile tries them again."""
    try:
        return await commit(mailbox, operations, etag, sync), []
    except Refused as refused:
        groups = appointment_groups(operations)
        if len(groups) <= 1:
            refusals = [(groups[0][0] if groups else "", refused)]
            return await commit(mailbox, [], etag, sync), refusals
    refusals: list[tuple[str, Refused]] = []
    for appointment, group in groups:
        try:
            etag = await commit(mailbox, group, etag, {})
        except Refused as error:
            refusals.append((appointment, error))
    return await commit(mailbox, [], etag, sync), refusals


# ---- snapshots --------------------------------------------------------------------------------------

@dataclass
class Snapshot:
    appointment_id: str
    fingerprint: str
    last_updated: str
    list_fingerprint: str
    start: datetime | None
    end: datetime | None
    payload: dict[str, Any]

    @classmethod
    def from_entity(cls, entity: Any) -> Snapshot:
        return cls(entity["AppointmentId"], entity.get("Fingerprint", ""), entity.get("LastUpdated", ""),
                   entity.get("ListFingerprint", ""), entity.get("Start"), entity.get("End"), read_payload(entity))


def snapshot_row_key(appointment_id: str) -> str:
    return f"{SNAPSHOT_PREFIX}{appointment_id}"


async def snapshots(mailbox: str) -> dict[str, Snapshot]:
    return {e["AppointmentId"]: Snapshot.from_entity(e) for e in await rows_with_prefix(mailbox, SNAPSHOT_PREFIX)}


Times = tuple[datetime | None, datetime | None]  # an appointment's start and end as its snapshot holds them


async def snapshot_times(mailbox: str) -> dict[str, Times]:
    """Every snapshot's start and end (no payloads): what the time-relative triggers are scheduled from."""
    return {e["AppointmentId"]: (e.get("Start"), e.get("End"))
            for e in await rows_with_prefix(mailbox, SNAPSHOT_PREFIX, select=["AppointmentId", "Start", "End"])}


def snapshot_changes(operations: list[tuple[Any, ...]]) -> tuple[dict[str, Times], list[str]]:
    """What a reconcile's operations do to the snapshots: the times of each appointment written, and the ids of
    those deleted."""
    written: dict[str, Times] = {}
    deleted: list[str] = []
    for operation in operations:
        key = str(operation[1].get("RowKey", ""))
        if not key.startswith(SNAPSHOT_PREFIX):
            continue
        appointment_id = key.removeprefix(SNAPSHOT_PREFIX)
        if operation[0] == "delete":
            deleted.append(appointment_id)
        else:
            written[appointment_id] = (operation[1].get("Start"), operation[1].get("End"))
    return written, deleted


def snapshot_operation(mailbox: str, appointment: Mapping[str, Any], fingerprint: str, list_fingerprint: str,
                       payload: Mapping[str, Any]) -> tuple[Any, ...]:
    """The transaction operation recording ``appointment`` (Graph's JSON) as last seen."""
    entity = row(mailbox, snapshot_row_key(appointment["id"]), AppointmentId=appointment["id"],
                 Fingerprint=fingerprint, LastUpdated=str(appointment.get("lastUpdatedDateTime") or ""),
                 ListFingerprint=list_fingerprint, Start=parse_graph_datetime(appointment.get("startDateTime")),
                 End=parse_graph_datetime(appointment.get("endDateTime")))
    entity = {k: v for k, v in entity.items() if v is not None}
    return ("upsert", {**entity, **payload_properties(payload, entity)}, {"mode": UpdateMode.REPLACE})


def delete_snapshot_operation(mailbox: str, appointment_id: str) -> tuple[Any, ...]:
    return ("delete", row(mailbox, snapshot_row_key(appointment_id)))


# ---- cancel reasons ---------------------------------------------------------------------------------

def _cancel_reason_key(appointment_id: str) -> str:
    return f"{CANCEL_REASON_PREFIX}{appointment_id}"


async def put_cancel_reason(mailbox: str, appointment_id: str, reason: str, cancelled_by: str) -> None:
    await mailbox_table().upsert_entity(row(mailbox, _cancel_reason_key(appointment_id), Reason=reason,
                                            CancelledBy=cancelled_by, RecordedAt=datetime.now(UTC)))


async def delete_cancel_reason(mailbox: str, appointment_id: str) -> None:
    await mailbox_table().delete_entity(mailbox, _cancel_reason_key(appointment_id))


async def cancellation(mailbox: str, appointment_id: str) -> tuple[str, str]:
    """The reason recorded for the appointment's cancellation and who gave it (a sign-in address); ("", "")."""
    try:
        entity = await mailbox_table().get_entity(mailbox, _cancel_reason_key(appointment_id))
    except ResourceNotFoundError:
        return "", ""
    return str(entity.get("Reason", "")), str(entity.get("CancelledBy") or "")


def delete_cancel_reason_operation(mailbox: str, appointment_id: str) -> tuple[Any, ...]:
    return ("delete", row(mailbox, _cancel_reason_key(appointment_id)))


# ---- forgetting a mailbox ---------------------------------------------------------------------------

async def forget_mailbox(mailbox: str) -> int:
    """Delete the mailbox's snapshots and cancel reasons and mark its sync row unwatched; returns how many
    rows went.

    Called when the mailbox's last flow goes: the snapshots hold customers' names, addresses and notes,
    which nothing needs once no flow watches the mailbox, and a flow registered later must start from a
    fresh baseline (the changes made while nobody watched are not its events). The sync row stays, holding
    nothing but ``Unwatched``: a hint still in the queue then finds the mailbox unwatched and brings nothing
    back, where a missing row would start a new baseline (``start_watching`` clears the mark)."""
    table = mailbox_table()
    marker = row(mailbox, SYNC_ROW, Unwatched=True, LeaseUntil=NO_LEASE)
    await table.upsert_entity(marker, mode=UpdateMode.REPLACE)  # first: an ETag-guarded late commit now fails
    rows = [entity async for entity in table.query_entities(
        # Spaces around the parentheses: the SDK reads a parameter name up to the next space.
        f"PartitionKey eq @pk and ( ( {PREFIX_FILTER} ) or ( RowKey ge @clo and RowKey lt @chi ) )",
        parameters={"pk": mailbox, **prefix_bounds(SNAPSHOT_PREFIX),
                    **{f"c{k}": v for k, v in prefix_bounds(CANCEL_REASON_PREFIX).items()}},
        select=["RowKey"])]
    for start in range(0, len(rows), 99):  # Table transactions hold at most 100 operations
        batch = [("delete", row(mailbox, entity["RowKey"])) for entity in rows[start:start + 99]]
        try:
            await table.submit_transaction(batch)
        except TableTransactionError:
            for operation in batch:  # one changed meanwhile (a late reconcile): delete the others one by one
                try:
                    await table.delete_entity(mailbox, operation[1]["RowKey"])
                except ResourceNotFoundError:
                    pass
    return len(rows)
