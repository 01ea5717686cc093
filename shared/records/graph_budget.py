"""The ``graphbudget`` row: the Graph calls callers may still make on a mailbox, shared by every instance.

Outlook serves each app at most 10,000 requests in 10 minutes per mailbox (and 4 at once;
https://learn.microsoft.com/en-us/graph/throttling-limits#outlook-service-limits); a Bookings business is a
mailbox. The triggers (reconcile, renewal, resync) must keep most of that. What the app asks of Graph on behalf of
callers (the connector's actions, the staff check before each of them) spends this per-mailbox allowance first:
``PER_TEN_MINUTES`` calls in any 10 minutes, in bursts of at most ``BURST``, whichever instance serves the call.

The algorithm is GCRA (the generic cell rate algorithm: a token bucket kept as one time per mailbox), as
``shared.records.test_event_limit``. The mailbox's row (RowKey ``graphbudget``) holds ``Tat``, the *theoretical
arrival time*: ``calls`` more are allowed at ``now`` when ``max(Tat, now) + calls * INTERVAL - now <= BURST *
INTERVAL``, and move ``Tat`` there. The write is ETag-guarded (a concurrent writer makes it a 412 and the row is read
again), so no two instances spend the same allowance. The row holds no personal data and is never cleaned up: one
per mailbox callers used, 1 column.

Cost: one read and one write per ``take`` (a caller's Graph call, or several at once: a listing page takes its
reads by id together), one read when refused. Takes of one process queue per mailbox (so its own callers never race
each other for the ETag); a race lost to another instance reads and writes again, at most ``TRIES`` times, then the
calls are refused as beyond the budget.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables.aio import TableClient

from shared.adapters.per_loop import LocksByKey
from shared.records.mailbox import mailbox_table, replace_if_unchanged, row, utc

ROW_KEY = "graphbudget"
PER_TEN_MINUTES = 2_000  # a fifth of Outlook's 10,000: the other 8,000 stay the triggers'
INTERVAL = timedelta(minutes=10) / PER_TEN_MINUTES  # 0.3 s: 3.3 calls a second, sustained
BURST = 60  # a page of 50 appointments with its calendar views and staff check, at once
TRIES = 5

# In-process queue per mailbox, per event loop (a lock belongs to one); entries vanish when no take holds the lock.
_local_locks = LocksByKey()


async def _read(table: TableClient, mailbox: str) -> Any | None:
    try:
        return await table.get_entity(mailbox, ROW_KEY)
    except ResourceNotFoundError:
        return None



async def take(mailbox: str, calls: int = 1, table: TableClient | None = None, *, headroom: int = 0) -> float:
    """Spend ``calls`` Graph calls of the mailbox's allowance: 0.0 when allowed (and counted), else the seconds
    until they would be (nothing counted). ``headroom``: allowed only while ``calls + headroom`` would be, though
    only ``calls`` are counted (a check that admits an action leaves room for the action)."""
    calls = max(1, min(calls, BURST))  # more than a burst at once is a burst's worth: never refused for ever
    headroom = max(0, min(headroom, BURST - calls))
    # One take at a time per mailbox in this process: ETag races are then between instances only.
    async with _local_locks.lock(mailbox):
        return await _take(mailbox, calls, headroom, table or mailbox_table())


async def _take(mailbox: str, calls: int, headroom: int, table: TableClient) -> float:
    for attempt in range(TRIES):
        if attempt:  # another instance wrote first: a short random pause, so two do not collide again
            await asyncio.sleep(random.uniform(0, 0.02 * 2**attempt))  # noqa: S311
        entity = await _read(table, mailbox)
        now = datetime.now(UTC)
        arrival = max(utc((entity or {}).get("Tat")) or now, now) + calls * INTERVAL
        wait = (arrival + headroom * INTERVAL - BURST * INTERVAL - now).total_seconds()
        if wait > 0:
            return wait
        if await replace_if_unchanged(table, entity, row(mailbox, ROW_KEY, Kind=ROW_KEY, Tat=arrival)):
            return 0.0
    return INTERVAL.total_seconds() * calls

