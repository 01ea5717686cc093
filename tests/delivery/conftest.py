"""Fixtures of the delivery tests: empty storage on the session's Azurite, a local receiver, and helpers
that play the queue runtime (drive ``deliver`` on queued messages). Flow and outbox rows: ``testing.rows``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from typing import Any

import azure.functions as func
import pytest

from shared.adapters import callback_client
from shared.adapters.monitoring import telemetry_context
from shared.adapters.settings import reset_settings_cache
from shared.adapters.storage import DELIVERIES_QUEUE, get_store
from shared.messages import deliveries
from shared.messages.deliveries import DeliveryMessage
from shared.workers import delivery
from shared.workers.fan_out import fan_out as fan_out_worker
from testing.receiver import Receiver
from testing.storage import clean_app_storage, create_app_storage


@pytest.fixture(scope="session")
def receiver_server() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


@pytest.fixture
def receiver(receiver_server: Receiver) -> Receiver:
    with receiver_server._lock:
        receiver_server.plans.clear()
        receiver_server.received.clear()
    return receiver_server


@pytest.fixture
async def env(app_env: dict[str, str], azurite: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict]:
    """Settings (loopback callbacks allowed, as locally), empty storage, no back-off between retries: no floor
    under a receiver's Retry-After, no pacing (tests/delivery/test_floods.py turns the real schedule back on)."""
    create_app_storage(azurite.connection_string)
    clean_app_storage(azurite.connection_string)
    monkeypatch.setattr(delivery, "BACKOFF_BASE_SECONDS", 0.0)
    monkeypatch.setattr(delivery, "RETRY_AFTER_FLOOR_SECONDS", 0.0)
    monkeypatch.setattr(delivery, "PACED_SECONDS", 0.0)
    delivery._warnings.clear()
    yield app_env
    await callback_client.close_client()
    await get_store().close()


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()


def queue_message(item: DeliveryMessage | dict[str, Any] | bytes, dequeue_count: int = 1) -> func.queue.QueueMessage:
    body = item if isinstance(item, bytes) else json.dumps(item).encode()
    return func.queue.QueueMessage(id="test-message", body=body, dequeue_count=dequeue_count)


async def queued() -> list[DeliveryMessage]:
    """Visible messages on the deliveries queue (peeked, left in place)."""
    messages = get_store().queue(DELIVERIES_QUEUE).peek_messages(max_messages=32)
    return [json.loads(m.content) for m in await messages]


async def run_worker(until: Callable[[], bool], timeout: float = 10.0) -> int:
    """Play the queue runtime: receive delivery messages, run ``deliver``, delete them, until ``until()``.
    Returns how many invocations ran."""
    queue = get_store().queue(DELIVERIES_QUEUE)
    deadline = time.monotonic() + timeout
    runs = 0
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s after {runs} invocations")
        got = False
        async for message in queue.receive_messages(max_messages=16, visibility_timeout=30):
            got = True
            await delivery.deliver(func.queue.QueueMessage(id=message.id, body=message.content.encode(),
                                                     dequeue_count=message.dequeue_count))
            await queue.delete_message(message)
            runs += 1
        if not got:
            await asyncio.sleep(0.05)
    return runs


async def fan_out(mailbox: str, event_ids: list[str], correlation_id: str = "") -> int:
    """``shared.workers.fan_out.fan_out`` as the reconcile calls it, inside a message's correlation id."""
    with telemetry_context(correlationId=correlation_id or None):
        return await fan_out_worker(mailbox, event_ids)


def new_message(mailbox: str, event: str, flow_id: str, correlation_id: str,
                first_attempt_at: datetime | None = None) -> DeliveryMessage:
    """A first delivery attempt, made in ``correlation_id``."""
    with telemetry_context(correlationId=correlation_id):
        return deliveries.new_message(mailbox, event, flow_id, first_attempt_at)
