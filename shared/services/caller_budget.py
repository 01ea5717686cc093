"""What the app may ask of Graph on a business's mailbox on behalf of callers, so that the triggers keep theirs.

Outlook serves each app, per mailbox, at most 4 requests at once and 10,000 in 10 minutes
(https://learn.microsoft.com/en-us/graph/throttling-limits#outlook-service-limits); beyond, Graph answers 429 to
every caller of the app on that mailbox, the reconcile included, and a trigger's delivery waits. So the Graph calls
made for callers (the connector's actions, and the staff check before each of them and before a flow is saved)
are held to a share, and the reconcile and the renewal keep the rest first:

- **rate**, shared by every instance: ``graph_budget.PER_TEN_MINUTES`` (2,000) of the 10,000 in any 10 minutes,
  bursts of ``graph_budget.BURST`` (``shared.records.graph_budget``, one Table row per mailbox). Beyond it:
  ``429 GraphBudgetSpent`` with ``Retry-After``, before Graph is asked;
- **admission**: the staff check before an action spends 1 call, but passes only while ``ADMISSION_HEADROOM``
  more are left, so that loops retrying after a 429 do not starve the actions they are retrying;
- **concurrency**, per instance: ``CALLER_CONCURRENCY`` (1) of the 4 at a time per mailbox (a semaphore per mailbox
  and event loop, gone when nobody holds it); the reconcile reads at most ``RECONCILE_CONCURRENCY`` (3) at once.
  Across N instances callers may hold N at once; the rate above bounds what they can do with them.

The dropdown's staff reads are not spent from here: each business is read on demand once, whoever calls, then by
the refresh timer (``shared.services.bookings_directory``), and each caller has their own limit there.
"""

from __future__ import annotations

import asyncio
import math
import weakref

from shared.adapters.per_loop import PerLoop
from shared.contracts.errors import ApiError
from shared.records import graph_budget

OUTLOOK_CONCURRENCY = 4  # per app and mailbox (the throttling page)
CALLER_CONCURRENCY = 1
RECONCILE_CONCURRENCY = OUTLOOK_CONCURRENCY - CALLER_CONCURRENCY
# The staff check that admits an action passes only while the share holds room for the action after it (a page of
# 20 appointments with its calendar views): callers retrying after a 429 do not spend the share on checks alone.
ADMISSION_HEADROOM = 24

_slots: PerLoop[weakref.WeakValueDictionary[str, asyncio.Semaphore]] = PerLoop(weakref.WeakValueDictionary)


def slot(mailbox: str) -> asyncio.Semaphore:
    """The callers' share of the mailbox's concurrent Graph requests on this instance."""
    slots = _slots.get()
    held = slots.get(mailbox)
    if held is None:
        held = slots[mailbox] = asyncio.Semaphore(CALLER_CONCURRENCY)
    return held


async def spend(mailbox: str, calls: int = 1, *, headroom: int = 0) -> None:
    """Count ``calls`` Graph calls for callers on ``mailbox``; ``GraphBudgetSpent`` (429) when beyond the share.
    ``headroom``: refused unless that many more would also be allowed (``ADMISSION_HEADROOM``)."""
    wait = await graph_budget.take(mailbox, calls, headroom=headroom)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise ApiError("GraphBudgetSpent", headers={"Retry-After": str(seconds)}, business=mailbox,
                       seconds=seconds, perTenMinutes=f"{graph_budget.PER_TEN_MINUTES:,}")
