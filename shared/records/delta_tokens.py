"""The ``~index:delta`` partition: each watched mailbox's Graph delta round on its calendar view.

The delta check (``shared.workers.delta_check``, through ``shared.services.calendar_changes``) asks Graph every
``DELTA_CHECK_SCHEDULE`` period what changed in each mailbox's calendar view since its last round. A round's
state is Graph's ``@odata.deltaLink`` (its token encodes the window: https://learn.microsoft.com/en-us/graph/
delta-query-events), kept here, one row per mailbox (PartitionKey ``~index:delta``, RowKey = the mailbox):

- ``DeltaLink``: the URL of the next round (opaque; it carries no secret, Graph asks for the app's token);
- ``WindowStart``, ``WindowEnd``: the calendar view the round covers, fixed for its token;
- ``CheckedAt``: when the round ended;
- ``Failures``: the checks in a row that failed for this mailbox (absent: none). A mailbox whose first round never
  succeeded has a row with only this.

The whole partition is read once per check (one query page per 1,000 mailboxes); the rows of a batch of rounds are
written after them in one transaction (Graph gives a new deltaLink every round), and a row is deleted when its
mailbox has no flows any more. Losing a row
costs one full synchronization of that calendar view (its events, no events sent: the snapshot decides).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.adapters.storage import TRANSACTION_MAX_OPERATIONS
from shared.records.mailbox import index_mailbox, index_partition, index_row, index_rows, mailbox_table, utc

KIND = "delta"


@dataclass(frozen=True)
class DeltaRound:
    mailbox: str
    delta_link: str
    window_start: datetime
    window_end: datetime
    checked_at: datetime | None = None
    failures: int = 0

    @property
    def started(self) -> bool:
        """Whether the round has a deltaLink to ask (else its mailbox needs a first round)."""
        return bool(self.delta_link)


def _from_entity(entity: Any) -> DeltaRound | None:
    start, end = utc(entity.get("WindowStart")), utc(entity.get("WindowEnd"))
    link = str(entity.get("DeltaLink") or "")
    failures = int(entity.get("Failures") or 0)
    if not link or start is None or end is None:
        if not failures:
            return None  # unreadable: a new round replaces it
        link, start, end = "", utc(entity.get("CheckedAt")) or datetime.now(UTC), datetime.now(UTC)
    return DeltaRound(index_mailbox(entity), link, start, end, utc(entity.get("CheckedAt")), failures)


async def read_all() -> dict[str, DeltaRound]:
    """Every mailbox's round, by mailbox (a row that cannot be read is left out: its mailbox starts afresh)."""
    rounds = (_from_entity(e) for e in await index_rows(KIND))
    return {r.mailbox: r for r in rounds if r is not None}


def _entity(state: DeltaRound) -> dict[str, Any]:
    return index_row(KIND, state.mailbox, DeltaLink=state.delta_link, WindowStart=state.window_start,
                     WindowEnd=state.window_end, **({"CheckedAt": state.checked_at} if state.checked_at else {}))


async def record_failures(mailboxes: Iterable[str], known: dict[str, DeltaRound]) -> dict[str, int]:
    """One more failed check for each of ``mailboxes`` (``known``: their rounds as read this run, if any); a merge
    keeps the round itself. Returns each mailbox's failures in a row now."""
    counts = {m: (known[m].failures if m in known else 0) + 1 for m in mailboxes}
    operations = [("upsert", index_row(KIND, m, Failures=n), {"mode": UpdateMode.MERGE}) for m, n in counts.items()]
    table = mailbox_table()
    for start in range(0, len(operations), TRANSACTION_MAX_OPERATIONS):
        await table.submit_transaction(operations[start:start + TRANSACTION_MAX_OPERATIONS])
    return counts


async def put(state: DeltaRound) -> None:
    await mailbox_table().upsert_entity(_entity(state), mode=UpdateMode.REPLACE)


async def put_many(states: Iterable[DeltaRound]) -> None:
    """Several rounds at once: one transaction per 100 (they share the partition), not a request each."""
    operations = [("upsert", _entity(s), {"mode": UpdateMode.REPLACE}) for s in states]
    table = mailbox_table()
    for start in range(0, len(operations), TRANSACTION_MAX_OPERATIONS):
        await table.submit_transaction(operations[start:start + TRANSACTION_MAX_OPERATIONS])


async def forget(mailboxes: Iterable[str]) -> None:
    """Drop the rounds of mailboxes nobody watches any more."""
    table = mailbox_table()
    for mailbox in mailboxes:
        try:
            await table.delete_entity(index_partition(KIND), mailbox)
        except ResourceNotFoundError:
            pass
