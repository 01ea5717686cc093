"""The dead-letter admin API: list a mailbox's dead letters and replay one or all of them.

Routes (under the ``api`` route prefix), administrators of the business only — the same sign-in
(``shared.auth``) and the same rule (``require_administrator``: role ``administrator`` on the business's
staff list in Graph) as the registration API:

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
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared import delivery, events
from shared.auth import authenticate
from shared.deadletters import DeadLetter, DeadLetters, parse_public_id
from shared.errors import ApiError
from shared.monitoring import telemetry_context, track_event
from shared.outbox import outbox_row_key
from shared.registration_api import parse_business, require_administrator
from shared.registrations import FlowRegistry
from shared.settings import get_settings
from shared.store import MAILBOX_TABLE, get_store
from shared.web import endpoint, json_response

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


def _registry() -> FlowRegistry:
    return FlowRegistry(get_store().table(MAILBOX_TABLE), get_settings().max_flows_per_mailbox)


async def replay(letter: DeadLetter, registry: FlowRegistry, store: DeadLetters, correlation_id: str) -> str:
    """Replay one dead letter; returns ``replayed`` or why it was discarded."""
    table = get_store().table(MAILBOX_TABLE)
    if await registry.get_flow(letter.mailbox, letter.flow_id) is None:
        await store.delete(letter)
        return FLOW_REMOVED
    now = datetime.now(UTC)
    try:
        # Before the enqueue: from here on the outbox sweep cannot prune the event under the new message.
        await table.update_entity({"PartitionKey": letter.mailbox, "RowKey": outbox_row_key(letter.event_id),
                                   "LastEnqueuedAt": now}, mode=UpdateMode.MERGE)
    except ResourceNotFoundError:
        await store.delete(letter)
        return EVENT_GONE
    await delivery.enqueue(delivery.new_message(letter.mailbox, letter.event_id, letter.flow_id, correlation_id, now))
    # Deleted after the enqueue: a crash in between leaves the row, and replaying it again is harmless.
    await store.delete(letter)
    return REPLAYED


async def _authorised(req: func.HttpRequest) -> str:
    caller = await authenticate(req.headers.get("authorization"))
    business = parse_business(req.route_params.get("smtp"))
    await require_administrator(business, caller)
    return business


@endpoint
async def list_dead_letters(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    """The mailbox's dead letters, oldest first; callback URLs are never shown."""
    business = await _authorised(req)
    letters = await DeadLetters(get_store().table(MAILBOX_TABLE)).list(business)
    flows = {flow.webhook_id for flow in await _registry().list_flows(business)}
    return json_response({"businessSmtp": business,
                          "deadLetters": [letter.listing(letter.flow_id in flows) for letter in letters]},
                         correlation_id=correlation_id)


def _answer(business: str, outcomes: list[tuple[DeadLetter, str]], correlation_id: str) -> func.HttpResponse:
    body: ReplayAnswer = {
        "businessSmtp": business,
        "replayed": [letter.id for letter, outcome in outcomes if outcome == REPLAYED],
        "discarded": [{"id": letter.id, "reason": outcome} for letter, outcome in outcomes if outcome != REPLAYED],
    }
    return json_response(body, 202, correlation_id=correlation_id)


def _report(business: str, outcomes: list[tuple[DeadLetter, str]], correlation_id: str,
            flow_id: str | None = None) -> None:
    replayed = sum(1 for _, outcome in outcomes if outcome == REPLAYED)
    track_event(events.DEAD_LETTERS_REPLAYED, mailbox=business, flowId=flow_id, replayedCount=replayed,
                correlationId=correlation_id)
    for letter, outcome in outcomes:
        if outcome != REPLAYED:
            log.warning("dead letter %s of %s discarded on replay: %s", letter.id, business, _REASON_TEXT[outcome],
                        extra={"mailbox": business, "correlationId": correlation_id})


@endpoint
async def replay_dead_letter(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    """Replay one dead letter (route ``DEADLETTER_REPLAY_ROUTE``)."""
    business = await _authorised(req)
    ids = parse_public_id(req.route_params.get("id"))
    if ids is None:
        raise ApiError("InvalidRequest", reason="the dead letter id is not one this API issued")
    store = DeadLetters(get_store().table(MAILBOX_TABLE))
    letter = await store.get(business, *ids)
    if letter is None:
        raise ApiError("DeadLetterNotFound", business=business, id=req.route_params.get("id"))
    with telemetry_context(mailbox=business, flowId=letter.flow_id, correlationId=correlation_id):
        outcome = await replay(letter, _registry(), store, correlation_id)
        _report(business, [(letter, outcome)], correlation_id, letter.flow_id)
    if outcome != REPLAYED:
        raise ApiError("DeadLetterNotReplayable", id=letter.id, reason=_REASON_TEXT[outcome])
    return _answer(business, [(letter, outcome)], correlation_id)


@endpoint
async def replay_dead_letters(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    """Replay every dead letter of the business (route ``DEADLETTERS_REPLAY_ROUTE``)."""
    business = await _authorised(req)
    store = DeadLetters(get_store().table(MAILBOX_TABLE))
    registry = _registry()
    outcomes: list[tuple[DeadLetter, str]] = []
    with telemetry_context(mailbox=business, correlationId=correlation_id):
        # One at a time: a mailbox has a handful of flows and its dead letters are few; a storage failure
        # half-way leaves the rest as they were, and the admin replays again.
        for letter in await store.list(business):
            outcomes.append((letter, await replay(letter, registry, store, correlation_id)))
        _report(business, outcomes, correlation_id)
    return _answer(business, outcomes, correlation_id)
