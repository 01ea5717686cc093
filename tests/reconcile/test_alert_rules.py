"""The alert rules about the queues and the reconcile, driven into their states: a message poisoned, a poison
queue nobody empties, an appointment storage refuses. Each rule's KQL runs over the rows Application Insights
would store of what the app emitted (tests/app_insights.py)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from shared.adapters.storage import MAILBOX_CHANGES_QUEUE, get_store, poison_queue
from shared.messages.mailbox_changes import change_message
from shared.workers import poison, queue_metrics
from shared.workers.reconcile import reconcile
from tests.app_insights import alert_rows, capture, fires
from tests.reconcile.test_oversized import Bookings, mailbox, receiver, refuse_rows_of  # noqa: F401 (fixtures)
from tests.reconcile.test_poison import poisoned, queues  # noqa: F401 (fixture)
from tests.reconcile.test_reconcile import CLINIC, hint, outbox

POISON = poison_queue(MAILBOX_CHANGES_QUEUE)


def hint_message() -> dict[str, Any]:
    message = dict(change_message(CLINIC, subscription_id="sub-1", reason="notification",
                                  changes=[{"changeType": "updated", "eventId": "e1"}]))
    message["correlationId"] = "cid-poisoned"
    return message


async def test_a_poisoned_hint_fires_the_poisoned_messages_alert(queues) -> None:  # noqa: F811
    with capture() as captured:
        await poison.handle_mailbox_changes_poison(poisoned(hint_message()))
    (row,) = alert_rows("poisoned-messages", captured)
    assert fires("poisoned-messages", [row])
    assert (row["mailbox"], row["queue"], row["attempt"], row["willRetry"], row["reason"], row["correlationId"]) == (
        CLINIC, POISON, 1, "true", "resync", "cid-poisoned")


async def test_a_poison_queue_nobody_empties_fires_the_length_alert(queues) -> None:  # noqa: F811
    # What the runtime does after maxDequeueCount failures; the poison consumer is not running.
    await get_store().queue(POISON).send_message(json.dumps(hint_message()))
    with capture() as stuck:
        for _ in range(3):  # three measurements (QUEUE_METRICS_SCHEDULE), each an export interval
            lengths = await queue_metrics.measure_poison_queues()
            stuck.collect()
    assert lengths == {POISON: 1, "deliveries-poison": 0, "subscription-tasks-poison": 0}
    (row,) = alert_rows("poison-queue-length", stuck)
    assert fires("poison-queue-length", [row])
    assert (row["queue"], row["measurements"], row["shortest"], row["longest"]) == (POISON, 3, 1.0, 1.0)

    # Its consumer empties it: the next measurement is 0, and a window that holds it does not fire.
    with capture() as drained:
        await queue_metrics.measure_poison_queues()
        drained.collect()
        async for message in get_store().queue(POISON).receive_messages(max_messages=32):
            await poison.handle_mailbox_changes_poison(poisoned(json.loads(message.content)))
            await get_store().queue(POISON).delete_message(message)
        await queue_metrics.measure_poison_queues()
        drained.collect()
    assert alert_rows("poison-queue-length", drained) == []


async def test_a_stale_zero_from_another_instance_does_not_mask_a_stuck_poison_queue(queues) -> None:  # noqa: F811
    # Two instances of the app, each with its own exporter (meter provider), over 35 minutes. Instance A ran the
    # queue-metrics timer once, 35 minutes ago, while the poison queue was empty, and has served HTTP since:
    # its exporter collects every minute. Since then the timer ran on instance B (any instance may take it),
    # every 5 minutes, while a message sat in the poison queue nobody empties.
    def minutes(n: int) -> timedelta:
        return timedelta(minutes=n)

    with capture() as a:
        await queue_metrics.measure_poison_queues()
    a.collect(ago=minutes(35))
    for ago in range(34, -1, -1):
        a.collect(ago=minutes(ago))
    await get_store().queue(POISON).send_message(json.dumps(hint_message()))
    with capture() as b:
        for ago in (25, 20, 15, 10, 5, 0):
            await queue_metrics.measure_poison_queues()
            b.collect(ago=minutes(ago))
    measured = [r for r in a.rows()["customMetrics"] if json.loads(r["customDimensions"])["queue"] == POISON]
    # A's one measurement is one row: a gauge that repeated it at each of A's 36 collections would put a stale 0
    # into the rule's 30-minute window beside B's 1s, and min(value) would never be above 0.
    assert [r["value"] for r in measured] == [0.0]
    (row,) = alert_rows("poison-queue-length", a, extra=b.rows())
    assert fires("poison-queue-length", [row])
    assert (row["queue"], row["measurements"], row["shortest"]) == (POISON, 6, 1.0)

    # Healthy: B's consumer empties it, B measures 0 from then on, and the rule stays quiet beside A.
    async for message in get_store().queue(POISON).receive_messages(max_messages=32):
        await get_store().queue(POISON).delete_message(message)
    with capture() as healthy:
        for ago in (25, 20, 15, 10, 5, 0):
            await queue_metrics.measure_poison_queues()
            healthy.collect(ago=minutes(ago))
    assert alert_rows("poison-queue-length", a, extra=healthy.rows()) == []


async def test_an_appointment_storage_refuses_fires_the_not_stored_alert(
        mailbox: Bookings, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    bad = mailbox.create(minutes_from_now=25 * 60)
    refuse_rows_of(bad["id"], monkeypatch)
    with capture() as captured:
        assert await reconcile(hint(full_resync=True)) == "reconciled"
    assert await outbox() == []
    (row,) = alert_rows("appointments-not-stored", captured)
    assert fires("appointments-not-stored", [row])
    assert (row["mailbox"], row["appointmentId"], row["status"], row["errorCode"]) == (
        CLINIC, bad["id"], 400, "InvalidInput")
