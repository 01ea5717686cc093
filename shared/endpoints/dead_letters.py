"""The dead-letter admin API: list a mailbox's dead letters and replay one or all of them.

Routes (under the ``api`` route prefix), administrators of the business only — the same sign-in
(``shared.adapters.auth``) and the same rule (``shared.endpoints.access``: role ``administrator`` on the
business's staff list in Graph) as the registration API:

- ``GET  v1/bookingBusinesses/{smtp}/deadletters``              list (no callback URL, no payload)
- ``POST v1/bookingBusinesses/{smtp}/deadletters/{id}/replay``  replay one → 202
- ``POST v1/bookingBusinesses/{smtp}/deadletters/replay``       replay all → 202

What a replay does, and when a dead letter is discarded instead (410 ``DeadLetterNotReplayable`` for one
replay, listed under ``discarded`` by replay-all): ``shared.services.dead_letters``.
"""

from __future__ import annotations

from typing import TypedDict

import azure.functions as func

from shared.contracts.errors import ApiError
from shared.endpoints.access import administered_mailbox
from shared.endpoints.http import endpoint, json_response
from shared.records.dead_letters import DeadLetter, parse_public_id
from shared.services import dead_letters
from shared.services.dead_letters import REASON_TEXT, REPLAYED

# The route strings function_app.py registers.
DEADLETTERS_ROUTE = "v1/bookingBusinesses/{smtp}/deadletters"
DEADLETTER_REPLAY_ROUTE = "v1/bookingBusinesses/{smtp}/deadletters/{id}/replay"
DEADLETTERS_REPLAY_ROUTE = "v1/bookingBusinesses/{smtp}/deadletters/replay"


class Discarded(TypedDict):
    id: str
    reason: str


class ReplayAnswer(TypedDict):
    businessSmtp: str
    replayed: list[str]
    discarded: list[Discarded]


@endpoint
async def list_dead_letters(req: func.HttpRequest) -> func.HttpResponse:
    """The mailbox's dead letters, oldest first; callback URLs are never shown."""
    mailbox, _ = await administered_mailbox(req)
    return json_response({"businessSmtp": mailbox, "deadLetters": await dead_letters.listing(mailbox)})


def _answer(mailbox: str, outcomes: list[tuple[DeadLetter, str]]) -> func.HttpResponse:
    body: ReplayAnswer = {
        "businessSmtp": mailbox,
        "replayed": [letter.id for letter, outcome in outcomes if outcome == REPLAYED],
        "discarded": [{"id": letter.id, "reason": outcome} for letter, outcome in outcomes if outcome != REPLAYED],
    }
    return json_response(body, 202)


@endpoint
async def replay_dead_letter(req: func.HttpRequest) -> func.HttpResponse:
    """Replay one dead letter (route ``DEADLETTER_REPLAY_ROUTE``)."""
    mailbox, _ = await administered_mailbox(req)
    ids = parse_public_id(req.route_params.get("id"))
    if ids is None:
        raise ApiError("InvalidRequest", reason="the dead letter id is not one this API issued")
    replayed = await dead_letters.replay_one(mailbox, *ids)
    if replayed is None:
        raise ApiError("DeadLetterNotFound", business=mailbox, id=req.route_params.get("id"))
    letter, outcome = replayed
    if outcome != REPLAYED:
        raise ApiError("DeadLetterNotReplayable", id=letter.id, reason=REASON_TEXT[outcome])
    return _answer(mailbox, [(letter, outcome)])


@endpoint
async def replay_dead_letters(req: func.HttpRequest) -> func.HttpResponse:
    """Replay every dead letter of the business (route ``DEADLETTERS_REPLAY_ROUTE``)."""
    mailbox, _ = await administered_mailbox(req)
    return _answer(mailbox, await dead_letters.replay_all(mailbox))
