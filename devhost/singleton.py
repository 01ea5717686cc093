"""The timer listener lock: one host of an app runs its timers, however many share the storage account.

As the Functions runtime does (https://learn.microsoft.com/en-us/azure/azure-functions/functions-bindings-timer
"If a function app scales out to multiple instances, only a single instance of a timer-triggered function is
run across all instances"; the WebJobs SDK's ``SingletonMode.Listener``), each timer's listener holds a blob
lease in the ``AzureWebJobsStorage`` account: ``azure-webjobs-hosts/locks/<host id>/<function id>.Listener``.
The host holding it runs the schedule and renews the lease every half period; the others try again every
``listenerLockRecoveryPollingInterval``. A host stopped cleanly releases the lease; a host that dies keeps it
until it runs out (``listenerLockPeriod``), so a timer pauses for up to one period plus one polling interval
when its host is lost. Both periods are the host.json ``singleton`` settings (https://learn.microsoft.com/en-us/
azure/azure-functions/functions-host-json#singleton; defaults 1 minute each).

A host started again on the same instance (``WEBSITE_INSTANCE_ID``, the platform's setting) proposes the same
lease id, so it takes its locks back at once.

The host id is ``AzureFunctionsWebHost__hostid`` when set (the runtime's setting, see
https://learn.microsoft.com/en-us/azure/azure-functions/storage-considerations#host-id-considerations), else
one derived from the machine and the app folder: two local hosts of the same folder share their timers' locks,
hosts of different folders do not.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger("devhost")

CONTAINER = "azure-webjobs-hosts"
MIN_LEASE_SECONDS, MAX_LEASE_SECONDS = 15, 60  # what a blob lease can be (Lease Blob REST API)
RENEW_RETRY_SECONDS = 1.0


def host_id(app_dir: Path, environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """The runtime's host id rules: lower case letters, digits and dashes, at most 32 characters."""
    explicit = environ.get("AzureFunctionsWebHost__hostid", "").strip()
    if explicit:
        return explicit.lower()[:32]
    digest = hashlib.sha256(str(app_dir.resolve()).encode()).hexdigest()[:8]
    machine = re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower())[:23].strip("-") or "devhost"
    return f"{machine}-{digest}"


class ListenerLock:
    """A blob lease named after one timer function; ``hold`` keeps it while ``run`` runs."""

    def __init__(self, connection_string: str, host: str, function_name: str, period: float,
                 recovery: float, instance: str = "") -> None:
        self.connection_string, self.blob = connection_string, f"locks/{host}/Host.Functions.{function_name}.Listener"
        self.period = int(min(MAX_LEASE_SECONDS, max(MIN_LEASE_SECONDS, period)))
        self.recovery = max(0.1, recovery)
        # One lease id per instance: a process started again on the same instance (``WEBSITE_INSTANCE_ID``) takes
        # its lock back at once, as on Azure, where a crashed language worker is restarted by a Functions host that
        # kept the lease. Without an instance id, each process is an instance of its own.
        self.lease_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{instance}/{self.blob}") if instance else uuid.uuid4())

    def _client(self) -> Any:
        from azure.storage.blob.aio import BlobClient

        return BlobClient.from_connection_string(self.connection_string, CONTAINER, self.blob)

    async def _acquire(self, client: Any) -> bool:
        from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

        for _ in range(2):
            try:
                await client.acquire_lease(lease_duration=self.period, lease_id=self.lease_id)
                return True
            except ResourceNotFoundError:  # first use of the account (or an emulator started afresh)
                await self._create(client)
            except ResourceExistsError:  # 409 LeaseAlreadyPresent: another host holds it
                return False
            except HttpResponseError as error:
                log.warning("timer lock %s: %s", self.blob, error.message)
                return False
        return False

    async def _create(self, client: Any) -> None:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
        from azure.storage.blob.aio import ContainerClient

        for _ in range(2):
            try:
                await client.upload_blob(b"", overwrite=False)
                return
            except ResourceExistsError:  # created by another host meanwhile
                return
            except ResourceNotFoundError:  # no container yet
                async with ContainerClient.from_connection_string(self.connection_string, CONTAINER) as container:
                    try:
                        await container.create_container()
                    except ResourceExistsError:
                        pass

    async def hold(self, run: Any, stopping: asyncio.Event) -> None:
        """Until ``stopping``: wait for the lease, then ``run(halt)`` while it is renewed; ``halt`` is set
        when stopping or when the lease is lost (``run`` should return then)."""
        async with self._client() as client:
            while not stopping.is_set():
                try:
                    got = await self._acquire(client)
                except Exception as error:  # storage unreachable: try again later
                    log.warning("timer lock %s: %s", self.blob, error)
                    got = False
                if not got:
                    await _wait(stopping, self.recovery)
                    continue
                halt = asyncio.Event()
                keeper = asyncio.create_task(self._keep(client, halt, stopping))
                try:
                    await run(halt)
                finally:
                    keeper.cancel()
                    await asyncio.gather(keeper, return_exceptions=True)
                if stopping.is_set():
                    await _release(client, self.lease_id)

    async def _keep(self, client: Any, halt: asyncio.Event, stopping: asyncio.Event) -> None:
        from azure.storage.blob.aio import BlobLeaseClient

        renewed = time.monotonic()
        try:
            while not stopping.is_set():
                due = self.period / 2 if time.monotonic() - renewed < self.period / 2 else RENEW_RETRY_SECONDS
                if await _wait(stopping, due):
                    return
                try:
                    await BlobLeaseClient(client, self.lease_id).renew()
                    renewed = time.monotonic()
                except Exception as error:
                    # Halt before the lease can run out: another host may take it the moment it does.
                    if time.monotonic() - renewed >= self.period - 2 * RENEW_RETRY_SECONDS:
                        log.warning("timer lock %s lost (%s): the schedule stops until it is acquired again",
                                    self.blob, error)
                        return
        finally:
            halt.set()


async def _release(client: Any, lease_id: str) -> None:
    from azure.storage.blob.aio import BlobLeaseClient

    try:
        await BlobLeaseClient(client, lease_id).release()
    except Exception as error:  # it runs out by itself
        log.info("timer lock release: %s", error)


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """True when ``event`` was set within ``seconds``."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
        return True
    except TimeoutError:
        return False
