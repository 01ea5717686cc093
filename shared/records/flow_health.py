"""Each flow's delivery health: the ``DeliveredCount``, ``FailedCount``, ``ConsecutiveFailures``,
``LastDeliveryStatus`` and ``LastDeliveryDateTime`` columns of its ``flow:<webhookId>`` row, written behind
the deliveries.

The delivery worker notes each attempt's outcome (``record_delivery``); each flow's outcomes of the last
``HEALTH_FLUSH_SECONDS`` go out in one ETag-guarded merge (a burst of 100 events to a flow costs a few writes,
not 200 storage calls), retried on 412 so that concurrent instances keep the counts exact. The merge starts
from the columns and ETag this process last wrote to the row (``_written``) instead of reading it first; a 412
says another instance wrote since, and the row is read again. What a process holds when it is killed (at most
that long of outcomes) is lost: the counters are for administrators, and the deliveries themselves are in
telemetry (DeliverySucceeded / DeliveryFailed).

The rest of the flow row (registration, limit, the delivery cache) is ``shared.records.flows``'.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from cachetools import LRUCache

from shared.adapters.per_loop import PerLoop
from shared.records.flows import Flow
from shared.records.mailbox import mailbox_table, row

log = logging.getLogger(__name__)

HEALTH_FLUSH_SECONDS = 1.0
HEALTH_WRITE_ATTEMPTS = 8
WRITTEN_SIZE = 10_000  # flow rows whose last write this process remembers


@dataclass
class _Outcomes:
    """Outcomes of attempts to one flow not yet written, in order."""

    delivered: int = 0
    failed: int = 0
    failures_since_success: int = 0
    any_success: bool = False
    status: str = ""
    at: datetime | None = None

    def add(self, delivered: bool, status: str, at: datetime) -> None:
        if delivered:
            self.delivered += 1
            self.any_success, self.failures_since_success = True, 0
        else:
            self.failed += 1
            self.failures_since_success += 1
        self.status, self.at = status, at

    def changes(self, entity: Any) -> dict[str, Any]:
        stored_failures = 0 if self.any_success else int(entity.get("ConsecutiveFailures", 0))
        return {"DeliveredCount": int(entity.get("DeliveredCount", 0)) + self.delivered,
                "FailedCount": int(entity.get("FailedCount", 0)) + self.failed,
                "ConsecutiveFailures": stored_failures + self.failures_since_success,
                "LastDeliveryStatus": self.status, "LastDeliveryDateTime": self.at}


_FlowRow = tuple[str, str]  # (mailbox, row key)


class _Writers:
    """One event loop's outcomes not yet written, and the task writing each flow's (tasks and storage clients
    belong to a loop)."""

    def __init__(self) -> None:
        self.outcomes: dict[_FlowRow, _Outcomes] = {}
        self.tasks: dict[_FlowRow, tuple[asyncio.Task[None], asyncio.Event]] = {}

    def note(self, key: _FlowRow, delivered: bool, status: str) -> None:
        self.outcomes.setdefault(key, _Outcomes()).add(delivered, status, datetime.now(UTC))
        writer = self.tasks.get(key)
        if writer is None or writer[0].done():
            now = asyncio.Event()
            self.tasks[key] = (asyncio.get_running_loop().create_task(self._write_behind(key, now)), now)

    async def flush(self) -> None:
        writers = list(self.tasks.values())
        for _, now in writers:
            now.set()
        await asyncio.gather(*(task for task, _ in writers), return_exceptions=True)

    async def _write_behind(self, key: _FlowRow, now: asyncio.Event) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(now.wait(), HEALTH_FLUSH_SECONDS)
            # Outcomes noted while a write is in flight go out right after it. Between the last pop and the
            # ``finally`` nothing else runs (no await), so a new outcome always finds a writer or starts one.
            while (outcomes := self.outcomes.pop(key, None)) is not None:
                await _write_health(*key, outcomes)
        except Exception:  # a task's exception would otherwise only reach asyncio's "never retrieved" log
            log.exception("flow health of %s not updated", key[1])
        finally:
            self.tasks.pop(key, None)


_writers: PerLoop[_Writers] = PerLoop(_Writers)


def record_delivery(flow: Flow, *, delivered: bool, status: str) -> None:
    """Note one attempt's outcome in the flow's health; written within ``HEALTH_FLUSH_SECONDS``. Never fails
    the delivery: redelivering because a counter could not be written would be worse."""
    _writers.get().note((flow.mailbox, flow.row_key), delivered, status)


async def flush_health() -> None:
    """Write every outcome noted so far on this event loop (tests, benchmarks and a host stopping)."""
    await _writers.get().flush()


# The health columns and ETag this process last wrote per flow row: the next write starts from them instead
# of reading the row (one merge per write, not a read and a merge); a 412 says someone else wrote since.
# Process-wide (an ETag is the row's, not a loop's); the least recently written rows make room.
_written: LRUCache[_FlowRow, dict[str, Any]] = LRUCache(WRITTEN_SIZE)


async def _write_health(mailbox: str, row_key: str, outcomes: _Outcomes) -> None:
    table = mailbox_table()
    key = (mailbox, row_key)
    for attempt in range(HEALTH_WRITE_ATTEMPTS):
        known = _written.pop(key, None)
        if known is not None:
            etag, entity = known["etag"], known
        else:
            try:
                stored = await table.get_entity(mailbox, row_key)
            except ResourceNotFoundError:
                return  # the flow was removed meanwhile
            etag, entity = stored.metadata["etag"], stored
        changes = outcomes.changes(entity)
        try:
            answer = await table.update_entity(row(mailbox, row_key, **changes), mode=UpdateMode.MERGE, etag=etag,
                                               match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            return
        except HttpResponseError as error:
            if error.status_code != 412:
                log.warning("flow health of %s not updated: %s", row_key, error.status_code)
                return
            if known is None:  # a fresh read lost a race: back off before the next
                await asyncio.sleep(random.uniform(0, 0.01 * 2 ** attempt))  # noqa: S311 - jitter only
            continue
        if answer.get("etag"):
            _written[key] = {**changes, "etag": answer["etag"]}
        return
    log.warning("flow health of %s not updated: too many concurrent writers", row_key)
