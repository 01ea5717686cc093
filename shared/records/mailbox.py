"""The mailbox partition: how every row of the ``mailboxes`` table is keyed, and which module owns each kind.

All state of one Bookings business lives in one partition of ``MAILBOX_TABLE``, keyed by the business's
*mailbox*: its SMTP address, lower-cased (the name used for it throughout the app). One partition means
the rows that must change together (a flow and the flow count; a snapshot and the event it caused) can
change in one entity-group transaction. Each kind of row has exactly one owning module, which alone
builds its key and entity and runs the queries on it:

==========================  ======================================  ==========================================
RowKey                      row                                      owner
==========================  ======================================  ==========================================
``quota``                   how many flows the mailbox has          ``shared.records.flows``
``flow:<webhookId>``        one registered flow                      ``shared.records.flows`` (its health
                                                                    columns: ``shared.records.flow_health``)
``subscription``            the mailbox's Graph subscription        ``shared.records.subscription_rows``
``sync``                    reconcile lease, coverage, baseline     ``shared.records.reconcile_state``
``snap:<appointmentId>``    last seen state of an appointment       ``shared.records.reconcile_state``
``cancelreason:<apptId>``   a reason given through our cancel API   ``shared.records.reconcile_state``
``outbox:<eventId>``        an event waiting to reach flows         ``shared.records.outbox``
``deadletter:<ev>:<flow>``  a delivery that gave up                 ``shared.records.dead_letters``
``testevents``              each flow's test-event rate limit       ``shared.records.test_event_limit``
``idem:<sha256>``           a create's idempotency key              ``shared.records.idempotency``
``graphbudget``             the callers' share of Graph's limits    ``shared.records.graph_budget``
==========================  ======================================  ==========================================

The properties of each row are in ``docs/architecture.md`` (one table, once). This module holds what
the owners share: the table client, the key of a row, the bounds of a RowKey prefix, time helpers, and the
mechanics of index rows.

Index rows. A timer that needs one kind of row of every mailbox (the renewal sweep: ``subscription``
rows; the resync: mailboxes with flows; the outbox sweep: ``outbox:`` and ``deadletter:`` rows) must not
scan the whole table, which holds a snapshot row per appointment. So each such kind also has an *index
partition* of this table, ``~index:<kind>`` (no mailbox can be named so: mailboxes hold an ``@``), with one
row per mailbox (RowKey = the mailbox), owned by the module owning the real rows. An index row lives in
another partition than its real rows, so no transaction covers both; instead every index is kept a
*superset*: it is written before the real rows and removed after them, and a sweep drops the index rows
it finds without real rows. Two shapes:

- a *member* index (``subscription``, ``flows``): "this mailbox may have such rows", with properties the
  sweep needs copied on it (``shared.records.subscription_rows``, ``shared.records.flows``);
- a *due* index (``outbox``, ``deadletter``): ``DueAt`` says when the mailbox's rows need the sweep next.
  A writer sets it to *now* (``touch_due``: never later than any row's own time); the sweep reads only
  the rows due (``due_rows``), looks at that mailbox's rows, and moves ``DueAt`` on to the earliest time
  one of them will need it (``reschedule``), or deletes the index row when the mailbox has none left.

Existing deployments: an index is built once by a scan of the whole table (``index_built``,
``mark_index_built``: a marker row ``built:<kind>`` per index in the ``~indexes`` partition); deleting a
marker rebuilds that index on the next sweep (the repair path: docs/architecture.md, "Upgrading: building
and rebuilding the indexes").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.adapters.storage import MAILBOX_TABLE, get_store


def mailbox_table() -> TableClient:
    """The ``mailboxes`` table of the running event loop's store."""
    return get_store().table(MAILBOX_TABLE)


def row(mailbox: str, row_key: str, **properties: Any) -> dict[str, Any]:
    """An entity of the mailbox partition: its keys and the given properties."""
    return {"PartitionKey": mailbox, "RowKey": row_key, **properties}


# An OData filter on a RowKey prefix, with the parameters ``prefix_bounds`` gives.
PREFIX_FILTER = "RowKey ge @lo and RowKey lt @hi"


def prefix_bounds(prefix: str) -> dict[str, str]:
    """The ``@lo``/``@hi`` of ``PREFIX_FILTER`` for RowKeys starting with ``prefix`` (``p:`` → [``p:``, ``p;``))."""
    return {"lo": prefix, "hi": prefix[:-1] + chr(ord(prefix[-1]) + 1)}


async def rows_with_prefix(mailbox: str, prefix: str, select: list[str] | None = None,
                           table: TableClient | None = None) -> list[Any]:
    """Every row of ``mailbox`` whose RowKey starts with ``prefix`` (``table``: default the mailbox table)."""
    query = f"PartitionKey eq @pk and {PREFIX_FILTER}"
    return [entity async for entity in (table or mailbox_table()).query_entities(
        query, parameters={"pk": mailbox, **prefix_bounds(prefix)}, select=select)]


def utc(value: Any) -> datetime | None:
    """A stored time as an aware UTC datetime (Table storage may hand back naive ones); None if not a time."""
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    """A time as the API shows it: ISO 8601 UTC to the second, with ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---- index rows -------------------------------------------------------------------------------------

INDEX_PREFIX = "~index:"
INDEXES_BUILT = "~indexes"  # the partition of the markers "this index was built from the whole table"
# How long an index row of a due index is kept when its mailbox shows no rows: longer than any writer
# takes from ``touch_due`` to committing its rows (one storage call), so a sweep never drops the index
# row of rows about to be written.
INDEX_GRACE = timedelta(minutes=10)


def index_partition(kind: str) -> str:
    return f"{INDEX_PREFIX}{kind}"


def index_row(kind: str, mailbox: str, **properties: Any) -> dict[str, Any]:
    """The index row of ``mailbox`` in the index ``kind``."""
    return {"PartitionKey": index_partition(kind), "RowKey": mailbox, **properties}


def index_mailbox(entity: Any) -> str:
    """The mailbox an index row stands for."""
    return str(entity["RowKey"])


async def index_rows(kind: str, query: str = "", parameters: dict[str, Any] | None = None,
                     select: list[str] | None = None) -> list[Any]:
    """The rows of the index ``kind`` (one partition), filtered by ``query`` if given."""
    text = "PartitionKey eq @ipk" + (f" and {query}" if query else "")
    return [entity async for entity in mailbox_table().query_entities(
        text, parameters={"ipk": index_partition(kind), **(parameters or {})}, select=select)]


async def put_index(kind: str, mailbox: str, properties: dict[str, Any] | None = None,
                    table: TableClient | None = None) -> None:
    """Write (merge) the index row of ``mailbox``: it exists afterwards, with these properties."""
    await (table or mailbox_table()).upsert_entity(index_row(kind, mailbox, **(properties or {})),
                                                   mode=UpdateMode.MERGE)


async def get_index(kind: str, mailbox: str, table: TableClient | None = None) -> Any | None:
    try:
        return await (table or mailbox_table()).get_entity(index_partition(kind), mailbox)
    except ResourceNotFoundError:
        return None


async def replace_if_unchanged(table: TableClient, read: Any | None, entity: dict[str, Any]) -> bool:
    """Write ``entity`` as computed from ``read`` (None: there was no row): create it, or replace the row read under
    its ETag (replace, not merge: columns the new row drops go). False when another writer came first."""
    if read is None:
        try:
            await table.create_entity(entity)
        except ResourceExistsError:
            return False
        return True
    return await if_unchanged(table.update_entity(entity, mode=UpdateMode.REPLACE, etag=read.metadata["etag"],
                                                  match_condition=MatchConditions.IfNotModified))


async def if_unchanged(write: Awaitable[Any]) -> bool:
    """Await an ETag-guarded write or delete: False when the row changed (412) or went (404) meanwhile."""
    try:
        await write
    except ResourceNotFoundError:
        return False
    except HttpResponseError as error:
        if error.status_code != 412:
            raise
        return False
    return True


def _unchanged(entity: Any) -> dict[str, Any]:
    return {"etag": entity.metadata["etag"], "match_condition": MatchConditions.IfNotModified}


async def update_index_unchanged(entity: Any, **properties: Any) -> bool:
    """Merge ``properties`` into the index row as read (ETag). False when it changed or went meanwhile."""
    return await if_unchanged(mailbox_table().update_entity(
        {"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"], **properties},
        mode=UpdateMode.MERGE, **_unchanged(entity)))


async def delete_index_unchanged(entity: Any, table: TableClient | None = None) -> bool:
    """Delete the index row as read (ETag): one a writer touched meanwhile stays. True when deleted."""
    return await if_unchanged((table or mailbox_table()).delete_entity(entity["PartitionKey"], entity["RowKey"],
                                                                       **_unchanged(entity)))


async def touch_due(kind: str, mailbox: str) -> None:
    """Before writing rows of ``kind`` for ``mailbox``: make its index row due now (and so a superset)."""
    now = datetime.now(UTC)
    await put_index(kind, mailbox, {"DueAt": now, "TouchedAt": now})


async def due_rows(kind: str, now: datetime) -> list[Any]:
    """Index rows of ``kind`` due by ``now``."""
    return await index_rows(kind, "DueAt le @now", {"now": now})


async def reschedule(entity: Any, next_due: datetime | None, now: datetime) -> None:
    """After the sweep looked at a due mailbox: due again at ``next_due``, or (None: it has no rows left)
    gone, once no writer touched it within ``INDEX_GRACE``. A writer that touched the row since it was read
    keeps it as it wrote it (ETag)."""
    if next_due is not None:
        await update_index_unchanged(entity, DueAt=next_due)
        return
    touched = utc(entity.get("TouchedAt"))
    if touched is not None and touched > now - INDEX_GRACE:
        await update_index_unchanged(entity, DueAt=touched + INDEX_GRACE)
    else:
        await delete_index_unchanged(entity)


def _built_key(kind: str) -> str:
    # Not the kind's name alone: a version without indexes, still running during an upgrade, would take a
    # RowKey "subscription" for a subscription row in its scan.
    return f"built:{kind}"


async def index_built(kind: str) -> bool:
    """Whether the index ``kind`` was built from the whole table (after that, writers keep it)."""
    try:
        await mailbox_table().get_entity(INDEXES_BUILT, _built_key(kind))
    except ResourceNotFoundError:
        return False
    return True


async def mark_index_built(kind: str) -> None:
    try:
        await mailbox_table().create_entity({"PartitionKey": INDEXES_BUILT, "RowKey": _built_key(kind),
                                             "BuiltAt": datetime.now(UTC)})
    except ResourceExistsError:
        pass


async def ensure_index(kind: str, backfill: Callable[[], Awaitable[int]]) -> bool:
    """Build the index ``kind`` with ``backfill`` (the owner's scan of the whole table) unless that was done:
    the first sweep after an upgrade, or after its marker was deleted. True when it was built now."""
    if await index_built(kind):
        return False
    await backfill()
    await mark_index_built(kind)
    return True
