"""The periodic resync (timer ``RESYNC_SCHEDULE``): a full-resync hint for every mailbox with flows.

It catches whatever Graph never notified. Each hint is an ordinary ``mailbox-changes`` message; the
reconcile worker compares the mailbox's whole horizon with its snapshot.
"""

from __future__ import annotations

import asyncio
import logging

from shared.adapters.monitoring import correlated
from shared.messages import mailbox_changes
from shared.records import flows
from shared.records.mailbox import ensure_index

log = logging.getLogger(__name__)


async def resync_all() -> int:
    """Queue the hints; returns how many mailboxes."""
    with correlated():
        await ensure_index(flows.INDEX, flows.backfill_index)
        mailboxes = await flows.mailboxes_with_flows()
        await asyncio.gather(*(mailbox_changes.enqueue(mailbox_changes.full_resync(m, "timer")) for m in mailboxes))
        log.info("periodic resync: %d mailboxes", len(mailboxes))
        return len(mailboxes)
