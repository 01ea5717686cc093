"""The ``subscription`` row of the mailbox partition: the state of the mailbox's Graph subscription.

``State`` is ``creating`` | ``active`` | ``deleting``. ``LeaseUntil`` says how long the writer that set
``creating`` or ``deleting`` owns the row; every change is guarded by the row's ETag, which is what makes
"exactly one subscription per mailbox" hold across instances (the protocol is in
``shared.services.subscriptions``). This module stores; it never calls Graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.records.mailbox import mailbox_table, row

SUBSCRIPTION_ROW = "subscription"
LAST_ERROR_CHARS = 500


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
    """Every mailbox's subscription row (a query across partitions, for the renewal sweep)."""
    rows = mailbox_table().query_entities(f"RowKey eq '{SUBSCRIPTION_ROW}'")
    return {e["PartitionKey"]: SubscriptionRecord.from_entity(e) async for e in rows}


async def claim(mailbox: str, previous: SubscriptionRecord | None, now: datetime, lease: timedelta) -> str | None:
    """Take the row in state ``creating``. Returns its ETag, or None when another writer got there first."""
    entity = row(mailbox, SUBSCRIPTION_ROW, State="creating", LeaseUntil=now + lease, SubscriptionId="",
                 ClientState="", Failures=previous.failures if previous else 0)
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
    return result["etag"]


async def activate(mailbox: str, etag: str, subscription_id: str, client_state: str, expires: datetime) -> str:
    """Flip a claimed row to ``active``. Raises when the claim was lost (the ETag moved)."""
    result = await mailbox_table().update_entity(
        row(mailbox, SUBSCRIPTION_ROW, State="active", LeaseUntil=None, SubscriptionId=subscription_id,
            ClientState=client_state, ExpirationDateTime=expires, Failures=0, LastError=""),
        mode=UpdateMode.REPLACE, **_if_unchanged(etag))
    return result["etag"]


async def mark_deleting(record: SubscriptionRecord, now: datetime, lease: timedelta) -> str | None:
    """Take an active row in state ``deleting``. Its new ETag, or None when it changed meanwhile."""
    try:
        marked = await mailbox_table().update_entity(
            row(record.mailbox, SUBSCRIPTION_ROW, State="deleting", LeaseUntil=now + lease),
            mode=UpdateMode.MERGE, **_if_unchanged(record.etag))
    except (ResourceNotFoundError, HttpResponseError):
        return None
    return marked["etag"]


async def reactivate(mailbox: str, etag: str) -> None:
    """Back from ``deleting`` to ``active`` (a flow was registered meanwhile)."""
    await mailbox_table().update_entity(row(mailbox, SUBSCRIPTION_ROW, State="active", LeaseUntil=None),
                                        mode=UpdateMode.MERGE, **_if_unchanged(etag))


async def delete_claimed(mailbox: str, etag: str) -> None:
    """Delete the row if it is still ours (ETag); someone else's or gone is not ours to remove."""
    try:
        await mailbox_table().delete_entity(mailbox, SUBSCRIPTION_ROW, **_if_unchanged(etag))
    except (ResourceNotFoundError, HttpResponseError):
        pass


async def delete(record: SubscriptionRecord) -> None:
    """Delete this version of the row; one already replaced by a newer subscription stays."""
    await delete_claimed(record.mailbox, record.etag)


async def record_expiration(record: SubscriptionRecord, expires: datetime) -> None:
    await mailbox_table().update_entity(
        row(record.mailbox, SUBSCRIPTION_ROW, ExpirationDateTime=expires, Failures=0, LastError=""),
        mode=UpdateMode.MERGE)


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
