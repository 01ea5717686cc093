"""Blob storage: the one door to it. The app keeps one kind of blob, the flow exports
(``shared.services.backup``), in the container ``FLOW_BACKUP_CONTAINER`` of its own storage account.

Clients are built from the same storage settings as the tables and queues: the connection string locally
(Azurite runs a blob service too), ``AzureWebJobsStorage__blobServiceUri`` and the managed identity on Azure
(keys are off). The blob SDK is imported on first use, never at start-up: only the daily export and a restore
need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.adapters.per_loop import PerLoop
from shared.adapters.settings import StorageSettings, get_settings

if TYPE_CHECKING:
    from azure.storage.blob.aio import BlobServiceClient

# infra/modules/storage.bicep creates it (versioning, soft delete, lifecycle); locally the first export does.
FLOW_BACKUP_CONTAINER = "flow-backups"


class BlobsNotConfigured(RuntimeError):
    """Identity-based storage without ``AzureWebJobsStorage__blobServiceUri``: there is no blob endpoint."""


@dataclass(frozen=True)
class BlobInfo:
    name: str
    last_modified: datetime
    metadata: dict[str, str]


def _open(storage: StorageSettings) -> tuple[BlobServiceClient, Any]:
    from azure.storage.blob.aio import BlobServiceClient

    if storage.connection_string:
        return BlobServiceClient.from_connection_string(storage.connection_string), None
    if not storage.blob_service_uri:
        raise BlobsNotConfigured("AzureWebJobsStorage__blobServiceUri is not set: the flow export has nowhere to go")
    from azure.identity.aio import DefaultAzureCredential

    credential = DefaultAzureCredential(managed_identity_client_id=storage.client_id)
    return BlobServiceClient(account_url=storage.blob_service_uri, credential=credential), credential


class Blobs:
    """The blob service client of one event loop (pooled connections)."""

    def __init__(self) -> None:
        self._client: BlobServiceClient | None = None
        self._credential: Any = None

    @property
    def client(self) -> BlobServiceClient:
        if self._client is None:
            self._client, self._credential = _open(get_settings().storage)
        return self._client

    async def put(self, container: str, name: str, data: bytes, metadata: dict[str, str]) -> None:
        """Write a block blob (one Put Blob for what the export writes); creates the container if missing (locally:
        on Azure Bicep made it, and the create is only tried when the first write says it is missing)."""
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        blob = self.client.get_blob_client(container, name)
        try:
            await blob.upload_blob(data, overwrite=True, metadata=metadata)
        except ResourceNotFoundError:
            try:
                await self.client.create_container(container)
            except ResourceExistsError:
                pass
            await blob.upload_blob(data, overwrite=True, metadata=metadata)

    async def get(self, container: str, name: str) -> bytes:
        """A blob's content; ``FileNotFoundError`` when there is no such blob."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            download = await self.client.get_blob_client(container, name).download_blob()
            return bytes(await download.readall())
        except ResourceNotFoundError:
            raise FileNotFoundError(f"{container}/{name}") from None

    async def list(self, container: str, prefix: str) -> list[BlobInfo]:
        """The container's blobs whose name starts with ``prefix``, with their metadata, by name."""
        from azure.core.exceptions import ResourceNotFoundError

        found: list[BlobInfo] = []
        try:
            async for item in self.client.get_container_client(container).list_blobs(
                    name_starts_with=prefix, include=["metadata"]):
                found.append(BlobInfo(item.name, item.last_modified, dict(item.metadata or {})))
        except ResourceNotFoundError:
            return []
        return sorted(found, key=lambda b: b.name)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._credential is not None:
            await self._credential.close()
        self._client = self._credential = None


_blobs: PerLoop[Blobs] = PerLoop(Blobs)


def get_blobs() -> Blobs:
    return _blobs.get()
