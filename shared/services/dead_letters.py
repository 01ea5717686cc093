"""Replaying dead letters: a fresh delivery of each, or its discarding when it can never be delivered.

A replay enqueues a fresh delivery message (attempt 0, a new ``firstAttemptAt``, so a new retry window),
touches the event's outbox row (``LastEnqueuedAt``: the outbox sweep keeps it while the replay runs), and
deletes the dead-letter row (``shared.records.dead_letters``). A dead letter that can never be delivered is
discarded instead, and said so: its flow was removed since (``flowRemoved``), or its event is no longer stored
(``eventNoLongerStored``). The admin API is ``shared.endpoints.dead_letters``.

Each replay first claims its letter (``DeadLetters.claim``: ETag-guarded), so two replays at the same moment
(two replay-all calls, or one and a replay of that letter) deliver a letter once, not twice: the one that lost the
claim leaves the letter to the other (``beingReplayed``). A replay that dies after its claim leaves the letter
claimed for ``REPLAY_CLAIM`` and then replayable again; one that dies after its enqueue leaves the row, and a later
replay delivers again with the same ``Idempotency-Key`` (at-least-once, as every delivery).

Listing is paged (``listing``: a bounded page after a cursor) and replay-all walks the same pages.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from shared.adapters.monitoring import telemetry_context, track_event
from shared.contracts import events
from shared.messages import deliveries
from shared.records import delivery_log, outbox
from shared.records.dead_letters import DeadLetter, DeadLetterListing, DeadLetters
from shared.records.flows import FlowRegistry

log = logging.getLogger(__name__)

REPLAYED = "replayed"
FLOW_REMOVED = "flowRemoved"
EVENT_GONE = "eventNoLongerStored"
BEING_REPLAYED = "beingReplayed"
REASON_TEXT = {FLOW_REMOVED: "its flow has been removed since", EVENT_GONE: "its event is no longer stored"}
# Replay-all reads the letters a page at a time.
REPLAY_PAGE = 100


async def replay(letter: DeadLetter, registry: FlowRegistry, store: DeadLetters) -> str:
    """Replay one dead letter; returns ``replayed``, why it was discarded, or ``beingReplayed`` when another
    replay claimed it first (and this one did nothing)."""
    claimed = await store.claim(letter, datetime.now(UTC))
    if claimed is None:
        return BEING_REPLAYED
    letter = claimed  # its ETag is now the claim's: the deletes below are of the claimed row only
    if await registry.get_flow(letter.mailbox, letter.flow_id) is None:
        await store.delete(letter)
        return FLOW_REMOVED
    now = datetime.now(UTC)
    # Before the enqueue: from here on the outbox sweep cannot prune the event under the new message.
    if not await outbox.mark_enqueued(letter.mailbox, letter.event_id, now):
        await store.delete(letter)
        return EVENT_GONE
    await deliveries.enqueue(deliveries.new_message(letter.mailbox, letter.event_id, letter.flow_id, now))
    if letter.first_attempt_at is not None:  # the dead-lettered delivery's log row; the replay gets its own
        await delivery_log.mark_replayed(letter.mailbox, letter.flow_id, letter.event_id, letter.first_attempt_at)
    # Deleted after the enqueue: a crash in between leaves the row, and replaying it again is harmless.
    await store.delete(letter)
    return REPLAYED


async def replay_one(mailbox: str, event_id: str, flow_id: str) -> tuple[DeadLetter, str] | None:
    """Replay the mailbox's dead letter of that event and flow, and report it (``DeadLettersReplayed``): the
    letter and ``replayed`` or why it was discarded; None when there is no such dead letter."""
    store = DeadLetters()
    letter = await store.get(mailbox, event_id, flow_id)
    if letter is None:
        return None
    with telemetry_context(mailbox=mailbox, flowId=letter.flow_id):
        outcome = await replay(letter, FlowRegistry.default(), store)
        _report(mailbox, [(letter, outcome)], letter.flow_id)
    return letter, outcome


async def replay_all(mailbox: str, flow_id: str | None = None) -> list[tuple[DeadLetter, str]]:
    """Replay every dead letter of the mailbox (of one flow: ``flow_id``) and report it; each with its outcome
    (letters another replay claimed are left to it and not listed)."""
    store = DeadLetters()
    registry = FlowRegistry.default()
    outcomes: list[tuple[DeadLetter, str]] = []
    with telemetry_context(mailbox=mailbox, flowId=flow_id):
        # One at a time: a storage failure half-way leaves the rest as they were, and the admin replays again.
        after: tuple[str, str] | None = None
        more = True
        while more:
            letters, more = await store.page(mailbox, after, REPLAY_PAGE)
            for letter in letters:
                if flow_id is not None and letter.flow_id != flow_id:
                    continue  # RowKeys lead with the event: a flow's letters are found among the mailbox's
                outcome = await replay(letter, registry, store)
                if outcome != BEING_REPLAYED:
                    outcomes.append((letter, outcome))
            after = (letters[-1].event_id, letters[-1].flow_id) if letters else None
        _report(mailbox, outcomes, flow_id)
    return outcomes


async def listing(mailbox: str, after: tuple[str, str] | None, top: int) -> tuple[list[DeadLetterListing], bool]:
    """A page of the mailbox's dead letters as the admin API lists them (no callback URL, no payload), in id
    order after the letter ``after`` (event and flow ids); and whether more follow."""
    letters, more = await DeadLetters().page(mailbox, after, top)
    flows = {flow.webhook_id for flow in await FlowRegistry.default().list_flows(mailbox)} if letters else set()
    return [letter.listing(letter.flow_id in flows) for letter in letters], more


def _report(mailbox: str, outcomes: list[tuple[DeadLetter, str]], flow_id: str | None = None) -> None:
    replayed = sum(1 for _, outcome in outcomes if outcome == REPLAYED)
    track_event(events.DEAD_LETTERS_REPLAYED, mailbox=mailbox, flowId=flow_id, replayedCount=replayed)
    for letter, outcome in outcomes:
        if outcome in REASON_TEXT:
            log.warning("dead letter %s of %s discarded on replay: %s", letter.id, mailbox, REASON_TEXT[outcome],
                        extra={"mailbox": mailbox})
