"""Storage clients and the names of every table and queue the app uses.

One ``Store`` per event loop holds the async Table and Queue service clients, built from settings:
a connection string locally (Azurite), service URIs plus an Entra credential on Azure (no keys).
Queue messages are base64 text, as the Functions queue trigger expects.

Infra and the local stack create exactly the tables and queues listed here.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from typing import Any

from azure.data.tables.aio import TableClient, TableServiceClient
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from shared.adapters.settings import StorageSettings, get_settings

# All state of a mailbox lives in one partition (PartitionKey = lower-cased SMTP) of this table.
MAILBOX_TABLE = "mailboxes"
# Graph subscription id -> mailbox and clientState: the notification path's only read.
SUBSCRIPTION_TABLE = "subscriptions"
TABLES: tuple[str, ...] = (MAILBOX_TABLE, SUBSCRIPTION_TABLE)

MAILBOX_CHANGES_QUEUE = "mailbox-changes"
DELIVERIES_QUEUE = "deliveries"
# Renewals, reauthorizations, re-creations: fanned out so no single invocation holds them all.
SUBSCRIPTION_TASKS_QUEUE = "subscription-tasks"
QUEUES: tuple[str, ...] = (MAILBOX_CHANGES_QUEUE, DELIVERIES_QUEUE, SUBSCRIPTION_TASKS_QUEUE)


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
                name, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy())
        return self._queue_clients[name]

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
            QueueServiceClient.from_connection_string(storage.connection_string, **QUEUE_RETRY),
        )
    from azure.identity.aio import DefaultAzureCredential  # only on Azure; keeps local imports light

    credential = DefaultAzureCredential(managed_identity_client_id=storage.client_id)
    return Store(
        TableServiceClient(endpoint=storage.table_service_uri, credential=credential),
        QueueServiceClient(account_url=storage.queue_service_uri, credential=credential, **QUEUE_RETRY),
        credential,
    )


# Async clients belong to the loop they were first used on; the Functions worker has one loop, tests many.
_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Store] = weakref.WeakKeyDictionary()


def get_store() -> Store:
    loop = asyncio.get_running_loop()
    store = _stores.get(loop)
    if store is None:
        store = _stores[loop] = open_store(get_settings().storage)
    return store
