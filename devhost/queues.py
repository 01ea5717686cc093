"""Queue triggers: poll a Storage queue (Azurite locally) with the host.json queue settings.

The behaviour follows the Functions queue extension:

- messages are fetched in batches of ``batchSize``; a new batch is fetched when the number still
  running falls to ``newBatchThreshold``; an empty queue is polled with a randomised exponential
  back-off up to ``maxPollingInterval``;
- a fetched message stays invisible while its function runs (a lease, renewed periodically), so if the
  host dies mid-invocation the message reappears when the lease runs out and is tried again — it is
  never lost;
- success deletes the message; failure makes it visible again after ``visibilityTimeout``; after
  ``maxDequeueCount`` failed attempts the message is copied to ``<queue>-poison`` and deleted;
- bodies are base64 text (the extension's default ``messageEncoding``); a body that is not base64
  counts as a failed attempt.

The lease length is a local-host knob (``DEVHOST_QUEUE_LEASE_SECONDS``, default 60; the runtime uses
10 minutes), short in tests that kill the host on purpose.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import random
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue.aio import QueueClient

from devhost.config import QueueOptions
from devhost.functions import QueueFunction, invoke

log = logging.getLogger("devhost")

MIN_POLL_SECONDS = 0.1


def lease_seconds() -> int:
    return max(2, int(os.environ.get("DEVHOST_QUEUE_LEASE_SECONDS", "60")))


def queue_client(connection: str, queue_name: str) -> QueueClient:
    """A client for ``queue_name`` from the app setting named by the binding's ``connection``."""
    conn = os.environ.get(connection, "").strip()
    if conn:
        return QueueClient.from_connection_string(conn, queue_name)
    uri = os.environ.get(f"{connection}__queueServiceUri", "").strip()
    if uri:
        from azure.identity.aio import DefaultAzureCredential

        client_id = os.environ.get(f"{connection}__clientId") or None
        return QueueClient(uri, queue_name, credential=DefaultAzureCredential(managed_identity_client_id=client_id))
    raise RuntimeError(f"queue trigger connection {connection!r}: set {connection} or {connection}__queueServiceUri")


class QueueListener:
    def __init__(self, function: QueueFunction, options: QueueOptions, timeout: float | None = None) -> None:
        self.function = function
        self.options = options
        self.timeout = timeout
        self.queue = queue_client(function.connection, function.queue_name)
        self.poison = queue_client(function.connection, f"{function.queue_name}-poison")
        self.running: set[asyncio.Task[None]] = set()

    async def run(self, stopping: asyncio.Event) -> None:
        try:
            await self._ensure_queue(self.queue)
            delay = MIN_POLL_SECONDS
            while not stopping.is_set():
                fetched = 0
                if len(self.running) <= self.options.threshold:
                    fetched = await self._fetch()
                if fetched:
                    delay = MIN_POLL_SECONDS
                    continue
                # Nothing new (or enough running): back off, but wake when a running message finishes.
                delay = min(delay * 2, self.options.max_polling_interval)
                wait = random.uniform(MIN_POLL_SECONDS, max(delay, MIN_POLL_SECONDS))  # noqa: S311 - jitter only
                waiters = [asyncio.ensure_future(stopping.wait()), *self.running]
                await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                waiters[0].cancel()
        finally:
            await self.queue.close()
            await self.poison.close()

    async def drain(self, grace: float) -> None:
        """Let running invocations finish (up to ``grace`` seconds); unfinished ones keep their lease."""
        if self.running:
            await asyncio.wait(self.running, timeout=grace)
        for task in self.running:
            task.cancel()

    async def _fetch(self) -> int:
        try:
            messages = self.queue.receive_messages(messages_per_page=self.options.batch_size,
                                                   visibility_timeout=lease_seconds(),
                                                   max_messages=self.options.batch_size)
            batch = [m async for m in messages]
        except Exception as exc:
            log.warning("queue %s: receive failed (%s); retrying", self.function.queue_name, type(exc).__name__)
            return 0
        for message in batch:
            task = asyncio.create_task(self._process_safely(message))
            self.running.add(task)
            task.add_done_callback(self.running.discard)
        return len(batch)

    async def _process_safely(self, message: Any) -> None:
        try:
            await self._process(message)
        except Exception:
            # Storage failed while settling: the message keeps its lease and is retried when it expires.
            log.exception("queue %s: message %s could not be settled; it will be retried",
                          self.function.queue_name, message.id)

    async def _process(self, message: Any) -> None:
        name = self.function.queue_name
        # Dequeued more often than allowed without a recorded failure: the host died while running it.
        if message.dequeue_count > self.options.max_dequeue_count:
            await self._to_poison(message, "exceeded maxDequeueCount (the host stopped during earlier attempts)")
            return
        renewer = asyncio.create_task(self._keep_leased(message))
        try:
            try:
                body = base64.b64decode(message.content, validate=True)
            except (binascii.Error, ValueError, TypeError):
                log.error("queue %s: message %s is not base64 text (messageEncoding is base64)", name, message.id)
                outcome_ok = False
            else:
                trigger = func.queue.QueueMessage(
                    id=message.id, body=body, dequeue_count=message.dequeue_count,
                    expiration_time=message.expires_on, insertion_time=message.inserted_on,
                    time_next_visible=message.next_visible_on, pop_receipt=message.pop_receipt)
                outcome = await invoke(self.function, trigger,
                                       f"queue={name} message={message.id} dequeue_count={message.dequeue_count}",
                                       self.timeout)
                outcome_ok = outcome.succeeded
        finally:
            renewer.cancel()
        try:
            if outcome_ok:
                await self.queue.delete_message(message.id, message.pop_receipt)
            elif message.dequeue_count >= self.options.max_dequeue_count:
                await self._to_poison(message, f"failed {message.dequeue_count} times")
            else:
                await self.queue.update_message(message.id, message.pop_receipt,
                                                visibility_timeout=int(self.options.visibility_timeout))
        except ResourceNotFoundError:
            # Our lease was lost (renewal failed); the message is someone else's now. Not lost either way.
            log.warning("queue %s: message %s changed hands before it could be settled", name, message.id)

    async def _keep_leased(self, message: Any) -> None:
        lease = lease_seconds()
        while True:
            await asyncio.sleep(lease / 2)
            try:
                receipt = await self.queue.update_message(message.id, message.pop_receipt, visibility_timeout=lease)
            except Exception as exc:
                log.warning("queue %s: lease renewal for %s failed (%s)", self.function.queue_name, message.id,
                            type(exc).__name__)
                continue
            message.pop_receipt = receipt["popreceipt"] if isinstance(receipt, dict) else receipt.pop_receipt

    async def _to_poison(self, message: Any, why: str) -> None:
        await self._ensure_queue(self.poison)
        await self.poison.send_message(message.content)
        await self.queue.delete_message(message.id, message.pop_receipt)
        log.error("queue %s: message %s moved to %s-poison: %s", self.function.queue_name, message.id,
                  self.function.queue_name, why)

    @staticmethod
    async def _ensure_queue(queue: QueueClient) -> None:
        try:
            await queue.create_queue()
        except ResourceExistsError:
            pass
