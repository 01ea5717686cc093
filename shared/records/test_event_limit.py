"""The ``testevents`` row: how often each flow may be sent a test event, shared by every instance.

*Send a test event to this flow* costs a POST to the flow (and its retries, and a flow run), so it is rate
limited per flow: a burst of ``BURST``, then one every ``INTERVAL`` (``PER_MINUTE`` a minute). The state is in
Table storage, not in a process, so two instances (or ten) share one allowance.

The algorithm is GCRA (the generic cell rate algorithm: a token bucket kept as one time per flow). The mailbox's
row (RowKey ``testevents``) holds, per flow, a column ``F<webhook id without dashes>`` with the flow's
*theoretical arrival time* (TAT): a test event at ``now`` is allowed when ``TAT - (BURST - 1) * INTERVAL <= now``,
and moves the TAT to ``max(TAT, now) + INTERVAL``. The write is ETag-guarded (a concurrent writer makes it a 412
and it is read again), so no two instances spend the same allowance. Columns whose TAT has passed are dropped on
each write (the flow's allowance is full again: the same as no column), so the row holds at most the flows
tested in the last minute and is never cleaned up otherwise; it holds no personal data.

Cost: one read and one write per allowed test event, one read per refused one. Off the trigger path.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables.aio import TableClient

from shared.records.mailbox import mailbox_table, replace_if_unchanged, row, utc

ROW_KEY = "testevents"
BURST = 3
INTERVAL = timedelta(seconds=20)
PER_MINUTE = round(timedelta(minutes=1) / INTERVAL)
# ETag races lost in a row before giving up: only many concurrent test events of one mailbox lose that often,
# and they are answered as beyond the limit.
TRIES = 5


def _column(flow_id: str) -> str:
    return "F" + flow_id.replace("-", "")


async def _read(table: TableClient, mailbox: str) -> Any | None:
    try:
        return await table.get_entity(mailbox, ROW_KEY)
    except ResourceNotFoundError:
        return None


async def take(mailbox: str, flow_id: str, table: TableClient | None = None) -> float:
    """Spend one test event of the flow's allowance: 0.0 when allowed (and counted), else the seconds until
    the next one is allowed (nothing counted)."""
    table = table or mailbox_table()
    column = _column(flow_id)
    for _ in range(TRIES):
        entity = await _read(table, mailbox)
        now = datetime.now(UTC)
        kept = {name: when for name, value in (entity or {}).items()
                if name.startswith("F") and (when := utc(value)) is not None and when > now}
        arrival = max(kept.get(column, now), now)
        wait = (arrival - (BURST - 1) * INTERVAL - now).total_seconds()
        if wait > 0:
            return wait
        kept[column] = arrival + INTERVAL
        if await replace_if_unchanged(table, entity, row(mailbox, ROW_KEY, Kind=ROW_KEY, **kept)):
            return 0.0
    return INTERVAL.total_seconds()

