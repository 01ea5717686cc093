"""The delta check (timer ``DELTA_CHECK_SCHEDULE``, every 4 minutes): a change Graph never notified, found in minutes.

Every mailbox with flows gets one Graph delta round on its calendar view (``shared.services.calendar_changes``):
one request when nothing changed. A round that names changes becomes a change hint on ``mailbox-changes`` at
once, so a change whose notification was lost reaches its flows within one period plus the run's own length and a
reconcile, instead of waiting for the periodic resync (every 6 hours: the safety net under notifications and this
check).

The rounds travel ``BATCH_SIZE`` (20) to a Graph JSON batch (``POST /$batch``), ``CONCURRENCY`` batches at a time: one
HTTP request per 20 mailboxes, though Graph counts (and throttles) each round as a request of its own. A mailbox's
first round (a full synchronization, paged) goes alone. Cost (docs/benchmarks.md, "Delta check"): per mailbox and
run one Graph request, 1/20 of an HTTP request and one storage write (the round's new deltaLink), plus one query page
per 1,000 mailboxes; a change the notification path already reconciled usually costs nothing more (its hint is
covered). A round that fails (throttled, storage) is left as it was: the next run asks the same question again.

A mailbox whose check keeps failing (Graph refusing its calendar, say an application access policy that leaves it
out) would fall back to the resync, 6 hours on Azure, without a word. So failures in a row are counted on its row,
and every ``FAILURES_PER_REPORT`` of them (an hour on the default schedule) it gets ``DeltaCheckFailing`` (error
level; the delta-check-failing alert) and a full-resync hint: while its check fails, it is still looked at hourly.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.adapters.monitoring import correlated, track_event
from shared.contracts import events
from shared.messages import mailbox_changes
from shared.records import delta_tokens, flows
from shared.records.mailbox import ensure_index
from shared.services import calendar_changes

log = logging.getLogger(__name__)

CONCURRENCY = 16  # batches (of 20 rounds) or first rounds at a time
BATCH_SIZE = calendar_changes.BATCH_SIZE
ROLLS_PER_RUN = 100  # 10,000 windows roll over 100 runs (under 7 hours on the default schedule)
FAILURES_PER_REPORT = 15  # an hour of runs on the default schedule
FAILING = "delta check failing"


@dataclass
class DeltaReport:
    outcomes: Counter[str] = field(default_factory=Counter)  # unchanged | changed | started | expired | failed
    requests: int = 0  # Graph requests the rounds took (each request of a batch counted)
    http_requests: int = 0  # HTTP requests to Graph (a batch of 20 rounds is one)
    hints: int = 0
    rolled: int = 0  # rounds started afresh because their window was a week old (WINDOW_ROLL)
    failed: dict[str, int] = field(default_factory=dict)  # mailbox -> Graph's status (0: not Graph's answer)


async def check_all(now: datetime | None = None) -> DeltaReport:
    """One delta round per mailbox with flows, in batches of ``BATCH_SIZE``; hints queued as they are found."""
    with correlated():
        now = now or datetime.now(UTC)
        await ensure_index(flows.INDEX, flows.backfill_index)
        mailboxes, rounds = await asyncio.gather(flows.mailboxes_with_flows(), delta_tokens.read_all())
        await delta_tokens.forget(sorted(set(rounds) - set(mailboxes)))
        report = DeltaReport()
        limit = asyncio.Semaphore(CONCURRENCY)
        ongoing = [rounds[m] for m in sorted(mailboxes) if m in rounds and rounds[m].started]
        batches = [ongoing[i:i + BATCH_SIZE] for i in range(0, len(ongoing), BATCH_SIZE)]
        # Windows roll WINDOW_ROLL after they began; at most ROLLS_PER_RUN a run (oldest first), so that rounds started
        # together (a deployment) do not all make a full synchronization in the same run and lengthen it.
        due = sorted((s for s in ongoing if calendar_changes.needs_roll(s, now)), key=lambda s: s.window_start)
        roll = {s.mailbox for s in due[:ROLLS_PER_RUN]}

        async def batch(states: list[delta_tokens.DeltaRound]) -> None:
            async with limit:
                await _check_batch(states, now, report, roll)

        async def new(mailbox: str) -> None:
            async with limit:
                await _check_one(mailbox, now, report)

        fresh = sorted(m for m in mailboxes if m not in rounds or not rounds[m].started)
        await asyncio.gather(*(batch(b) for b in batches), *(new(m) for m in fresh))
        await _count_failures(report, rounds)
        log.info("delta check: %d mailboxes, %d Graph requests in %d HTTP requests, %d hints (%s)", len(mailboxes),
                 report.requests, report.http_requests, report.hints,
                 ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items())))
        return report


async def _check_batch(states: list[delta_tokens.DeltaRound], now: datetime, report: DeltaReport,
                       roll: set[str]) -> None:
    """Up to ``BATCH_SIZE`` rounds in one request; a failure is logged and left to the next run (nothing lost)."""
    try:
        results = await calendar_changes.check_batch(states, now, roll & {s.mailbox for s in states})
    except Exception as error:  # Graph or storage: the next run tries the same rounds again
        report.outcomes["failed"] += len(states)
        report.failed.update({s.mailbox: int(getattr(error, "graph_status", 0) or 0) for s in states})
        log.warning("delta check of %d mailboxes failed: %s %s", len(states), type(error).__name__,
                    getattr(error, "graph_status", ""))
        return
    report.http_requests += 1
    report.requests += len(states)
    try:
        for checked in results:
            await _record(checked, report)
        await calendar_changes.save(results)  # only now: a hint not queued leaves its round to be asked again
    except Exception as error:  # storage: the next run asks the same rounds again
        log.warning("delta check of %d mailboxes not saved: %s", len(states), type(error).__name__)


async def _check_one(mailbox: str, now: datetime, report: DeltaReport) -> None:
    """A mailbox's first round (a full synchronization, paged); a failure is left to the next run."""
    try:
        checked = await calendar_changes.check(mailbox, None, now)
    except Exception as error:  # Graph or storage: the next run tries again
        report.outcomes["failed"] += 1
        report.failed[mailbox] = int(getattr(error, "graph_status", 0) or 0)
        log.warning("delta check of %s failed: %s %s", mailbox, type(error).__name__,
                    getattr(error, "graph_status", ""), extra={"mailbox": mailbox})
        return
    await _record(checked, report)


async def _record(checked: calendar_changes.Checked, report: DeltaReport) -> None:
    report.outcomes[checked.outcome] += 1
    report.rolled += "window rolled" in checked.notes
    report.requests += checked.requests
    report.http_requests += checked.requests
    if checked.outcome == "failed":
        report.failed[checked.mailbox] = checked.status
        log.warning("delta check of %s failed: %s", checked.mailbox, "; ".join(checked.notes),
                    extra={"mailbox": checked.mailbox})
    if checked.hint is not None:
        await mailbox_changes.enqueue(checked.hint)
        report.hints += 1


async def _count_failures(report: DeltaReport, rounds: dict[str, delta_tokens.DeltaRound]) -> None:
    """Count this run's failures on the mailboxes' rows; every ``FAILURES_PER_REPORT`` in a row, say so and look at
    the mailbox in full (a failure to count is logged: the next run counts again)."""
    if not report.failed:
        return
    try:
        counts = await delta_tokens.record_failures(sorted(report.failed), rounds)
        for mailbox, count in counts.items():
            if count % FAILURES_PER_REPORT == 0:
                status = report.failed[mailbox]
                log.error("the delta check of %s failed %d times in a row (Graph %s); a full resync instead",
                          mailbox, count, status or "not reached", extra={"mailbox": mailbox})
                track_event(events.DELTA_CHECK_FAILING, logging.ERROR, mailbox=mailbox, consecutiveFailures=count,
                            status=status)
                await mailbox_changes.enqueue(mailbox_changes.full_resync(mailbox, FAILING))
    except Exception as error:  # storage: the next run counts again
        log.warning("could not count the delta check's failures (%s)", type(error).__name__)
