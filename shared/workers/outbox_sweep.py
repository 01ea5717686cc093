"""The outbox sweep (timer ``OUTBOX_SWEEP_SCHEDULE``): no event stays un-fanned-out, no settled one stays forever.

First it deletes dead letters older than ``DEAD_LETTER_RETENTION_DAYS`` (never replayed; also those of flows
removed since), with a log line per mailbox: their events then settle like any other.

It fans out ``pending`` rows older than a minute (a crash between commit and fan-out), and deletes
``fannedOut`` rows whose last enqueue is older than ``max(OUTBOX_RETENTION_HOURS, DELIVERY_RETRY_HOURS
+ 1 h)`` and that have no dead letter. Why that is "all deliveries settled": every message of a fan-out
or replay carries a ``firstAttemptAt`` no earlier than the row's ``LastEnqueuedAt``, and gives up at
most ``DELIVERY_RETRY_HOURS`` (+ one capped back-off) later, as a success, a gone flow, or a dead letter;
a dead letter keeps the row. Both steps query across partitions (a scan of the mailbox table filtered on
``State``): simple, and fine for the table sizes a Bookings tenant has; an index table of pending rows is
the next step if that ever stops being true.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.adapters.monitoring import correlated
from shared.adapters.settings import get_settings
from shared.records import outbox
from shared.records.dead_letters import DeadLetters
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
    now = datetime.now(UTC)
    for mailbox, event_ids in (await outbox.pending_before(now - older_than)).items():
        log.warning("outbox sweep: %d event(s) of %s were committed but never fanned out", len(event_ids), mailbox,
                    extra={"mailbox": mailbox})
        report.messages += await fan_out(mailbox, event_ids)
        report.fanned_out += len(event_ids)

    dead_letters = DeadLetters()
    expired_letters = await dead_letters.last_attempted_before(
        now - timedelta(days=get_settings().dead_letter_retention_days))
    by_mailbox: dict[str, int] = {}
    for letter in expired_letters:
        if await dead_letters.delete(letter):
            by_mailbox[letter.mailbox] = by_mailbox.get(letter.mailbox, 0) + 1
    for mailbox, count in by_mailbox.items():
        log.warning("outbox sweep: %d dead letter(s) of %s older than %s days deleted, never replayed", count,
                    mailbox, get_settings().dead_letter_retention_days, extra={"mailbox": mailbox})
    report.dead_letters_deleted = sum(by_mailbox.values())

    for mailbox, entities in (await outbox.fanned_out_before(now - retention())).items():
        keep = await dead_letters.event_ids(mailbox)
        for entity in entities:
            if entity["EventId"] in keep:
                report.kept_for_dead_letters += 1
            elif await outbox.delete_unchanged(entity):  # a replay meanwhile (LastEnqueuedAt) keeps the row
                report.pruned += 1
    log.info("outbox sweep: %d pending event(s) fanned out (%d messages), %d pruned, %d kept for dead letters, "
             "%d expired dead letters deleted", report.fanned_out, report.messages, report.pruned,
             report.kept_for_dead_letters, report.dead_letters_deleted)
    return report
