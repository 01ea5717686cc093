"""The ``~index:admins`` partition: which addresses administer, or work at, each Bookings business, shared by
every instance.

The connector's business dropdowns need, for the caller, every business where they are an administrator (the
triggers' *GetBusinessesAsAdmin*) or have a staff role the actions admit (*GetBusinessesAsStaff*). Reading
every staff list on each call costs one Graph call per business, so the answer comes from this index instead,
kept by the directory refresh timer (``shared.workers.directory_refresh``) and filled on demand for businesses
it has not read yet (``shared.services.bookings_directory``).

One row per business (PartitionKey ``~index:admins``, RowKey = the business's mailbox):

- ``Name``: its display name, as the last listing or read gave it;
- ``Admins``: the administrators' addresses, each as the first 24 hex digits of the SHA-256 of the address
  lower-cased (``address_key``), space-separated. The dropdown matches whole addresses only, which a hash
  does as well as the address, and the row then holds no address in clear. Absent: the staff list was never
  read (the business is known from a listing only);
- ``Staff``: the same for the other staff members whose role may use the connector's actions (``STAFF_ROLES``:
  schedulers, viewers, team members; guests may use none). Absent: not read since this column was added (the
  row counts as unread until it is);
- ``ReadAt``: when the staff list was last read (absent with ``Admins``).

Never used to admit anyone: the rules that register a flow read the staff list live
(``shared.endpoints.access``). A stale row only makes the dropdown show or miss a business.

Cost: the dropdown reads the partition (one query; Table storage returns up to 1,000 rows a page); the refresh
writes every row it read, 100 to a transaction.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.data.tables import UpdateMode

from shared.adapters.storage import TRANSACTION_MAX_OPERATIONS
from shared.records.mailbox import index_mailbox, index_partition, index_row, index_rows, iso, mailbox_table, utc

log = logging.getLogger(__name__)

KIND = "admins"
_KEY_HEX_DIGITS = 24  # 96 bits: no two addresses of a tenant collide
# A string property holds 32 K UTF-16 units: 1,300 keys of 25 characters stay well within it.
MAX_ADMINS_PER_BUSINESS = 1_300
# Roles besides administrator that may use the actions (shared.endpoints.access.ACTION_ROLES, Graph's names).
STAFF_ROLES = ("scheduler", "viewer", "teamMember")


def address_key(address: str) -> str:
    """What the index stores for one address (whole address, case-insensitive)."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()[:_KEY_HEX_DIGITS]


@dataclass(frozen=True)
class BusinessAdmins:
    mailbox: str
    display_name: str
    admin_keys: frozenset[str] | None  # None: the staff list was never read
    read_at: datetime | None
    staff_keys: frozenset[str] | None = None  # the other STAFF_ROLES; None: not read since the column exists

    @property
    def read(self) -> bool:
        return self.admin_keys is not None and self.staff_keys is not None

    def administered_by(self, keys: frozenset[str]) -> bool:
        return bool(self.admin_keys and self.admin_keys & keys)

    def staffed_by(self, keys: frozenset[str]) -> bool:
        """Whether one of ``keys`` has a role there that may use the actions (administrators included)."""
        return self.administered_by(keys) or bool(self.staff_keys and self.staff_keys & keys)


def _from_entity(entity: Any) -> BusinessAdmins:
    admins, staff = entity.get("Admins"), entity.get("Staff")
    return BusinessAdmins(mailbox=index_mailbox(entity), display_name=str(entity.get("Name") or ""),
                          admin_keys=frozenset(str(admins).split()) if admins is not None else None,
                          read_at=utc(entity.get("ReadAt")),
                          staff_keys=frozenset(str(staff).split()) if staff is not None else None)


async def read_all() -> dict[str, BusinessAdmins]:
    """Every business in the index, by mailbox."""
    return {row.mailbox: row for row in map(_from_entity, await index_rows(KIND))}


def _keys(mailbox: str, addresses: Iterable[str], what: str) -> frozenset[str]:
    keys = sorted({address_key(a) for a in addresses if a.strip()})
    if len(keys) > MAX_ADMINS_PER_BUSINESS:
        log.warning("business %s has %d %s; the dropdown index keeps %d", mailbox, len(keys), what,
                    MAX_ADMINS_PER_BUSINESS)
        keys = keys[:MAX_ADMINS_PER_BUSINESS]
    return frozenset(keys)


def read_row(mailbox: str, display_name: str, admin_addresses: Iterable[str], now: datetime | None = None,
             staff_addresses: Iterable[str] = ()) -> BusinessAdmins:
    """The row for a staff list just read: ``admin_addresses`` are the administrators' addresses,
    ``staff_addresses`` those of the other ``STAFF_ROLES``."""
    return BusinessAdmins(mailbox, display_name, _keys(mailbox, admin_addresses, "administrators"),
                          now or datetime.now(UTC), _keys(mailbox, staff_addresses, "staff members"))


def _entity(row: BusinessAdmins) -> dict[str, Any]:
    properties: dict[str, Any] = {"Name": row.display_name}
    if row.admin_keys is not None:
        properties["Admins"] = " ".join(sorted(row.admin_keys))
        properties["Staff"] = " ".join(sorted(row.staff_keys or ()))
        properties["ReadAt"] = iso(row.read_at or datetime.now(UTC))
    return index_row(KIND, row.mailbox, **properties)


async def put(rows: Iterable[BusinessAdmins]) -> None:
    """Write rows: a read one replaces what was there; an unread one (``admin_keys`` None) is merged, so it
    adds a business the index lacks without forgetting a staff list another writer read meanwhile."""
    operations = [("upsert", _entity(row), {"mode": UpdateMode.REPLACE if row.admin_keys is not None
                                                    else UpdateMode.MERGE}) for row in rows]
    table = mailbox_table()
    for start in range(0, len(operations), TRANSACTION_MAX_OPERATIONS):
        await table.submit_transaction(operations[start:start + TRANSACTION_MAX_OPERATIONS])


async def forget(mailboxes: Iterable[str]) -> None:
    """Drop businesses that no longer exist (Graph answered 404 for their staff list)."""
    table = mailbox_table()
    for mailbox in mailboxes:  # one by one: a transaction fails whole when one row is already gone
        await table.delete_entity(index_partition(KIND), mailbox)  # absent: no error (the SDK's delete)
