"""The poison queues of mailbox-changes and subscription-tasks have consumers (shared/workers/poison.py):
through the real queues on Azurite, and through the local host. Nothing waits there for the hourly timer."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from devhost.processes import ROOT, free_port
from shared.adapters.storage import MAILBOX_CHANGES_QUEUE, SUBSCRIPTION_TASKS_QUEUE, get_store, poison_queue
from shared.messages import subscription_tasks
from shared.messages.mailbox_changes import change_message
from shared.workers import poison
from shared.workers.reconcile import reconcile
from testing.hosting import HostProcess
from testing.settings import sample_settings
from tests.conftest import sandbox_settings
from tests.reconcile.test_reconcile import CLINIC, Bookings, hint, outbox

OTHER = "salon@contoso.test"


@pytest.fixture
async def queues(clean_env, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(poison, "BACKOFF_SECONDS", (1, 1, 1, 1))
    yield clean_env
    await get_store().close()


def poisoned(body: Any) -> func.QueueMessage:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return func.queue.QueueMessage(id="poisoned", body=raw, dequeue_count=1)


async def receive(queue: str, wait: float = 4.0) -> list[dict]:
    """Every message of ``queue`` once visible (back-offs of ~1 s here), received and deleted."""
    client = get_store().queue(queue)
    await asyncio.sleep(wait)
    got = []
    async for message in client.receive_messages(max_messages=32):
        got.append(json.loads(message.content))
        await client.delete_message(message)
    return got


def events_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("QueueMessagePoisoned")]


async def test_a_poisoned_hint_comes_back_as_a_full_resync_after_a_back_off(queues, caplog) -> None:
    caplog.set_level(logging.INFO)
    message = dict(change_message(CLINIC.upper(), subscription_id="sub-1", reason="notification",
                                  changes=[{"changeType": "updated", "eventId": "e1"}]))
    message["correlationId"] = "cid-poisoned"
    await poison.handle_mailbox_changes_poison(poisoned(message))
    assert await get_store().queue(MAILBOX_CHANGES_QUEUE).peek_messages() == []  # not before its back-off
    (again,) = await receive(MAILBOX_CHANGES_QUEUE)
    assert again["mailbox"] == CLINIC and again["fullResync"] is True and again["changes"] == []
    assert (again["reason"], again["poisonings"], again["correlationId"]) == ("poison", 1, "cid-poisoned")
    assert again["subscriptionId"] == "sub-1"
    (event,) = events_logged(caplog)
    assert "queue=mailbox-changes-poison" in event and "reason=resync" in event and "attempt=1" in event


async def test_the_resync_it_schedules_reconciles_the_mailbox(queues, sandbox) -> None:
    assert await reconcile(hint(full_resync=True)) == "reconciled"  # baseline
    created = Bookings(sandbox).create()
    await poison.handle_mailbox_changes_poison(poisoned(hint(changes=[{"changeType": "created", "eventId": "x"}])))
    (again,) = await receive(MAILBOX_CHANGES_QUEUE)
    assert await reconcile(again) == "reconciled"
    assert [e["AppointmentId"] for e in await outbox()] == [created["id"]]


async def test_a_poisoned_bundle_is_split_into_one_resync_per_mailbox(queues) -> None:
    bundle = {"version": 1, "bundle": [dict(change_message(CLINIC, reason="notification")),
                                       dict(change_message(CLINIC, reason="notification")),
                                       dict(change_message(OTHER, reason="notification")),
                                       {"no": "mailbox"}]}
    await poison.handle_mailbox_changes_poison(poisoned(bundle))
    again = await receive(MAILBOX_CHANGES_QUEUE)
    assert sorted(m["mailbox"] for m in again) == [CLINIC, OTHER]
    assert all(m["fullResync"] and m["poisonings"] == 1 for m in again)


async def test_poisoned_again_and_again_is_given_up_loudly(queues, caplog) -> None:
    caplog.set_level(logging.INFO)
    message = dict(change_message(CLINIC, reason="poison", full_resync=True))
    message["poisonings"] = poison.MAX_POISONINGS - 1
    await poison.handle_mailbox_changes_poison(poisoned(message))
    (again,) = await receive(MAILBOX_CHANGES_QUEUE)
    assert again["poisonings"] == poison.MAX_POISONINGS
    await poison.handle_mailbox_changes_poison(poisoned(again))  # the last straw
    assert await receive(MAILBOX_CHANGES_QUEUE, wait=2.5) == []
    assert any(r.levelno == logging.ERROR and "giving up" in r.getMessage() for r in caplog.records)
    assert "reason=gaveUp" in events_logged(caplog)[-1] and "willRetry=false" in events_logged(caplog)[-1]


@pytest.mark.parametrize("handler", [poison.handle_mailbox_changes_poison, poison.handle_subscription_tasks_poison])
@pytest.mark.parametrize("body", [b"not json", b'{"version": 1}', b"[1, 2]", b'{"version": 1, "bundle": []}'])
async def test_a_malformed_poisoned_message_is_logged_and_dropped(queues, caplog, handler, body: bytes) -> None:
    caplog.set_level(logging.INFO)
    await handler(poisoned(body))
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    assert "reason=malformed" in events_logged(caplog)[-1]
    assert await receive(MAILBOX_CHANGES_QUEUE, wait=0) == await receive(SUBSCRIPTION_TASKS_QUEUE, wait=0) == []


async def test_a_poisoned_subscription_task_is_retried_with_back_off_then_given_up(queues, caplog) -> None:
    caplog.set_level(logging.INFO)
    task = dict(subscription_tasks.task("renew", CLINIC, "sub-1", "expiring"))
    await poison.handle_subscription_tasks_poison(poisoned(task))
    assert await get_store().queue(SUBSCRIPTION_TASKS_QUEUE).peek_messages() == []
    (again,) = await receive(SUBSCRIPTION_TASKS_QUEUE)
    assert (again["action"], again["mailbox"], again["subscriptionId"], again["poisonings"]) == (
        "renew", CLINIC, "sub-1", 1)
    assert "queue=subscription-tasks-poison" in events_logged(caplog)[-1]

    # The sweep's packed tasks: each comes back on its own.
    packed = {"version": 1, "tasks": [dict(subscription_tasks.task("renew", CLINIC, "sub-1", "expiring")),
                                      dict(subscription_tasks.task("recreate", OTHER, "sub-2", "expired"))]}
    await poison.handle_subscription_tasks_poison(poisoned(packed))
    assert sorted(t["action"] for t in await receive(SUBSCRIPTION_TASKS_QUEUE)) == ["recreate", "renew"]

    again["poisonings"] = poison.MAX_POISONINGS
    await poison.handle_subscription_tasks_poison(poisoned(again))
    assert await receive(SUBSCRIPTION_TASKS_QUEUE, wait=2.5) == []
    assert "reason=gaveUp" in events_logged(caplog)[-1]


# ---- through the local host -----------------------------------------------------------------------

HOST_JSON_OVERRIDES = {
    "AzureFunctionsJobHost__functionTimeout": "00:01:00",
    "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:00.500",
    "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:00",
    "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "2",
}
OFF = ("deliveries", "deliveries_poison", "resync_mailboxes", "renew_subscriptions", "sweep_outbox")


@pytest.fixture
def host(clean_env, sandbox, azurite, tmp_path: Path) -> Iterator[HostProcess]:
    port = free_port()
    settings = {**sample_settings(), "AzureWebJobsStorage": azurite.connection_string,
                **sandbox_settings(sandbox), "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                "DEVHOST_QUEUE_LEASE_SECONDS": "5", **HOST_JSON_OVERRIDES,
                **{f"AzureWebJobs.{name}.Disabled": "true" for name in OFF}}
    process = HostProcess(ROOT, port, env=settings, log_dir=tmp_path).start()
    yield process
    process.kill()


async def _count(queue: str) -> int:
    """Messages on ``queue``, invisible ones (waiting out a back-off) included."""
    return (await get_store().queue(queue).get_queue_properties()).approximate_message_count


@pytest.mark.slow
async def test_through_the_local_host_a_hint_the_reconcile_fails_on_is_poisoned_and_comes_back(
        host, sandbox) -> None:
    # The reconcile fails on every listing (a 500 is no throttling: the message is retried, then poisoned).
    sandbox.add_fault(method="GET", path="/v1.0/solutions/bookingBusinesses/*/calendarView", status=500, count=None)
    message = json.dumps(dict(change_message(CLINIC, reason="notification", full_resync=True)))
    await get_store().queue(MAILBOX_CHANGES_QUEUE).send_message(message)
    deadline = time.monotonic() + 45
    # Poisoned after two attempts, then consumed by mailbox_changes_poison: one resync waits out its back-off.
    while "QueueMessagePoisoned" not in host.log or await _count(poison_queue(MAILBOX_CHANGES_QUEUE)):
        if time.monotonic() > deadline:
            raise AssertionError(f"the poisoned hint was not consumed\n{host.log[-4000:]}")
        await asyncio.sleep(0.25)
    assert "reason=resync" in host.log
    assert await _count(MAILBOX_CHANGES_QUEUE) == 1  # the full resync, waiting out its back-off…
    assert await get_store().queue(MAILBOX_CHANGES_QUEUE).peek_messages() == []  # …invisible until then
