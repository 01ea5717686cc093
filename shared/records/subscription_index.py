"""The ``subscriptions`` table: Graph subscription id → mailbox and clientState, the notification path's read.

Notifications name the subscription, never the SMTP address (their ``resource`` holds the user's object
id), so the notification endpoint finds the mailbox and the expected clientState with one point read of
this index (PartitionKey = subscription id, RowKey ``""``; properties ``Mailbox``, ``ClientState``,
``ExpirationDateTime``). Found entries are kept in memory for ``CACHE_SECONDS`` (5 min): a subscription's
mailbox and clientState never change, and bursts name the same few subscriptions over and over. Both
caches are ``cachetools.TTLCache``: when full, the least recently used entry makes room.

Absences are kept too, but only for ``UNKNOWN_SECONDS`` (10 s; the ``UNKNOWN_CACHE_SIZE`` most recent ids): a
flood naming the same made-up (or deleted) subscription ids costs one read per id and 10 s, not one per
notification. The window is short because a new subscription's first notification may race its index
row; and ``put()`` forgets any absence of its id (also one recorded by a read that overlapped the write),
so in this process a subscription is never "unknown" once its row is written. Another instance may keep
an absence for up to 10 s; the mailbox's baseline, the delta check and the periodic resync cover a hint
dropped in that window.

Ids Table storage cannot hold as a key (``storable_id``: ``/ \\ # ?``, control characters, lone
surrogates, more than ``MAX_ID_CHARS``) can name no subscription: they are unknown without a read.
This module imports nothing that talks to Graph: it is on the notification path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient
from cachetools import TTLCache

from shared.adapters.single_flight import SingleFlight
from shared.adapters.storage import SUBSCRIPTION_TABLE, get_store

CACHE_SECONDS = 300
CACHE_SIZE = 20_000
UNKNOWN_SECONDS = 10
UNKNOWN_CACHE_SIZE = 20_000
MAX_ID_CHARS = 256  # Graph's are GUIDs (36); Table storage's key limit is 1 KiB
# What Table storage refuses in a key (PartitionKey and RowKey): / \ # ? and the control characters.
_UNSTORABLE = re.compile("[/\\\\#?\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class IndexEntry:
    subscription_id: str
    mailbox: str
    client_state: str


_cache: TTLCache[str, IndexEntry] = TTLCache(CACHE_SIZE, CACHE_SECONDS)
_unknown: TTLCache[str, bool] = TTLCache(UNKNOWN_CACHE_SIZE, UNKNOWN_SECONDS)  # ids read as absent
_puts = 0  # index writes so far: a read that overlapped one must not record an absence
# A burst right after start-up names the same few subscriptions in every request, and all of them would
# miss the cache at once: concurrent lookups of one id share one read.
_reads: SingleFlight[IndexEntry | None] = SingleFlight()


def _table() -> TableClient:
    return get_store().table(SUBSCRIPTION_TABLE)


def storable_id(subscription_id: object) -> bool:
    """Whether ``subscription_id`` could be a key of this table (anything else names no subscription)."""
    if not isinstance(subscription_id, str) or not 0 < len(subscription_id) <= MAX_ID_CHARS:
        return False
    if _UNSTORABLE.search(subscription_id):
        return False
    try:
        subscription_id.encode()
    except UnicodeEncodeError:  # a lone surrogate: not sendable to storage at all
        return False
    return True


def cached(subscription_id: str) -> IndexEntry | None:
    """The entry if it is in memory and fresh, without touching storage."""
    return _cache.get(subscription_id)


def known_unknown(subscription_id: str) -> bool:
    """True when ``subscription_id`` names no subscription as far as this process knows without a read:
    not storable, or read as absent less than ``UNKNOWN_SECONDS`` ago."""
    return not storable_id(subscription_id) or subscription_id in _unknown


async def lookup(subscription_id: str) -> IndexEntry | None:
    """Which mailbox, which clientState; None for an unknown id. Storage errors propagate."""
    entry = cached(subscription_id)
    if entry is not None:
        return entry
    if known_unknown(subscription_id):
        return None
    return await _reads.run(subscription_id, lambda: _read(subscription_id))


async def _read(subscription_id: str) -> IndexEntry | None:
    puts_before = _puts
    try:
        entity = await _table().get_entity(subscription_id, "")
    except ResourceNotFoundError:
        if _puts == puts_before:  # no index write overlapped this read: the absence is real
            _unknown[subscription_id] = True
        return None
    entry = _cache[subscription_id] = IndexEntry(subscription_id, entity["Mailbox"], entity["ClientState"])
    return entry


async def put(subscription_id: str, mailbox: str, client_state: str, expires: datetime) -> None:
    """Write the subscription's row, and forget any absence of its id this process recorded."""
    global _puts
    _puts += 1  # before the write: a read overlapping it records no absence
    _unknown.pop(subscription_id, None)
    try:
        await _table().upsert_entity({"PartitionKey": subscription_id, "RowKey": "", "Mailbox": mailbox,
                                      "ClientState": client_state, "ExpirationDateTime": expires})
    finally:
        _unknown.pop(subscription_id, None)


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
