"""The ``subscriptions`` table: Graph subscription id → mailbox and clientState, the notification path's read.

Notifications name the subscription, never the SMTP address (their ``resource`` holds the user's object
id), so the notification endpoint finds the mailbox and the expected clientState with one point read of
this index (PartitionKey = subscription id, RowKey ``""``; properties ``Mailbox``, ``ClientState``,
``ExpirationDateTime``). Found entries are kept in memory: a subscription's mailbox and clientState never
change, and bursts name the same few subscriptions over and over. This module imports nothing that talks
to Graph: it is on the notification path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.adapters.single_flight import SingleFlight
from shared.adapters.storage import SUBSCRIPTION_TABLE, get_store

CACHE_SECONDS = 300
CACHE_SIZE = 20_000


@dataclass(frozen=True)
class IndexEntry:
    subscription_id: str
    mailbox: str
    client_state: str


_cache: dict[str, tuple[IndexEntry, float]] = {}
# A burst right after start-up names the same few subscriptions in every request, and all of them would
# miss the cache at once: concurrent lookups of one id share one read.
_reads: SingleFlight[IndexEntry | None] = SingleFlight()


def _table() -> TableClient:
    return get_store().table(SUBSCRIPTION_TABLE)


def cached(subscription_id: str) -> IndexEntry | None:
    """The entry if it is in memory and fresh, without touching storage."""
    entry = _cache.get(subscription_id)
    return entry[0] if entry is not None and entry[1] > time.monotonic() else None


async def lookup(subscription_id: str) -> IndexEntry | None:
    """Which mailbox, which clientState. Storage errors propagate.

    Absences are not kept (a new subscription's first notification may race its index row)."""
    entry = cached(subscription_id)
    if entry is not None:
        return entry
    return await _reads.run(subscription_id, lambda: _read(subscription_id))


async def _read(subscription_id: str) -> IndexEntry | None:
    try:
        entity = await _table().get_entity(subscription_id, "")
    except ResourceNotFoundError:
        return None
    entry = IndexEntry(subscription_id, entity["Mailbox"], entity["ClientState"])
    if len(_cache) >= CACHE_SIZE:
        _cache.clear()  # crude, but bounded; refilled by the next reads
    _cache[subscription_id] = (entry, time.monotonic() + CACHE_SECONDS)
    return entry


async def put(subscription_id: str, mailbox: str, client_state: str, expires: datetime) -> None:
    await _table().upsert_entity({"PartitionKey": subscription_id, "RowKey": "", "Mailbox": mailbox,
                                  "ClientState": client_state, "ExpirationDateTime": expires})


async def set_expiration(subscription_id: str, expires: datetime) -> None:
    await _table().update_entity({"PartitionKey": subscription_id, "RowKey": "", "ExpirationDateTime": expires},
                                 mode=UpdateMode.MERGE)


async def delete(subscription_id: str) -> None:
    """Forget the subscription here and in memory. Deleting one already gone is not an error."""
    _cache.pop(subscription_id, None)
    try:
        await _table().delete_entity(subscription_id, "")
    except ResourceNotFoundError:
        pass
