"""Storage clients and the names of every table and queue the app uses.

One ``Store`` per event loop holds the async Table and Queue service clients, built from settings:
a connection string locally (Azurite), service URIs plus an Entra credential on Azure (no keys).
Queue messages are base64 text, as the Functions queue trigger expects.

Infra and the local stack create exactly the tables and queues listed here.

It also states Table storage's size limits as the service counts them (``entity_size``): a string
property holds 32 K UTF-16 code units (64 KiB), an entity 1 MiB and 255 properties, a transaction 100
operations and a 4 MiB request. Python's ``len`` counts code points, which is not what storage counts
(an emoji is one code point and two UTF-16 units). The request is the SDK's JSON, ASCII with escapes (an
emoji is 12 bytes of it), which is also how Azurite measures an entity: ``entity_size`` is the larger of
both counts, so what passes it passes Azure and Azurite, and a transaction's entity sizes bound its request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from azure.data.tables.aio import TableServiceClient

from shared.adapters.lazy_imports import lazy, settled
from shared.adapters.per_loop import PerLoop
from shared.adapters.settings import StorageSettings, get_settings

if TYPE_CHECKING:
    import azure.storage.queue as queue_sdk
    import azure.storage.queue.aio as queue_aio
    from azure.data.tables.aio import TableClient
    from azure.storage.queue.aio import QueueClient, QueueServiceClient
else:
    # The queue SDK is ~0.2 s of import (its sync clients and azure-core's requests transport come with it):
    # loaded by the first queue client, or by the warm-up (shared.adapters.lazy_imports).
    queue_sdk = lazy("azure.storage.queue")
    queue_aio = lazy("azure.storage.queue.aio")

# All state of a mailbox lives in one partition (PartitionKey = lower-cased SMTP) of this table.
MAILBOX_TABLE = "mailboxes"
# Graph subscription id -> mailbox and clientState: the notification path's only read.
SUBSCRIPTION_TABLE = "subscriptions"
# One row per delivery of an event to a flow, partitioned by day (shared.records.delivery_log).
DELIVERY_LOG_TABLE = "deliverylog"
TABLES: tuple[str, ...] = (MAILBOX_TABLE, SUBSCRIPTION_TABLE, DELIVERY_LOG_TABLE)

MAILBOX_CHANGES_QUEUE = "mailbox-changes"
DELIVERIES_QUEUE = "deliveries"
# Renewals, reauthorizations, re-creations: fanned out so no single invocation holds them all.
SUBSCRIPTION_TASKS_QUEUE = "subscription-tasks"
QUEUES: tuple[str, ...] = (MAILBOX_CHANGES_QUEUE, DELIVERIES_QUEUE, SUBSCRIPTION_TASKS_QUEUE)


# ---- Table storage limits (https://learn.microsoft.com/en-us/rest/api/storageservices/understanding-the-table-service-data-model)

PROPERTY_MAX_UTF16_UNITS = 32 * 1024  # a string property: 64 KiB of UTF-16
ENTITY_MAX_BYTES = 1024 * 1024
ENTITY_MAX_PROPERTIES = 255  # including PartitionKey, RowKey and Timestamp
TRANSACTION_MAX_OPERATIONS = 100
TRANSACTION_MAX_BYTES = 4 * 1024 * 1024  # the whole request, multipart framing included


def utf16_units(text: str) -> int:
    """How long Table storage finds ``text``: UTF-16 code units (a code point beyond U+FFFF takes two)."""
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def _value_size(value: Any) -> int:
    if isinstance(value, str):
        # Azure: 4 + 2 per UTF-16 unit. On the wire (the 4 MiB request limit, and Azurite's count of an
        # entity): the JSON string as the SDK writes it, ASCII with escapes (\u00e9: 6 bytes, an emoji 12).
        return 4 + max(2 * utf16_units(value), len(json.dumps(value)))
    if isinstance(value, bytes):
        return 4 + len(value) * 2  # Azurite sees base64
    return 8 + 32  # numbers, booleans, times (and the odata type annotation Azurite sees beside some)


def entity_size(entity: Mapping[str, Any]) -> int:
    """An entity's size as Table storage counts it (the larger of Azure's and the wire's count): 4 bytes,
    and 8 + the name (2 per unit) + the value per property; the keys are counted like any property (Azure
    counts a little less for them)."""
    return 4 + sum(8 + 2 * utf16_units(name) + _value_size(value) for name, value in entity.items()
                   if value is not None)


def poison_queue(name: str) -> str:
    """The Functions runtime moves a message that failed maxDequeueCount times here."""
    return f"{name}-poison"


@dataclass
class Store:
    tables: TableServiceClient
    queues: QueueServiceClient
    credential: Any = None
    # Building a client builds its pipeline: cheap once, not on every request of a hot path.
    _table_clients: dict[str, TableClient] = field(default_factory=dict)
    _queue_clients: dict[str, QueueClient] = field(default_factory=dict)

    def table(self, name: str) -> TableClient:
        if name not in self._table_clients:
            self._table_clients[name] = self.tables.get_table_client(name)
        return self._table_clients[name]

    def queue(self, name: str) -> QueueClient:
        if name not in self._queue_clients:
            self._queue_clients[name] = self.queues.get_queue_client(
                name, message_encode_policy=queue_sdk.TextBase64EncodePolicy(),
                message_decode_policy=queue_sdk.TextBase64DecodePolicy())
        return self._queue_clients[name]

    async def approximate_length(self, name: str) -> int:
        """How many messages queue ``name`` holds, visible or not, as storage estimates it."""
        properties = await self.queue(name).get_queue_properties()
        return int(properties.approximate_message_count or 0)

    async def create_all(self) -> None:
        """Create every table and queue (and poison queue) if missing. Locally only: Bicep does it on Azure."""
        for name in TABLES:
            await self.tables.create_table_if_not_exists(name)
        for name in QUEUES:
            for queue in (name, poison_queue(name)):
                try:
                    await self.queues.create_queue(queue)
                except Exception as exc:  # azure-storage-queue has no create_if_not_exists
                    if getattr(exc, "error_code", None) != "QueueAlreadyExists":
                        raise

    async def close(self) -> None:
        await self.tables.close()
        await self.queues.close()
        if self.credential is not None:
            await self.credential.close()


# The queue SDK's default waits 15 s before its first retry: a notification that meets one transient
# storage error would answer Graph long after its 3 s limit. Retry after about a second instead; if storage
# is really down, the caller answers 503 and Graph retries later. (These build the SDK's async
# ExponentialRetry: backoff = initial_backoff + increment_base ** attempt.)
QUEUE_RETRY = {"retry_total": 2, "initial_backoff": 0, "increment_base": 1, "random_jitter_range": 0.25}


def open_store(storage: StorageSettings) -> Store:
    if storage.connection_string:
        return Store(
            TableServiceClient.from_connection_string(storage.connection_string),
            queue_aio.QueueServiceClient.from_connection_string(storage.connection_string, **QUEUE_RETRY),
        )
    settled()  # no import beside the warm-up's (shared.adapters.lazy_imports)
    from azure.identity.aio import DefaultAzureCredential  # only on Azure; keeps local imports light

    credential = DefaultAzureCredential(managed_identity_client_id=storage.client_id)
    return Store(
        TableServiceClient(endpoint=storage.table_service_uri, credential=credential),
        queue_aio.QueueServiceClient(account_url=storage.queue_service_uri, credential=credential, **QUEUE_RETRY),
        credential,
    )


# Async clients belong to the loop they were first used on; the Functions worker has one loop, tests many.
_stores: PerLoop[Store] = PerLoop(lambda: open_store(get_settings().storage))


def get_store() -> Store:
    return _stores.get()
