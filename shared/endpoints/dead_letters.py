"""The dead-letter admin API: list a mailbox's dead letters and replay one or all of them.

Routes (under the ``api`` route prefix), administrators of the business only — the same sign-in
(``shared.adapters.auth``) and the same rule (``shared.endpoints.access``: role ``administrator`` on the
business's staff list in Graph) as the registration API:

- ``GET  v1/bookingBusinesses/{smtp}/deadletters``              list (no callback URL, no payload)
- ``POST v1/bookingBusinesses/{smtp}/deadletters/{id}/replay``  replay one → 202
- ``POST v1/bookingBusinesses/{smtp}/deadletters/replay``       replay all → 202

A replay enqueues a fresh delivery message (attempt 0, a new ``firstAttemptAt``, so a new retry window),
touches the event's outbox row (``LastEnqueuedAt``: the outbox sweep keeps it while the replay runs), and
deletes the dead-letter row. A dead letter that can never be delivered is discarded instead, and said so:
its flow was removed since (``flowRemoved``), or its event is no longer stored (``eventNoLongerStored``).
One replay answers 410 ``DeadLetterNotReplayable`` for those; replay-all lists them under ``discarded``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TypedDict

import azure.functions as func

from shared.adapters.monitoring import telemetry_context, track_event
from shared.contracts import events
from shared.contracts.errors import ApiError
from shared.endpoints.access import administered_mailbox
from shared.endpoints.http import endpoint, json_response
from shared.messages import deliveries
from shared.records import outbox
from shared.records.dead_letters import DeadLetter, DeadLetters, parse_public_id
from shared.records.flows import FlowRegistry

log = logging.getLogger(__name__)

# The route strings function_app.py registers.
DEADLETTERS_ROUTE = "v1/bookingBusinesses/{smtp}/deadletters"
DEADLETTER_REPLAY_ROUTE = "v1/bookingBusinesses/{smtp}/deadletters/{id}/replay"
DEADLETTERS_REPLAY_ROUTE = "v1/bookingBusinesses/{smtp}/deadletters/replay"

REPLAYED = "replayed"
FLOW_REMOVED = "flowRemoved"
EVENT_GONE = "eventNoLongerStored"
_REASON_TEXT = {FLOW_REMOVED: "its flow has been removed since", EVENT_GONE: "its event is no longer stored"}


class Discarded(TypedDict):
    id: str
    reason: str


class ReplayAnswer(TypedDict):
    businessSmtp: str
    replayed: list[str]
    discarded: list[Discarded]


async def replay(letter: DeadLetter, registry: FlowRegistry, store: DeadLetters) -> str:
    """Replay one dead letter; returns ``replayed`` or why it was discarded."""
    if await registry.get_flow(letter.mailbox, letter.flow_id) is None:
        await store.delete(letter)
        return FLOW_REMOVED
    now = datetime.now(UTC)
    # Before the enqueue: from here on the outbox sweep cannot prune the event under the new message.
    if not await outbox.mark_enqueued(letter.mailbox, letter.event_id, now):
        await store.delete(letter)
        return EVENT_GONE
    await deliveries.enqueue(deliveries.new_message(letter.mailbox, letter.event_id, letter.flow_id, now))
    # Deleted after the enqueue: a crash in between leaves the row, and replaying it again is harmless.
    await store.delete(letter)
    return REPLAYED


@endpoint
async def list_dead_letters(req: func.HttpRequest) -> func.HttpResponse:
    """The mailbox's dead letters, oldest first; callback URLs are never shown."""
    mailbox, _ = await administered_mailbox(req)
    letters = await DeadLetters().list(mailbox)
    flows = {flow.webhook_id for flow in await FlowRegistry.default().list_flows(mailbox)}
    return json_response({"businessSmtp": mailbox,
                          "deadLetters": [letter.listing(letter.flow_id in flows) for letter in letters]})


def _answer(mailbox: str, outcomes: list[tuple[DeadLetter, str]]) -> func.HttpResponse:
    body: ReplayAnswer = {
        "businessSmtp": mailbox,
        "replayed": [letter.id for letter, outcome in outcomes if outcome == REPLAYED],
        "discarded": [{"id": letter.id, "reason": outcome} for letter, outcome in outcomes if outcome != REPLAYED],
    }
    return json_response(body, 202)


def _report(mailbox: str, outcomes: list[tuple[DeadLetter, str]], flow_id: str | None = None) -> None:
    replayed = sum(1 for _, outcome in outcomes if outcome == REPLAYED)
    track_event(events.DEAD_LETTERS_REPLAYED, mailbox=mailbox, flowId=flow_id, replayedCount=replayed)
    for letter, outcome in outcomes:
        if outcome != REPLAYED:
            log.warning("dead letter %s of %s discarded on replay: %s", letter.id, mailbox, _REASON_TEXT[outcome],
                        extra={"mailbox": mailbox})


@endpoint
async def replay_dead_letter(req: func.HttpRequest) -> func.HttpResponse:
    """Replay one dead letter (route ``DEADLETTER_REPLAY_ROUTE``)."""
    mailbox, _ = await administered_mailbox(req)
    ids = parse_public_id(req.route_params.get("id"))
    if ids is None:
        raise ApiError("InvalidRequest", reason="the dead letter id is not one this API issued")
    store = DeadLetters()
    letter = await store.get(mailbox, *ids)
    if letter is None:
        raise ApiError("DeadLetterNotFound", business=mailbox, id=req.route_params.get("id"))
    with telemetry_context(mailbox=mailbox, flowId=letter.flow_id):
        outcome = await replay(letter, FlowRegistry.default(), store)
        _report(mailbox, [(letter, outcome)], letter.flow_id)
    if outcome != REPLAYED:
        raise ApiError("DeadLetterNotReplayable", id=letter.id, reason=_REASON_TEXT[outcome])
    return _answer(mailbox, [(letter, outcome)])


@endpoint
async def replay_dead_letters(req: func.HttpRequest) -> func.HttpResponse:
    """Replay every dead letter of the business (route ``DEADLETTERS_REPLAY_ROUTE``)."""
    mailbox, _ = await administered_mailbox(req)
    store = DeadLetters()
    registry = FlowRegistry.default()
    outcomes: list[tuple[DeadLetter, str]] = []
    with telemetry_context(mailbox=mailbox):
        # One at a time: a mailbox has a handful of flows and its dead letters are few; a storage failure
        # half-way leaves the rest as they were, and the admin replays again.
        for letter in await store.list(mailbox):
            outcomes.append((letter, await replay(letter, registry, store)))
        _report(mailbox, outcomes)
    return _answer(mailbox, outcomes)
