"""The outbox sweep (timer ``OUTBOX_SWEEP_SCHEDULE``): no event stays un-fanned-out, no settled one stays forever.

First it deletes dead letters older than ``DEAD_LETTER_RETENTION_DAYS`` (never replayed; also those of flows
removed since), with a log line per mailbox: their events then settle like any other.

It fans out ``pending`` rows older than a minute (a crash between commit and fan-out), and deletes
``fannedOut`` rows whose last enqueue is older than ``max(OUTBOX_RETENTION_HOURS, DELIVERY_RETRY_HOURS
+ 1 h)`` and that have no dead letter. Why that is "all deliveries settled": every message of a fan-out
or replay carries a ``firstAttemptAt`` no earlier than the row's ``LastEnqueuedAt``, and gives up at
most ``DELIVERY_RETRY_HOURS`` (+ one capped back-off) later, as a success, a gone flow, or a dead letter;
a dead letter keeps the row.

Last it deletes the delivery log's day partitions older than ``DELIVERY_LOG_RETENTION_DAYS``
(``shared.records.delivery_log.prune``: one range query, a request when nothing is due).

Neither step scans the mailbox table: both read their due index (``shared.records.mailbox``, index rows),
then only the due mailboxes' ``deadletter:`` or ``outbox:`` rows, and move each mailbox's due time on to
when one of its rows needs the sweep next (a pending row: the next sweep; a fanned-out one: the end of its
retention; a dead letter: the end of its own). So a sweep costs what is due, not the table's size (one
snapshot row per appointment). The first sweep after an upgrade builds the indexes with one scan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.adapters.monitoring import correlated
from shared.adapters.settings import get_settings
from shared.records import delivery_log, outbox
from shared.records.dead_letters import INDEX as dead_letters_index
from shared.records.dead_letters import DeadLetters
from shared.records.mailbox import ensure_index, index_mailbox, utc
from shared.workers.fan_out import fan_out

log = logging.getLogger(__name__)

STALE_PENDING = timedelta(minutes=1)
# Outbox rows live at least this much longer than the retry window (a last capped back-off, the attempt).
RETENTION_MARGIN = timedelta(hours=1)


@dataclass
class SweepReport:
    fanned_out: int = 0  # pending events found and fanned out
    messages: int = 0
    pruned: int = 0
    kept_for_dead_letters: int = 0
    dead_letters_deleted: int = 0  # past DEAD_LETTER_RETENTION_DAYS
    deliveries_forgotten: int = 0  # delivery log rows past DELIVERY_LOG_RETENTION_DAYS


def retention() -> timedelta:
    settings = get_settings()
    return max(timedelta(hours=settings.outbox_retention_hours),
               timedelta(hours=settings.delivery_retry_hours) + RETENTION_MARGIN)


async def sweep_outbox(older_than: timedelta | None = None) -> SweepReport:
    """Fan out ``pending`` rows older than ``older_than`` (``STALE_PENDING``); prune settled ``fannedOut`` rows
    past retention."""
    older_than = STALE_PENDING if older_than is None else older_than
    with correlated():
        return await _sweep(older_than)


async def _sweep(older_than: timedelta) -> SweepReport:
    report = SweepReport()
    dead_letters = DeadLetters()
    await ensure_index(outbox.INDEX, outbox.backfill_index)
    await ensure_index(dead_letters_index, dead_letters.backfill_index)
    now = datetime.now(UTC)  # after a backfill: what it made due is due now
    await _prune_dead_letters(dead_letters, now, report)
    for index_entity in await outbox.due(now):
        await _sweep_mailbox(index_mailbox(index_entity), index_entity, dead_letters, now, older_than, report)
    await _prune_delivery_log(now, report)
    log.info("outbox sweep: %d pending event(s) fanned out (%d messages), %d pruned, %d kept for dead letters, "
             "%d expired dead letters deleted, %d delivery log rows past retention", report.fanned_out, report.messages,
             report.pruned, report.kept_for_dead_letters, report.dead_letters_deleted, report.deliveries_forgotten)
    return report


async def _prune_delivery_log(now: datetime, report: SweepReport) -> None:
    """The delivery log's expired days; a failure is logged and left to the next run (nothing depends on it)."""
    try:
        report.deliveries_forgotten = await delivery_log.prune(now, get_settings().delivery_log_retention_days)
    except Exception as error:
        log.warning("outbox sweep: delivery log not pruned (%s); the next run tries again", type(error).__name__)


async def _prune_dead_letters(dead_letters: DeadLetters, now: datetime, report: SweepReport) -> None:
    keep_for = timedelta(days=get_settings().dead_letter_retention_days)
    for index_entity in await dead_letters.due(now):
        mailbox = index_mailbox(index_entity)
        deleted, next_due = 0, None
        for letter in await dead_letters.list(mailbox):
            expires = (letter.last_attempt_at or now) + keep_for
            if expires <= now and await dead_letters.delete(letter):
                deleted += 1
            else:
                next_due = expires if next_due is None else min(next_due, expires)
        if deleted:
            log.warning("outbox sweep: %d dead letter(s) of %s older than %s days deleted, never replayed", deleted,
                        mailbox, get_settings().dead_letter_retention_days, extra={"mailbox": mailbox})
        report.dead_letters_deleted += deleted
        await dead_letters.reschedule(index_entity, next_due, now)


async def _sweep_mailbox(mailbox: str, index_entity: Any, dead_letters: DeadLetters, now: datetime,
                         older_than: timedelta, report: SweepReport) -> None:
    keep_for = retention()
    entities = await outbox.rows(mailbox)
    stale = [e["EventId"] for e in entities if e.get("State") == outbox.PENDING
             and (utc(e.metadata.get("timestamp")) or now) <= now - older_than]
    if stale:
        log.warning("outbox sweep: %d event(s) of %s were committed but never fanned out", len(stale), mailbox,
                    extra={"mailbox": mailbox})
        report.messages += await fan_out(mailbox, stale)
        report.fanned_out += len(stale)
    next_due: datetime | None = None

    def due_at(moment: datetime) -> None:
        nonlocal next_due
        next_due = moment if next_due is None else min(next_due, moment)

    keep: set[str] | None = None
    for entity in entities:
        if entity.get("State") != outbox.FANNED_OUT or entity["EventId"] in stale:
            # Pending (younger than ``older_than``, or fanned out just now): the next sweep looks again.
            due_at(now if entity["EventId"] not in stale else now + keep_for)
            continue
        expires = (utc(entity.get("LastEnqueuedAt")) or now) + keep_for
        if expires > now:
            due_at(expires)
            continue
        if keep is None:
            keep = await dead_letters.event_ids(mailbox)
        if entity["EventId"] in keep:
            report.kept_for_dead_letters += 1
            due_at(now + keep_for)  # settles with its dead letter (pruned or replayed)
        elif await outbox.delete_unchanged(entity):  # a replay meanwhile (LastEnqueuedAt) keeps the row
            report.pruned += 1
        else:
            due_at(now)
    await outbox.reschedule_mailbox(index_entity, next_due, now)
