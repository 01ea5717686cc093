"""The delta check (timer ``DELTA_CHECK_SCHEDULE``, every 4 minutes): a change Graph never notified, found in minutes.

Every mailbox with flows gets one Graph delta round on its calendar view (``shared.services.calendar_changes``):
one request when nothing changed. A round that names changes becomes a change hint on ``mailbox-changes`` at
once, so a change whose notification was lost reaches its flows within one period plus the run's own length and a
reconcile, instead of waiting for the hourly resync (which stays: it also catches what the calendar does not show).

Cost (docs/benchmarks.md, "Delta check"): one Graph request per mailbox per run (15 an hour on the default
schedule), one storage write per mailbox per run (the round's new deltaLink), one query page per 1,000 mailboxes;
for a change the notification path already reconciled, usually nothing more (its hint is covered). Runs in-process,
``CONCURRENCY`` mailboxes at a time: at 10,000 mailboxes and ~150 ms per Graph request, about 50 s of a 4-minute
period, inside the Functions time limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.adapters.monitoring import correlated
from shared.messages import mailbox_changes
from shared.records import delta_tokens, flows
from shared.records.mailbox import ensure_index
from shared.services import calendar_changes
from shared.services.graph_failures import GraphFailure

log = logging.getLogger(__name__)

CONCURRENCY = 32


@dataclass
class DeltaReport:
    outcomes: Counter[str] = field(default_factory=Counter)  # unchanged | changed | started | expired | failed
    requests: int = 0  # Graph requests the rounds took
    hints: int = 0


async def check_all(now: datetime | None = None) -> DeltaReport:
    """One delta round per mailbox with flows; hints queued as they are found. Returns what happened."""
    with correlated():
        now = now or datetime.now(UTC)
        await ensure_index(flows.INDEX, flows.backfill_index)
        mailboxes, rounds = await asyncio.gather(flows.mailboxes_with_flows(), delta_tokens.read_all())
        await delta_tokens.forget(sorted(set(rounds) - set(mailboxes)))
        report = DeltaReport()
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(mailbox: str) -> None:
            async with limit:
                await _check_one(mailbox, rounds.get(mailbox), now, report)

        await asyncio.gather(*(one(m) for m in sorted(mailboxes)))
        log.info("delta check: %d mailboxes, %d Graph requests, %d hints (%s)", len(mailboxes), report.requests,
                 report.hints, ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items())))
        return report


async def _check_one(mailbox: str, state: delta_tokens.DeltaRound | None, now: datetime, report: DeltaReport) -> None:
    """One mailbox's round; a failure is logged and left to the next run (same round, nothing lost)."""
    try:
        checked = await calendar_changes.check(mailbox, state, now)
        if checked.hint is not None:
            await mailbox_changes.enqueue(checked.hint)
            report.hints += 1
    except GraphFailure as error:
        report.outcomes["failed"] += 1
        log.warning("delta check of %s failed: Graph %s %s", mailbox, error.graph_status, error.graph_code,
                    extra={"mailbox": mailbox})
        return
    except Exception as error:  # storage, say: the next run tries again
        report.outcomes["failed"] += 1
        log.warning("delta check of %s failed: %s", mailbox, type(error).__name__, extra={"mailbox": mailbox})
        return
    report.outcomes[checked.outcome] += 1
    report.requests += checked.requests
