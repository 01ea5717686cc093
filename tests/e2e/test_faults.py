"""Fault suite: the host dies mid-delivery, storage restarts mid-reconcile — and no event is lost.

Events emitted (outbox rows) are counted against events received (distinct idempotency keys with a
2xx from the receiver). Slow, marked; CI runs them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from azure.data.tables import TableClient

from devhost.processes import Azurite, stop_process
from shared.records.mailbox import prefix_bounds
from shared.records.outbox import OUTBOX_PREFIX
from shared.workers import fan_out
from testing.receiver import Receiver, Reply
from testing.storage import clean_app_storage, create_app_storage
from tests.conftest import sandbox_settings
from tests.e2e.test_appointment_flow import CLINIC, Stack, customer

pytestmark = pytest.mark.slow


def emitted(connection_string: str, change_type: str) -> set[str]:
    table = TableClient.from_connection_string(connection_string, "mailboxes")
    end = prefix_bounds(OUTBOX_PREFIX)["hi"]
    query = f"PartitionKey eq '{CLINIC}' and RowKey ge '{OUTBOX_PREFIX}' and RowKey lt '{end}'"
    return {e["EventId"] for e in table.query_entities(query) if e["ChangeType"] == change_type}


def delivered_keys(receiver: Receiver, flow: str) -> set[str]:
    return {r.headers["idempotency-key"] for r in receiver.requests(flow) if 200 <= r.status < 300}


def wait_until(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not met in {timeout} s"
        time.sleep(0.1)


@pytest.fixture
def short_lease_stack(app_host_factory, sandbox, graph_env, azurite) -> Iterator[Stack]:
    clean_app_storage(azurite.connection_string)
    host = app_host_factory(**sandbox_settings(sandbox), DEVHOST_QUEUE_LEASE_SECONDS="3").start()
    with Receiver() as receiver:
        yield Stack(host, sandbox, receiver).ready()


def test_host_killed_mid_delivery_loses_nothing(short_lease_stack: Stack, azurite) -> None:
    stack = short_lease_stack
    stack.receiver.plan("AppointmentCreated", Reply(200, delay=4))  # the first attempt hangs…
    stack.book(stack.one_to_one, [customer("Radia Perlman")])
    wait_until(lambda: any(flow == "AppointmentCreated" for flow, _ in stack.receiver.arrivals),
               what="the delivery reached the receiver")
    stack.host.kill()  # …and the host dies while waiting for the answer
    stack.host.start()
    # The attempt was fan-out's own; its queued copy shows when its safety net ends, and is delivered then.
    wait_until(lambda: len(delivered_keys(stack.receiver, "AppointmentCreated")) >= 1
               and len(stack.receiver.requests("AppointmentCreated")) >= 2, timeout=fan_out.SAFETY_NET_SECONDS + 45,
               what="redelivery after restart")
    events = emitted(azurite.connection_string, "Created")
    assert len(events) == 1
    # Delivered at least once, the retry under the same idempotency key: receivers de-duplicate on it.
    assert len(delivered_keys(stack.receiver, "AppointmentCreated")) == 1


def test_storage_restarted_mid_reconcile_loses_nothing(app_host_factory, sandbox, graph_env, monkeypatch) -> None:
    own = Azurite.on_free_ports(persistent=True).start()  # data survives the restart, as real storage does
    try:
        create_app_storage(own.connection_string)
        monkeypatch.setenv("AzureWebJobsStorage", own.connection_string)
        host = app_host_factory(**sandbox_settings(sandbox), AzureWebJobsStorage=own.connection_string,
                                DEVHOST_QUEUE_LEASE_SECONDS="3").start()
        with Receiver() as receiver:
            stack = Stack(host, sandbox, receiver).ready()
            # Make the reconcile's Graph listing slow, so storage can vanish while it runs.
            sandbox.add_fault(method="GET", path="*/calendarView", latencyMs=3000, count=1)
            stack.book(stack.one_to_one, [customer("Shafi Goldwasser")])
            wait_until(lambda: any(r["path"].endswith("/calendarView") and r.get("fault")
                                   for r in sandbox.requests()), what="the slow listing started")
            stop_process(own.process)  # a restart, not data loss: Azurite flushes to disk on SIGTERM
            time.sleep(2)
            own.start()
            try:
                payload = stack.payloads("AppointmentCreated", 1)[0]
            except AssertionError:
                raise AssertionError("not delivered; host log:\n" + host.log[-6000:]) from None
            assert payload["CustomerName"] == "Shafi Goldwasser"
            time.sleep(3)
            assert len(emitted(own.connection_string, "Created")) == 1
            assert len(delivered_keys(receiver, "AppointmentCreated")) == 1
    finally:
        own.stop()
