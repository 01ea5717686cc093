"""``idem:`` rows: the idempotency keys of *Create an appointment*, so that a booking asked for again (Power
Automate's retry policy resends the same request after a timeout or a 5xx) is answered with the appointment the
first request made, never booked twice.

One row per key in the business's mailbox partition, RowKey ``idem:<sha256 of the key>`` (the key is the
caller's ``Idempotency-Key`` header, or the request itself: ``shared.services.appointments``). Properties:
``RequestHash`` (what was asked under the key: another request under the same key is refused), ``State``,
``LeaseUntil``, ``AppointmentId`` (once booked), ``ExpiresAt``. States:

- ``booking``: a request holds the key until ``LeaseUntil`` and is asking Graph; another request meanwhile is
  told to come back (``KeyInUse``). A lease that ran out (the process died, or Graph never answered) is taken
  over by the next request with the key, which must look in Graph for the appointment before booking.
- ``uncertain``: Graph was asked and did not say (a timeout, a 5xx after which the appointment was not found):
  the next request with the key looks first, as above.
- ``booked``: ``AppointmentId`` is the answer for every request with the key until ``ExpiresAt``.

Lifetime: ``KEY_HOURS`` (24 h: beyond any retry policy's schedule that still makes sense for a booking); every
create deletes up to ``PRUNE_BATCH`` rows of its mailbox that have expired (``prune``), so a mailbox holds about
a day of its own bookings' keys. The rows hold no personal data (hashes and an appointment id), so they need not
go with the last flow (``reconcile_state.forget_mailbox``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.records.mailbox import PREFIX_FILTER, mailbox_table, prefix_bounds, row

IDEMPOTENCY_PREFIX = "idem:"
KEY_HOURS = 24
LEASE_SECONDS = 90  # longer than a booking takes: Graph's create, and a customer looked up or added first
PRUNE_BATCH = 20
BOOKING, UNCERTAIN, BOOKED = "booking", "uncertain", "booked"


class KeyReused(Exception):
    """The key was used for another request within its lifetime."""


class KeyInUse(Exception):
    """Another request with the key holds it (is booking now)."""

    def __init__(self, seconds: int) -> None:
        super().__init__(f"in use for {seconds} s more")
        self.seconds = seconds


@dataclass(frozen=True)
class Claim:
    """A key this request now holds (``state`` ``booking``), or the booking the key already made (``booked``).
    ``look_first``: an earlier request with the key may have booked without hearing so: look in Graph first."""

    mailbox: str
    row_key: str
    state: str
    etag: str
    appointment_id: str = ""
    look_first: bool = False


def row_key(key: str) -> str:
    return IDEMPOTENCY_PREFIX + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _holding(mailbox: str, key_row: str, request_hash: str, now: datetime, expires: datetime | None = None
             ) -> dict[str, Any]:
    return row(mailbox, key_row, RequestHash=request_hash, State=BOOKING, AppointmentId="",
               LeaseUntil=now + timedelta(seconds=LEASE_SECONDS), ExpiresAt=expires or now + timedelta(hours=KEY_HOURS))


async def claim(mailbox: str, key: str, request_hash: str, now: datetime | None = None) -> Claim:
    """Hold ``key`` for a booking of ``request_hash``; or the booking it made. ``KeyReused``, ``KeyInUse``."""
    now = now or datetime.now(UTC)
    table, key_row = mailbox_table(), row_key(key)
    try:
        meta = await table.create_entity(_holding(mailbox, key_row, request_hash, now))
        return Claim(mailbox, key_row, BOOKING, meta["etag"])
    except ResourceExistsError:
        pass
    try:
        entity = await table.get_entity(mailbox, key_row)
    except ResourceNotFoundError:
        raise KeyInUse(1) from None  # released a moment ago: the retry will create it
    etag = entity.metadata["etag"]
    if entity.get("ExpiresAt") is None or entity["ExpiresAt"] <= now:  # an old key's row: the key starts anew
        return await _take(mailbox, key_row, _holding(mailbox, key_row, request_hash, now), etag, look_first=False)
    if entity.get("RequestHash") != request_hash:
        raise KeyReused(key_row)
    if entity.get("State") == BOOKED:
        return Claim(mailbox, key_row, BOOKED, etag, str(entity.get("AppointmentId") or ""))
    lease = entity.get("LeaseUntil")
    if entity.get("State") == BOOKING and lease is not None and lease > now:
        raise KeyInUse(max(1, int((lease - now).total_seconds()) + 1))
    return await _take(mailbox, key_row, _holding(mailbox, key_row, request_hash, now, entity["ExpiresAt"]), etag,
                       look_first=True)


async def _take(mailbox: str, key_row: str, entity: dict[str, Any], etag: str, *, look_first: bool) -> Claim:
    try:
        meta = await mailbox_table().update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                                   match_condition=MatchConditions.IfNotModified)
    except (ResourceModifiedError, ResourceNotFoundError):
        raise KeyInUse(1) from None  # another request took it over first
    return Claim(mailbox, key_row, BOOKING, meta["etag"], look_first=look_first)


async def settle(held: Claim, appointment_id: str) -> None:
    """The booking was made: ``appointment_id`` answers every request with the key from now on."""
    await mailbox_table().update_entity(row(held.mailbox, held.row_key, State=BOOKED, AppointmentId=appointment_id),
                                        mode=UpdateMode.MERGE)


async def leave_uncertain(held: Claim) -> None:
    """Graph did not say whether it booked: the next request with the key looks before it books."""
    await mailbox_table().update_entity(row(held.mailbox, held.row_key, State=UNCERTAIN,
                                            LeaseUntil=datetime.now(UTC)), mode=UpdateMode.MERGE)


async def release(held: Claim) -> None:
    """Nothing was booked and Graph said so: the key is free (a retry asks Graph again)."""
    try:
        await mailbox_table().delete_entity(held.mailbox, held.row_key, etag=held.etag,
                                            match_condition=MatchConditions.IfNotModified)
    except (ResourceNotFoundError, ResourceModifiedError):
        pass


async def prune(mailbox: str, now: datetime | None = None) -> int:
    """Delete up to ``PRUNE_BATCH`` of the mailbox's expired keys; how many went."""
    table, now = mailbox_table(), now or datetime.now(UTC)
    expired = []
    async for entity in table.query_entities(f"PartitionKey eq @pk and {PREFIX_FILTER} and ExpiresAt lt @now",
                                             parameters={"pk": mailbox, "now": now,
                                                         **prefix_bounds(IDEMPOTENCY_PREFIX)},
                                             select=["RowKey"], results_per_page=PRUNE_BATCH):
        expired.append(entity["RowKey"])
        if len(expired) >= PRUNE_BATCH:
            break
    for key_row in expired:
        try:
            await table.delete_entity(mailbox, key_row)
        except ResourceNotFoundError:
            pass
    return len(expired)
