"""Consumers of the ``mailbox-changes-poison`` and ``subscription-tasks-poison`` queues.

The Functions runtime moves a message here after its worker failed on it ``maxDequeueCount`` times in a row
(a bug, storage or Graph down throughout). Nothing may wait there silently for the periodic resync, so:

- a **mailbox-change hint** (a bundle is split first) comes back as a *full-resync* hint for its mailbox after
  a back-off (``BACKOFF_SECONDS``, by how often that mailbox's hints were poisoned already): a full reconcile
  covers whatever the hint was about, whatever it named;
- a **subscription task** goes back on ``subscription-tasks`` as it was, after the same back-off;
- each message carries ``poisonings`` (how often it was poisoned); after ``MAX_POISONINGS`` it is given up
  loudly (error log, the event below): the periodic resync and renewal sweep remain, and an admin is alerted;
- a **malformed** message is logged and dropped (retrying cannot fix it).

Every poisoned message emits ``QueueMessagePoisoned`` (queue, attempt = poisonings, willRetry, reason
``resync`` | ``retry`` | ``gaveUp`` | ``malformed``), which the ``poisoned-messages`` alert counts.
``deliveries-poison`` has its own consumer (``shared.workers.delivery.handle_poison``: dead letters).
"""

from __future__ import annotations

import logging
import random
from typing import Any

from shared.adapters.monitoring import telemetry_context, track_event
from shared.adapters.storage import MAILBOX_CHANGES_QUEUE, SUBSCRIPTION_TASKS_QUEUE, poison_queue
from shared.contracts import events
from shared.messages import mailbox_changes, subscription_tasks
from shared.messages.mailbox_changes import MailboxChangeMessage
from shared.messages.subscription_tasks import SubscriptionTask

log = logging.getLogger(__name__)

# Back-off before the n-th poisoning's retry (the last value for later ones), jittered by up to a quarter.
BACKOFF_SECONDS = (30, 120, 600, 1800)
MAX_POISONINGS = 5


def backoff_seconds(poisonings: int) -> int:
    base = BACKOFF_SECONDS[min(max(poisonings, 1), len(BACKOFF_SECONDS)) - 1]
    return round(base + random.uniform(0, base / 4))  # noqa: S311 - jitter only


def _poisonings(message: dict[str, Any]) -> int:
    """How often this message was poisoned, this time included."""
    try:
        return max(0, int(message.get("poisonings", 0))) + 1
    except (TypeError, ValueError):
        return 1


def _malformed(queue: str, error: Exception) -> None:
    log.error("dropped a malformed message from %s: %s", poison_queue(queue), error)
    track_event(events.QUEUE_MESSAGE_POISONED, queue=poison_queue(queue), attempt=0, willRetry=False,
                reason="malformed")


def _gave_up(queue: str, mailbox: str, poisonings: int, what: str) -> None:
    log.error("%s for %s was poisoned %d times; giving up (the periodic resync and renewal sweep remain): "
              "look for the errors of its correlation id", what, mailbox, poisonings, extra={"mailbox": mailbox})
    track_event(events.QUEUE_MESSAGE_POISONED, mailbox=mailbox, queue=poison_queue(queue), attempt=poisonings,
                willRetry=False, reason="gaveUp")


async def _mailbox_change(message: MailboxChangeMessage) -> str:
    mailbox = message["mailbox"].lower()
    poisonings = _poisonings(message)  # type: ignore[arg-type]
    with telemetry_context(mailbox=mailbox, correlationId=message.get("correlationId") or None):
        if poisonings > MAX_POISONINGS:
            _gave_up(MAILBOX_CHANGES_QUEUE, mailbox, poisonings, "a mailbox-change hint")
            return "gave up"
        hint = mailbox_changes.full_resync(mailbox, "poison", message.get("subscriptionId") or "")
        hint["poisonings"] = poisonings
        delay = backoff_seconds(poisonings)
        await mailbox_changes.enqueue(hint, delay_seconds=delay)
        log.warning("a poisoned mailbox-change hint for %s comes back as a full resync in %d s (poisoning %d of "
                    "%d)", mailbox, delay, poisonings, MAX_POISONINGS, extra={"mailbox": mailbox})
        track_event(events.QUEUE_MESSAGE_POISONED, queue=poison_queue(MAILBOX_CHANGES_QUEUE), attempt=poisonings,
                    willRetry=True, reason="resync")
        return "resync"


async def handle_mailbox_changes_poison(msg: Any) -> None:
    """Queue trigger on ``mailbox-changes-poison``."""
    try:
        message = mailbox_changes.parse(msg.get_body())
    except ValueError as error:
        _malformed(MAILBOX_CHANGES_QUEUE, error)
        return
    if mailbox_changes.is_bundle(message):
        items = mailbox_changes.bundle_messages(message)
        if not items:
            _malformed(MAILBOX_CHANGES_QUEUE, ValueError("a bundle without messages"))
        # One resync per mailbox is enough, however many of its hints the bundle held.
        by_mailbox = {m["mailbox"].lower(): m for m in items}
        for item in by_mailbox.values():
            await _mailbox_change(item)
        return
    await _mailbox_change(message)  # type: ignore[arg-type]


async def _task(item: SubscriptionTask) -> str:
    mailbox = item["mailbox"].lower()
    poisonings = _poisonings(item)  # type: ignore[arg-type]
    with telemetry_context(mailbox=mailbox, correlationId=item.get("correlationId") or None):
        if poisonings > MAX_POISONINGS:
            _gave_up(SUBSCRIPTION_TASKS_QUEUE, mailbox, poisonings, f"subscription task {item['action']}")
            return "gave up"
        again = dict(item)
        again["poisonings"] = poisonings
        delay = backoff_seconds(poisonings)
        await subscription_tasks.enqueue_task(again, delay_seconds=delay)  # type: ignore[arg-type]
        log.warning("a poisoned subscription task %s for %s is retried in %d s (poisoning %d of %d)",
                    item["action"], mailbox, delay, poisonings, MAX_POISONINGS, extra={"mailbox": mailbox})
        track_event(events.QUEUE_MESSAGE_POISONED, queue=poison_queue(SUBSCRIPTION_TASKS_QUEUE),
                    attempt=poisonings, willRetry=True, reason="retry")
        return "retry"


async def handle_subscription_tasks_poison(msg: Any) -> None:
    """Queue trigger on ``subscription-tasks-poison``: each task of the message (the sweep packs several)
    is retried on its own."""
    try:
        items = subscription_tasks.parse_message(msg.get_body())
    except ValueError as error:
        _malformed(SUBSCRIPTION_TASKS_QUEUE, error)
        return
    if not items:
        _malformed(SUBSCRIPTION_TASKS_QUEUE, ValueError("no valid task"))
    for item in items:
        await _task(item)
