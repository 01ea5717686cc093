"""The app's tables and queues on a storage account (an Azurite), created or emptied."""

from __future__ import annotations


def create_app_storage(connection_string: str) -> None:
    """Create the app's tables and queues, as `make run` does locally and Bicep does on Azure."""
    from azure.core.exceptions import ResourceExistsError
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    from shared.adapters.storage import QUEUES, TABLES, poison_queue

    tables = TableServiceClient.from_connection_string(connection_string)
    for name in TABLES:
        tables.create_table_if_not_exists(name)
    queues = QueueServiceClient.from_connection_string(connection_string)
    for name in QUEUES:
        for queue in (name, poison_queue(name)):
            try:
                queues.create_queue(queue)
            except ResourceExistsError:
                pass


def clean_app_storage(connection_string: str) -> None:
    """Empty every app table and queue: tests that share the session's Azurite start from nothing."""
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    from shared.adapters.storage import QUEUES, TABLES, poison_queue

    create_app_storage(connection_string)
    tables = TableServiceClient.from_connection_string(connection_string)
    for name in TABLES:
        table = tables.get_table_client(name)
        for entity in table.list_entities(select=["PartitionKey", "RowKey"]):
            table.delete_entity(entity["PartitionKey"], entity["RowKey"])
    queues = QueueServiceClient.from_connection_string(connection_string)
    for name in QUEUES:
        for queue in (name, poison_queue(name)):
            queues.get_queue_client(queue).clear_messages()
