"""The ``subscription`` row of the mailbox partition: the state of the mailbox's Graph subscription.

``State`` is ``creating`` | ``active`` | ``deleting``. ``LeaseUntil`` says how long the writer that set
``creating`` or ``deleting`` owns the row; every change is guarded by the row's ETag, which is what makes
"exactly one subscription per mailbox" hold across instances (the protocol is in
``shared.services.subscriptions``). This module stores; it never calls Graph.

The renewal sweep reads the ``~index:subscription`` partition instead of every partition
(``shared.records.mailbox``, index rows): one row per mailbox with a subscription row, carrying a copy of
what the sweep decides on (``State``, ``SubscriptionId``, ``ExpirationDateTime``, ``LeaseUntil``). The
copy is written before a row is created (so the index is a superset) and after every change; a delete
leaves it ``State=deleted``, and the sweep drops such index rows once it has seen the real row gone. A
copy left stale by a crash between the two writes errs towards work: the sweep's task reads the real row,
finds nothing or something else to do, and writes the copy again (``refresh_index``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.records.mailbox import (
    delete_index_unchanged,
    get_index,
    index_mailbox,
    index_rows,
    mailbox_table,
    put_index,
    row,
    utc,
)

SUBSCRIPTION_ROW = "subscription"
INDEX = "subscription"
DELETED = "deleted"  # an index row's State once its real row was deleted
LAST_ERROR_CHARS = 500
_COPIED = ("State", "SubscriptionId", "ExpirationDateTime", "LeaseUntil")


@dataclass(frozen=True)
class SubscriptionRecord:
    mailbox: str
    state: str
    subscription_id: str
    client_state: str
    expiration: datetime | None
    lease_until: datetime | None
    etag: str
    failures: int = 0

    @classmethod
    def from_entity(cls, entity: Any) -> SubscriptionRecord:
        return cls(mailbox=entity["PartitionKey"], state=entity.get("State", ""),
                   subscription_id=entity.get("SubscriptionId", ""), client_state=entity.get("ClientState", ""),
                   expiration=entity.get("ExpirationDateTime"), lease_until=entity.get("LeaseUntil"),
                   etag=entity.metadata["etag"], failures=int(entity.get("Failures", 0)))

    def lease_held(self, now: datetime) -> bool:
        return self.lease_until is not None and self.lease_until > now


def _if_unchanged(etag: str) -> dict[str, Any]:
    return {"etag": etag, "match_condition": MatchConditions.IfNotModified}


async def get(mailbox: str) -> SubscriptionRecord | None:
    try:
        return SubscriptionRecord.from_entity(await mailbox_table().get_entity(mailbox, SUBSCRIPTION_ROW))
    except ResourceNotFoundError:
        return None


async def all_rows() -> dict[str, SubscriptionRecord]:
    """Every mailbox's subscription row as its index row copies it (ETags empty: a task re-reads the real
    row before acting), for the renewal sweep. Index rows of deleted rows are dropped on the way."""
    found: dict[str, SubscriptionRecord] = {}
    for entity in await index_rows(INDEX):
        mailbox = index_mailbox(entity)
        if entity.get("State") == DELETED:
            real = await get(mailbox)
            if real is None:
                await delete_index_unchanged(entity)  # one a writer touched meanwhile stays
                continue
            await refresh_index(mailbox, real)
            found[mailbox] = real
            continue
        found[mailbox] = SubscriptionRecord(
            mailbox=mailbox, state=entity.get("State", ""), subscription_id=entity.get("SubscriptionId", ""),
            client_state="", expiration=utc(entity.get("ExpirationDateTime")),
            lease_until=utc(entity.get("LeaseUntil")), etag="")
    return found


async def _copy(mailbox: str, **properties: Any) -> None:
    """Copy what changed onto the index row (after the real write succeeded)."""
    await put_index(INDEX, mailbox, {k: v for k, v in properties.items() if k in _COPIED})


async def refresh_index(mailbox: str, record: SubscriptionRecord | None) -> None:
    """Make the index row say what the real row (as just read) says."""
    if record is None:
        if await get_index(INDEX, mailbox) is not None:
            await put_index(INDEX, mailbox, {"State": DELETED})
        return
    await _copy(mailbox, State=record.state, SubscriptionId=record.subscription_id,
                ExpirationDateTime=record.expiration, LeaseUntil=record.lease_until)


async def backfill_index() -> int:
    """Copy every subscription row onto the index (a scan of the whole table: once, for rows written before
    the index existed). Returns how many."""
    rows = [e async for e in mailbox_table().query_entities(f"RowKey eq '{SUBSCRIPTION_ROW}'")]
    for entity in rows:
        await refresh_index(entity["PartitionKey"], SubscriptionRecord.from_entity(entity))
    return len(rows)


async def claim(mailbox: str, previous: SubscriptionRecord | None, now: datetime, lease: timedelta) -> str | None:
    """Take the row in state ``creating``. Returns its ETag, or None when another writer got there first."""
    entity = row(mailbox, SUBSCRIPTION_ROW, State="creating", LeaseUntil=now + lease, SubscriptionId="",
                 ClientState="", Failures=previous.failures if previous else 0)
    if previous is None:  # the index row first: it must exist before the real row can
        await _copy(mailbox, **entity)
    try:
        if previous is None:
            result = await mailbox_table().create_entity(entity)
        else:  # a stale 'creating' or 'deleting' whose owner died: take it over
            result = await mailbox_table().update_entity(entity, mode=UpdateMode.REPLACE,
                                                         **_if_unchanged(previous.etag))
    except (ResourceExistsError, ResourceNotFoundError):
        return None
    except HttpResponseError as error:
        if error.status_code == 412:
            return None
        raise
    await _copy(mailbox, **entity)
    return result["etag"]


async def activate(mailbox: str, etag: str, subscription_id: str, client_state: str, expires: datetime) -> str:
    """Flip a claimed row to ``active``. Raises when the claim was lost (the ETag moved)."""
    entity = row(mailbox, SUBSCRIPTION_ROW, State="active", LeaseUntil=None, SubscriptionId=subscription_id,
                 ClientState=client_state, ExpirationDateTime=expires, Failures=0, LastError="")
    result = await mailbox_table().update_entity(entity, mode=UpdateMode.REPLACE, **_if_unchanged(etag))
    await _copy(mailbox, **entity)
    return result["etag"]


async def mark_deleting(record: SubscriptionRecord, now: datetime, lease: timedelta) -> str | None:
    """Take an active row in state ``deleting``. Its new ETag, or None when it changed meanwhile."""
    try:
        marked = await mailbox_table().update_entity(
            row(record.mailbox, SUBSCRIPTION_ROW, State="deleting", LeaseUntil=now + lease),
            mode=UpdateMode.MERGE, **_if_unchanged(record.etag))
    except (ResourceNotFoundError, HttpResponseError):
        return None
    await _copy(record.mailbox, State="deleting", LeaseUntil=now + lease)
    return marked["etag"]


async def reactivate(mailbox: str, etag: str) -> None:
    """Back from ``deleting`` to ``active`` (a flow was registered meanwhile)."""
    await mailbox_table().update_entity(row(mailbox, SUBSCRIPTION_ROW, State="active", LeaseUntil=None),
                                        mode=UpdateMode.MERGE, **_if_unchanged(etag))
    await _copy(mailbox, State="active", LeaseUntil=None)


async def delete_claimed(mailbox: str, etag: str) -> None:
    """Delete the row if it is still ours (ETag); someone else's or gone is not ours to remove."""
    try:
        await mailbox_table().delete_entity(mailbox, SUBSCRIPTION_ROW, **_if_unchanged(etag))
    except (ResourceNotFoundError, HttpResponseError):
        return
    # After the real row: a claim racing with this rewrites the index row after its own write.
    await put_index(INDEX, mailbox, {"State": DELETED})


async def delete(record: SubscriptionRecord) -> None:
    """Delete this version of the row; one already replaced by a newer subscription stays."""
    await delete_claimed(record.mailbox, record.etag)


async def record_expiration(record: SubscriptionRecord, expires: datetime) -> None:
    await mailbox_table().update_entity(
        row(record.mailbox, SUBSCRIPTION_ROW, ExpirationDateTime=expires, Failures=0, LastError=""),
        mode=UpdateMode.MERGE)
    await _copy(record.mailbox, ExpirationDateTime=expires)


async def record_failure(record: SubscriptionRecord, error: str) -> int:
    """Count a failed renewal; returns how many in a row."""
    failures = record.failures + 1
    try:
        await mailbox_table().update_entity(
            row(record.mailbox, SUBSCRIPTION_ROW, Failures=failures, LastError=error[:LAST_ERROR_CHARS]),
            mode=UpdateMode.MERGE)
    except ResourceNotFoundError:
        pass
    return failures
