"""The dead-letter admin API: list a mailbox's dead letters and replay one or all of them.

Routes (under the ``api`` route prefix), administrators of the business only — the same sign-in
(``shared.adapters.auth``) and the same rule (``shared.endpoints.access``: role ``administrator`` on the
business's staff list in Graph) as the registration API:

- ``GET  v1/bookingBusinesses/{smtp}/deadletters?top=&after=``  list (no callback URL, no payload), a page of
  at most ``top`` (``DEFAULT_PAGE_SIZE``, up to ``MAX_PAGE_SIZE``) in id order, with ``nextLink`` when more follow
- ``POST v1/bookingBusinesses/{smtp}/deadletters/{id}/replay``  replay one → 202
- ``POST v1/bookingBusinesses/{smtp}/deadletters/replay``       replay all → 202

What a replay does, and when a dead letter is discarded instead (410 ``DeadLetterNotReplayable`` for one
replay, listed under ``discarded`` by replay-all; 409 ``DeadLetterBeingReplayed`` when another replay has
claimed that letter, which replay-all leaves to it): ``shared.services.dead_letters``.
"""

from __future__ import annotations

from typing import Any, TypedDict
from urllib.parse import quote, urlencode

import azure.functions as func

from shared.adapters.settings import get_settings
from shared.contracts.errors import ApiError
from shared.endpoints.access import administered_mailbox
from shared.endpoints.http import endpoint, json_response, page_size
from shared.records.dead_letters import DeadLetter, parse_public_id
from shared.services import dead_letters
from shared.services.dead_letters import BEING_REPLAYED, REASON_TEXT, REPLAYED

# The route strings function_app.py registers.
DEADLETTERS_ROUTE = "v1/bookingBusinesses/{smtp}/deadletters"
DEADLETTER_REPLAY_ROUTE = "v1/bookingBusinesses/{smtp}/deadletters/{id}/replay"
DEADLETTERS_REPLAY_ROUTE = "v1/bookingBusinesses/{smtp}/deadletters/replay"
ROUTE_PREFIX = "api"
# A letter lists in about half a kilobyte: a page stays a few dozen KB (300 letters were once one 149 KB answer).
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 100


class Discarded(TypedDict):
    id: str
    reason: str


class ReplayAnswer(TypedDict):
    businessSmtp: str
    replayed: list[str]
    discarded: list[Discarded]


@endpoint
async def list_dead_letters(req: func.HttpRequest) -> func.HttpResponse:
    """A page of the mailbox's dead letters in id order (``nextLink`` to the next); callback URLs are never shown."""
    mailbox, _ = await administered_mailbox(req)
    top = page_size(req.params.get("top"), DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    raw_after = req.params.get("after")
    after = parse_public_id(raw_after) if raw_after else None
    if raw_after and after is None:
        raise ApiError("InvalidRequest", reason="after must be a dead letter id from the previous page's nextLink")
    letters, more = await dead_letters.listing(mailbox, after, top)
    body: dict[str, Any] = {"businessSmtp": mailbox, "deadLetters": letters}
    if more:
        body["nextLink"] = _next_link(mailbox, top, letters[-1]["id"])
    return json_response(body)



def _next_link(mailbox: str, top: int, last_id: str) -> str:
    """The next page's URL: the same page size, after the last letter of this one."""
    path = DEADLETTERS_ROUTE.replace("{smtp}", quote(mailbox, safe="@"))
    return f"{get_settings().public_base_url}/{ROUTE_PREFIX}/{path}?{urlencode({'top': top, 'after': last_id})}"


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
    if outcome == BEING_REPLAYED:
        raise ApiError("DeadLetterBeingReplayed", id=letter.id)
    if outcome != REPLAYED:
        raise ApiError("DeadLetterNotReplayable", id=letter.id, reason=REASON_TEXT[outcome])
    return _answer(mailbox, [(letter, outcome)])


@endpoint
async def replay_dead_letters(req: func.HttpRequest) -> func.HttpResponse:
    """Replay every dead letter of the business (route ``DEADLETTERS_REPLAY_ROUTE``)."""
    mailbox, _ = await administered_mailbox(req)
    return _answer(mailbox, await dead_letters.replay_all(mailbox))
