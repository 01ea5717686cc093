"""Fan-out: an event's ``pending`` outbox row becomes one delivery message per flow registered for its trigger
(and, for a flow with service or staff filters, matching them: ``Flow.matches``).

Right after the reconcile commits outbox rows it calls ``fan_out``; the outbox sweep calls it again for
rows a crash left ``pending``. Each row is marked ``fannedOut`` only after its messages are queued, so a
crash in between makes duplicate messages at worst, which receivers recognise by the idempotency key:
delivery is at-least-once, never at-most-once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from shared.messages import deliveries
from shared.records import outbox
from shared.records.flows import Flow, FlowRegistry

log = logging.getLogger(__name__)

ENQUEUE_CONCURRENCY = 16


async def fan_out(mailbox: str, event_ids: Iterable[str]) -> int:
    """Enqueue one delivery per (event, matching flow) and mark each row ``fannedOut``. Returns messages sent.

    Rows already ``fannedOut`` are skipped, so calling this twice for the same events is harmless."""
    flows: list[Flow] | None = None
    sent = 0
    limit = asyncio.Semaphore(ENQUEUE_CONCURRENCY)

    async def send(message: deliveries.DeliveryMessage) -> None:
        async with limit:
            await deliveries.enqueue(message)

    for event in event_ids:
        row = await outbox.get(mailbox, event, select=["Trigger", "State", "ServiceIds", "StaffMemberIds"])
        if row is None:
            log.warning("fan-out: event %s of %s is not in the outbox", event, mailbox, extra={"mailbox": mailbox})
            continue
        if row.get("State") == outbox.FANNED_OUT:
            continue
        if flows is None:
            flows = await FlowRegistry.default().list_flows(mailbox)
        now = datetime.now(UTC)
        targets = [flow for flow in flows if flow.trigger == row.get("Trigger")]
        if any(flow.filtered for flow in targets):  # a flow filtered out gets no delivery at all
            services, staff = await outbox.filter_keys(mailbox, event, row)
            targets = [flow for flow in targets if flow.matches(services, staff)]
        await asyncio.gather(*(send(deliveries.new_message(mailbox, event, flow.webhook_id, now)) for flow in targets))
        sent += len(targets)
        if not await outbox.mark_fanned_out(mailbox, event, now, len(targets)):
            log.warning("fan-out: event %s of %s vanished while being fanned out", event, mailbox)
        log.info("event %s of %s (%s) fanned out to %d flow(s)", event, mailbox, row.get("Trigger"), len(targets),
                 extra={"mailbox": mailbox, "eventId": event})
    return sent
