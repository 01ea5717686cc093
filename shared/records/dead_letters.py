"""Dead letters: deliveries that gave up, kept per (event, flow) until an administrator replays them.

A delivery becomes a dead letter when its flow answered a 4xx other than 404/410 (retrying cannot help),
when 429/5xx/timeouts went on for longer than ``DELIVERY_RETRY_HOURS``, when the callback's address is
not allowed any more, or when the delivery worker itself kept failing on the message until the Functions
runtime moved it to ``deliveries-poison``. Nothing that gives up is dropped: it lands here.

The row (RowKey ``deadletter:<eventId>:<flowId>``) keeps the event id (its outbox row holds the payload and
is kept while this row exists), the flow, why it gave up (``Reason``: ``rejected`` | ``retryWindowExhausted``
| ``addressNotAllowed`` | ``redirected`` | ``poison``), the last answer (redacted, never a callback URL) and
the attempts; ``docs/architecture.md`` lists its properties.

Writing is an upsert (a replace): the same (event, flow) giving up twice keeps one row, the latest. Before it, the
mailbox is made due in the ``~index:deadletter`` due index (``shared.records.mailbox``, index rows), which
is how the outbox sweep finds dead letters past their retention without scanning every partition.
Listing and replay are ``shared.services.dead_letters`` (answered by ``shared.endpoints.dead_letters``); this
module is storage only: the rows, a page of them in RowKey order after a cursor (``page``: a bounded read, however
many letters a mailbox has), and the replay claim (``claim``: an ETag-guarded ``ReplayUntil``, so of two
concurrent replays only one delivers a letter; a replay that died leaves the claim to lapse, and the letter is
replayable again after ``REPLAY_CLAIM``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.adapters.logs import redact
from shared.records.mailbox import (
    PREFIX_FILTER,
    due_rows,
    if_unchanged,
    iso,
    mailbox_table,
    prefix_bounds,
    reschedule,
    row,
    rows_with_prefix,
    touch_due,
    utc,
)

DEADLETTER_PREFIX = "deadletter:"
INDEX = "deadletter"
ERROR_TEXT_CHARS = 1000
# How long a replay owns a letter it claimed: far longer than one replay takes (a few storage calls), so only
# a replay that died loses it.
REPLAY_CLAIM = timedelta(minutes=5)
# The id the API shows: "<eventId>.<flowId>" (a dot is safe in a URL path segment; ':' is not everywhere).
_ID = re.compile(r"^([A-Za-z0-9-]{1,64})\.([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")


class DeadLetterListing(TypedDict):
    """A dead letter as administrators see it: no callback URL, no payload."""

    id: str
    eventId: str
    flowId: str
    flowRegistered: bool
    trigger: str
    changeType: str
    appointmentId: str
    reason: str
    lastStatus: int
    lastErrorCode: str
    lastError: str
    attempts: int
    firstAttemptAt: str
    lastAttemptAt: str


def row_key(event_id: str, flow_id: str) -> str:
    return f"{DEADLETTER_PREFIX}{event_id}:{flow_id}"


def public_id(event_id: str, flow_id: str) -> str:
    return f"{event_id}.{flow_id}"


def parse_public_id(raw: str | None) -> tuple[str, str] | None:
    """(eventId, flowId) of an API id, or None when it is not one this API issued."""
    match = _ID.match((raw or "").strip().lower())
    return (match.group(1), match.group(2)) if match else None


@dataclass(frozen=True)
class DeadLetter:
    mailbox: str
    event_id: str
    flow_id: str
    trigger: str
    change_type: str
    appointment_id: str
    reason: str
    last_status: int
    last_error_code: str
    last_error: str
    attempts: int
    first_attempt_at: datetime | None
    last_attempt_at: datetime | None
    correlation_id: str
    etag: str = ""
    replay_until: datetime | None = None  # claimed by a replay until then

    @property
    def id(self) -> str:
        return public_id(self.event_id, self.flow_id)

    @classmethod
    def from_entity(cls, entity: Any) -> DeadLetter:
        return cls(
            mailbox=entity["PartitionKey"], event_id=entity.get("EventId", ""), flow_id=entity.get("FlowId", ""),
            trigger=entity.get("Trigger", ""), change_type=entity.get("ChangeType", ""),
            appointment_id=entity.get("AppointmentId", ""), reason=entity.get("Reason", ""),
            last_status=int(entity.get("LastStatus", 0)), last_error_code=entity.get("LastErrorCode", ""),
            last_error=entity.get("LastError", ""), attempts=int(entity.get("Attempts", 0)),
            first_attempt_at=utc(entity.get("FirstAttemptAt")), last_attempt_at=utc(entity.get("LastAttemptAt")),
            correlation_id=entity.get("CorrelationId", ""), etag=entity.metadata.get("etag", ""),
            replay_until=utc(entity.get("ReplayUntil")),
        )

    def claimed(self, now: datetime) -> bool:
        """Whether a replay owns the letter at ``now``."""
        return self.replay_until is not None and self.replay_until > now

    def listing(self, flow_registered: bool) -> DeadLetterListing:
        return {
            "id": self.id, "eventId": self.event_id, "flowId": self.flow_id, "flowRegistered": flow_registered,
            "trigger": self.trigger, "changeType": self.change_type, "appointmentId": self.appointment_id,
            "reason": self.reason, "lastStatus": self.last_status, "lastErrorCode": self.last_error_code,
            "lastError": self.last_error, "attempts": self.attempts,
            "firstAttemptAt": iso(self.first_attempt_at) if self.first_attempt_at else "",
            "lastAttemptAt": iso(self.last_attempt_at) if self.last_attempt_at else "",
        }


class DeadLetters:
    """Dead-letter rows of every mailbox, over the mailbox table."""

    def __init__(self, table: TableClient | None = None) -> None:
        self.table = table or mailbox_table()

    async def record(self, mailbox: str, event_id: str, flow_id: str, *, trigger: str, change_type: str,
                     appointment_id: str, reason: str, status: int, error_code: str, error_text: str,
                     attempts: int, first_attempt_at: datetime, correlation_id: str) -> DeadLetter:
        entity = row(
            mailbox, row_key(event_id, flow_id), Kind="deadletter", EventId=event_id, FlowId=flow_id,
            Trigger=trigger, ChangeType=change_type, AppointmentId=appointment_id, Reason=reason, LastStatus=status,
            LastErrorCode=error_code,
            # Redacted again here: whatever the caller passed, no URL query string or token is stored.
            LastError=redact(error_text)[:ERROR_TEXT_CHARS], Attempts=attempts, FirstAttemptAt=first_attempt_at,
            LastAttemptAt=datetime.now(UTC), CorrelationId=correlation_id)
        await touch_due(INDEX, mailbox)  # before the row: the sweep's index is a superset
        # Replace: a new giving-up is a new letter, free of an earlier replay's claim.
        await self.table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        return DeadLetter.from_entity(_WithMetadata(entity))

    async def get(self, mailbox: str, event_id: str, flow_id: str) -> DeadLetter | None:
        try:
            return DeadLetter.from_entity(await self.table.get_entity(mailbox, row_key(event_id, flow_id)))
        except ResourceNotFoundError:
            return None

    async def list(self, mailbox: str) -> list[DeadLetter]:
        letters = [DeadLetter.from_entity(row) for row in
                   await rows_with_prefix(mailbox, DEADLETTER_PREFIX, table=self.table)]
        return sorted(letters, key=lambda d: (d.last_attempt_at or datetime.min.replace(tzinfo=UTC), d.id))

    async def page(self, mailbox: str, after: tuple[str, str] | None, top: int) -> tuple[list[DeadLetter], bool]:
        """Up to ``top`` letters of the mailbox in RowKey (event, flow) order, after the letter ``after`` (its
        event and flow ids); and whether more follow. One storage request of ``top + 1`` rows."""
        query = f"PartitionKey eq @pk and {PREFIX_FILTER}"
        parameters = {"pk": mailbox, **prefix_bounds(DEADLETTER_PREFIX)}
        if after is not None:
            query += " and RowKey gt @after"
            parameters["after"] = row_key(*after)
        letters: list[DeadLetter] = []
        async for entity in self.table.query_entities(query, parameters=parameters, results_per_page=top + 1):
            letters.append(DeadLetter.from_entity(entity))
            if len(letters) > top:
                break
        return letters[:top], len(letters) > top

    async def claim(self, letter: DeadLetter, now: datetime) -> DeadLetter | None:
        """Claim the letter for one replay (ETag-guarded): the letter as claimed, or None when another replay
        holds it, or it changed or went since it was read."""
        if letter.claimed(now) or not letter.etag:
            return None
        until = now + REPLAY_CLAIM
        claim = {"PartitionKey": letter.mailbox, "RowKey": row_key(letter.event_id, letter.flow_id),
                 "ReplayUntil": until}
        written: dict[str, Any] = {}

        async def write() -> None:
            written.update(await self.table.update_entity(
                claim, mode=UpdateMode.MERGE, etag=letter.etag, match_condition=MatchConditions.IfNotModified))

        if not await if_unchanged(write()):
            return None
        return replace(letter, etag=written.get("etag", ""), replay_until=until)

    async def event_ids(self, mailbox: str) -> set[str]:
        """Events of the mailbox that have at least one dead letter (their outbox rows must stay)."""
        return {row["EventId"] for row in
                await rows_with_prefix(mailbox, DEADLETTER_PREFIX, select=["EventId"], table=self.table)}

    @staticmethod
    async def due(now: datetime) -> list[Any]:
        """Index rows of the mailboxes whose dead letters may be past their retention by ``now``."""
        return await due_rows(INDEX, now)

    @staticmethod
    async def reschedule(index_entity: Any, next_due: datetime | None, now: datetime) -> None:
        """The mailbox is due again at ``next_due``; None: it has no dead letters left."""
        await reschedule(index_entity, next_due, now)

    async def backfill_index(self) -> int:
        """Make every mailbox with dead letters due (a scan of the whole table: once, for rows written before
        the index existed). Returns how many mailboxes."""
        found = {e["PartitionKey"] async for e in self.table.query_entities(
            PREFIX_FILTER, parameters=prefix_bounds(DEADLETTER_PREFIX), select=["PartitionKey"])}
        for mailbox in found:
            await touch_due(INDEX, mailbox)
        return len(found)

    async def delete(self, letter: DeadLetter) -> bool:
        """Delete this version of the row. False when it is gone or was rewritten meanwhile (then it stays)."""
        kwargs: dict[str, Any] = {}
        if letter.etag:
            kwargs = {"etag": letter.etag, "match_condition": MatchConditions.IfNotModified}
        try:
            await self.table.delete_entity(letter.mailbox, row_key(letter.event_id, letter.flow_id), **kwargs)
        except ResourceNotFoundError:
            return False
        except HttpResponseError as error:
            if error.status_code == 412:
                return False
            raise
        return True


class _WithMetadata(dict):
    """An entity dict as written (no ETag known): enough for ``DeadLetter.from_entity``."""

    metadata: dict[str, Any] = {}  # noqa: RUF012 - read-only, shared empty metadata
