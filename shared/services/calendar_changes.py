"""What changed in a mailbox's calendar since the last look: Graph's delta query on its calendar view.

Bookings keeps each appointment as an event in the business mailbox's calendar, which is what the subscription
watches (docs/architecture.md, "Microsoft Graph facts"). ``GET /users/{mailbox}/calendarView/delta`` (application
``Calendars.Read``, https://learn.microsoft.com/en-us/graph/api/event-delta) answers, for a round started over a
fixed window, the events added, changed or removed in it since the round's token: an unchanged calendar answers
one page without items. So a change whose notification never came is found by the next round, one request per
mailbox (``check``), and becomes an ordinary change hint: the reconcile reads the appointments as for a
notification. A change the notification path already reconciled is not read twice: the hint carries the event's
``lastModifiedDateTime`` as its time, which a reconcile that began after it counts as covered (``@removed`` items
carry no time: their hint is read again, one listing).

The round's state (its deltaLink and window) is ``shared.records.delta_tokens``. Rounds are started afresh:

- for a mailbox without one (a full synchronization: every event of the window, paged; no hint, the snapshot and
  the subscription's baseline cover what was there);
- when Graph no longer knows the token (410: Outlook keeps tokens in a cache of limited size,
  https://learn.microsoft.com/en-us/graph/delta-query-overview): a full-resync hint as well, since changes between
  the last round and the new one are unknown;
- once a week (``WINDOW_ROLL``), after its last round's changes were taken, because the window is fixed for a token
  and the resync horizon moves on: a round's window reaches a week past the horizon, so it covers the horizon until
  it rolls. A roll is a full synchronization (every event of the window, 100 a page): weekly, it costs a mailbox
  with 500 appointments 5 requests a week instead of 5 a day.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.adapters.graph import GraphError, get_graph
from shared.adapters.settings import get_settings
from shared.contracts.graph_times import parse_graph_datetime
from shared.messages import mailbox_changes
from shared.messages.mailbox_changes import Change, MailboxChangeMessage
from shared.records import delta_tokens
from shared.records.delta_tokens import DeltaRound
from shared.services.graph_failures import GraphFailure

log = logging.getLogger(__name__)

WINDOW_ROLL = timedelta(days=7)
BATCH_SIZE = 20  # Graph's JSON batching: at most 20 requests a batch
MAX_HINT_CHANGES = 50  # event ids of ~150 characters: a hint well under the queue's 64 KiB
REASON = "delta"


@dataclass
class Checked:
    """One mailbox's check: what happened, the hint to queue (if any), the Graph requests it took."""

    mailbox: str
    outcome: str  # unchanged | changed | started | expired | failed
    hint: MailboxChangeMessage | None = None
    requests: int = 0
    notes: list[str] = field(default_factory=list)
    status: int = 0  # Graph's status for a failed round (0: not Graph's answer)
    next: DeltaRound | None = None  # the round to store, when the caller stores it (``check_batch`` does)


def window(now: datetime) -> tuple[datetime, datetime]:
    """The calendar view a new round covers: the resync's horizon, and ``WINDOW_ROLL`` beyond it (the horizon moves
    on while the round's window stays)."""
    settings = get_settings()
    return (now - timedelta(days=settings.resync_past_days),
            now + timedelta(days=settings.resync_horizon_days) + WINDOW_ROLL)


def hint_for(mailbox: str, items: list[dict[str, Any]]) -> MailboxChangeMessage | None:
    """The change hint for a round's items (None for none), timed at the latest change it names; more than
    ``MAX_HINT_CHANGES`` make a full-resync hint (a queue message holds 64 KiB)."""
    if not items:
        return None
    if len(items) > MAX_HINT_CHANGES:
        return mailbox_changes.full_resync(mailbox, REASON)
    changes: list[Change] = []
    times: list[datetime] = []
    removed = False
    for item in items:
        event_id = str(item.get("id") or "")
        if "@removed" in item:
            removed = True
            changes.append({"changeType": "deleted", "eventId": event_id})
            continue
        changes.append({"changeType": "updated", "eventId": event_id})
        modified = parse_graph_datetime(item.get("lastModifiedDateTime"))
        if modified is None:
            removed = True  # no time to compare with: treat it as new
        else:
            times.append(modified)
    received = None if removed or not times else max(times)
    return mailbox_changes.change_message(mailbox, changes=changes, reason=REASON, received_at=received)


def _failure(error: GraphError) -> GraphFailure:
    return GraphFailure(error, "DependencyUnavailable", dependency=f"Microsoft Graph ({error.status} {error.code})")


async def _new_round(mailbox: str, now: datetime) -> tuple[DeltaRound, int]:
    start, end = window(now)
    try:
        _, link, requests = await get_graph().calendar_view_delta(mailbox, start=start, end=end)
    except GraphError as error:
        raise _failure(error) from None
    state = DeltaRound(mailbox, link, start, end, now)
    await delta_tokens.put(state)
    return state, requests


async def check(mailbox: str, state: DeltaRound | None, now: datetime | None = None) -> Checked:
    """One delta round for ``mailbox`` from ``state`` (None: start one). ``GraphFailure`` when Graph refused for
    another reason than a lost token (the next check tries the same round again)."""
    now = now or datetime.now(UTC)
    if state is None:
        _, requests = await _new_round(mailbox, now)
        return Checked(mailbox, "started", requests=requests)
    try:
        items, link, requests = await get_graph().calendar_view_delta(mailbox, state.delta_link)
    except GraphError as error:
        if error.status != 410:
            raise _failure(error) from None
        return await _expired(mailbox, now, error.code)
    checked = await _finish(state, items, link, requests, now, needs_roll(state, now))
    if checked.next is not None:
        await delta_tokens.put(checked.next)
    return checked


def needs_roll(state: DeltaRound, now: datetime) -> bool:
    """Whether the round's window is ``WINDOW_ROLL`` old (its token keeps the window; the resync horizon moved on),
    or shorter than a new round's (a round of an earlier version, or ``RESYNC_HORIZON_DAYS`` raised since)."""
    start, end = window(now)
    return now - state.window_start >= WINDOW_ROLL + timedelta(days=get_settings().resync_past_days) \
        or state.window_end - state.window_start < end - start


async def check_batch(states: list[DeltaRound], now: datetime | None = None, roll: set[str] | None = None,
                      ) -> list[Checked]:
    """Rounds of up to ``BATCH_SIZE`` mailboxes in one HTTP request (``POST /$batch``; Graph still counts each
    round as a request): a round whose changes fill more than a page follows its nextLink alone. A mailbox Graph
    refused comes back ``failed`` (its next check tries the same round); ``GraphFailure`` when the batch itself
    failed. The mailboxes in ``roll`` start a new round after this one (``needs_roll``; the caller spreads them).
    The other rounds' next state is in ``Checked.next``: the caller queues the hints, then ``save``s them."""
    now = now or datetime.now(UTC)
    try:
        answers = await get_graph().batch_get([s.delta_link for s in states])
    except GraphError as error:
        raise _failure(error) from None
    checked = []
    for state, (status, _, body) in zip(states, answers, strict=True):
        page = body if isinstance(body, dict) else {}
        if status == 410:
            checked.append(await _expired(state.mailbox, now, str((page.get("error") or {}).get("code", ""))))
        elif status != 200:
            checked.append(Checked(state.mailbox, "failed", notes=[f"Graph {status}"], status=status))
        else:
            checked.append(await _from_page(state, page, now, state.mailbox in (roll or set())))
    return checked


async def save(checked: list[Checked]) -> None:
    """Store the next rounds of ``check_batch``'s results: after their hints were queued, so that a hint that could
    not be queued is found again by the next run (its round was not moved on)."""
    await delta_tokens.put_many(c.next for c in checked if c.next is not None)


async def _from_page(state: DeltaRound, page: dict[str, Any], now: datetime, roll: bool) -> Checked:
    items, link, requests = list(page.get("value") or []), str(page.get("@odata.deltaLink") or ""), 0
    if not link and page.get("@odata.nextLink"):  # more changes than a page: the rest alone
        try:
            more, link, requests = await get_graph().calendar_view_delta(state.mailbox, str(page["@odata.nextLink"]))
        except GraphError as error:
            if error.status != 410:
                return Checked(state.mailbox, "failed", notes=[f"Graph {error.status}"], status=error.status)
            return await _expired(state.mailbox, now, error.code)
        items += more
    if not link:
        return Checked(state.mailbox, "failed", notes=["no deltaLink"])
    return await _finish(state, items, link, requests, now, roll)


async def _expired(mailbox: str, now: datetime, code: str) -> Checked:
    log.warning("delta token of %s expired (%s); full resync and a new round", mailbox, code,
                extra={"mailbox": mailbox})
    _, more = await _new_round(mailbox, now)
    return Checked(mailbox, "expired", mailbox_changes.full_resync(mailbox, REASON), 1 + more)


async def _finish(state: DeltaRound, items: list[dict[str, Any]], link: str, requests: int, now: datetime,
                  roll: bool) -> Checked:
    """After a round: its hint, and the next round's state in ``Checked.next`` for the caller to store (``roll``:
    a new round instead, stored here: the window moved on)."""
    hint = hint_for(state.mailbox, items)
    outcome = "changed" if hint else "unchanged"
    if roll:
        _, more = await _new_round(state.mailbox, now)
        return Checked(state.mailbox, outcome, hint, requests + more, ["window rolled"])
    following = DeltaRound(state.mailbox, link, state.window_start, state.window_end, now)
    return Checked(state.mailbox, outcome, hint, requests, next=following)
