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
``flow:<webhookId>``        one registered flow                      ``shared.records.flows``
``subscription``            the mailbox's Graph subscription        ``shared.records.subscription_rows``
``sync``                    reconcile lease, coverage, baseline     ``shared.records.reconcile_state``
``snap:<appointmentId>``    last seen state of an appointment       ``shared.records.reconcile_state``
``cancelreason:<apptId>``   a reason given through our cancel API   ``shared.records.reconcile_state``
``outbox:<eventId>``        an event waiting to reach flows         ``shared.records.outbox``
``deadletter:<ev>:<flow>``  a delivery that gave up                 ``shared.records.dead_letters``
==========================  ======================================  ==========================================

The properties of each row are in ``docs/architecture.md`` (one table, once). This module holds what
the owners share: the table client, the key of a row, the bounds of a RowKey prefix, and time helpers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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
