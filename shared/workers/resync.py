"""The periodic resync (timer ``RESYNC_SCHEDULE``): a full-resync hint for every mailbox with flows.

It catches whatever Graph never notified. Each hint is an ordinary ``mailbox-changes`` message; the
reconcile worker compares the mailbox's whole horizon with its snapshot.

The hints are spread evenly over ``RESYNC_SPREAD_MINUTES`` with the queue's visibility delay, so at
10,000 mailboxes the reconciles do not all start together and compete with the notifications for
instances. They travel in at most one queue message per ``SLOT_SECONDS`` (a bundle of the mailboxes due
then, split by the reconcile worker when it becomes visible): hundreds of messages waiting out their
delays, not thousands. A hint made now and seen later is still right: it asks for a comparison of the
whole horizon, and one that a full reconcile of its mailbox has covered meanwhile is skipped as covered.
"""

from __future__ import annotations

import asyncio
import logging

from shared.adapters.monitoring import correlated
from shared.adapters.settings import get_settings
from shared.messages import mailbox_changes
from shared.records import flows
from shared.records.mailbox import ensure_index

log = logging.getLogger(__name__)

SLOT_SECONDS = 10
ENQUEUE_CONCURRENCY = 16


def schedule(mailboxes: list[str], spread_seconds: int) -> list[tuple[int, list[str]]]:
    """(delay in seconds, mailboxes) per slot: mailbox *i* of *n* at about *i × spread / n*."""
    slots = max(1, min(len(mailboxes), spread_seconds // SLOT_SECONDS))
    per_slot, extra = divmod(len(mailboxes), slots)
    planned, start = [], 0
    for slot in range(slots):
        end = start + per_slot + (1 if slot < extra else 0)
        if end > start:
            planned.append((round(slot * spread_seconds / slots), mailboxes[start:end]))
        start = end
    return planned


async def resync_all() -> int:
    """Queue the hints, spread over ``RESYNC_SPREAD_MINUTES``; returns how many mailboxes."""
    with correlated():
        await ensure_index(flows.INDEX, flows.backfill_index)
        mailboxes = sorted(await flows.mailboxes_with_flows())
        spread = get_settings().resync_spread_minutes * 60
        limit = asyncio.Semaphore(ENQUEUE_CONCURRENCY)

        async def put(delay: int, slot: list[str]) -> None:
            for message in mailbox_changes.packed([mailbox_changes.full_resync(m, "timer") for m in slot]):
                async with limit:
                    await mailbox_changes.enqueue(message, delay_seconds=delay)

        await asyncio.gather(*(put(delay, slot) for delay, slot in schedule(mailboxes, spread)))
        log.info("periodic resync: %d mailboxes, spread over %d s", len(mailboxes), spread)
        return len(mailboxes)
