"""Test events: a made-up appointment sent to one flow through the real delivery path.

The event is ``appointment_data.sample_appointment_data`` for the flow's trigger (``IsTest`` true, every field
filled, a cancel reason for the cancelled trigger, change details for the updated one). It gets an outbox row of
its own (``shared.records.outbox``), already fanned out to this one flow only, and a ``deliveries`` message, so
the delivery worker posts it with the usual headers plus ``X-Bookings-Test: true``, retries it, and dead-letters
it like any other event. The flow's filters do not apply: the flow maker asked for it. The API is
``shared.endpoints.test_events``.

Each flow may be sent ``test_event_limit.BURST`` test events at once, then ``PER_MINUTE`` a minute, counted in
Table storage for every instance (``shared.records.test_event_limit``); beyond that, ``429 TooManyTestEvents``
with ``Retry-After``, before anything is stored or sent. (1,000 test events were once accepted in 18 s.)
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import UTC, datetime

from shared.contracts.appointment_changes import sample_appointment_data
from shared.contracts.errors import ApiError
from shared.contracts.graph_times import parse_graph_datetime
from shared.messages import deliveries
from shared.records import outbox, test_event_limit
from shared.records.flows import Flow
from shared.records.mailbox import iso
from shared.services import reminders

log = logging.getLogger(__name__)

CHANGE_OF_TRIGGER = {trigger: change for change, trigger in outbox.TRIGGER_OF_CHANGE.items()}


async def send(mailbox: str, flow: Flow) -> str:
    """Send the flow a test event of its trigger; returns the event's id. Raises ``TooManyTestEvents`` when the
    flow's allowance is spent."""
    wait = await test_event_limit.take(mailbox, flow.webhook_id)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise ApiError("TooManyTestEvents", headers={"Retry-After": str(seconds)}, id=flow.webhook_id,
                       seconds=seconds, burst=test_event_limit.BURST, perMinute=test_event_limit.PER_MINUTE)
    change_type = CHANGE_OF_TRIGGER[flow.trigger]
    now = datetime.now(UTC)
    event = uuid.uuid4().hex
    payload = dict(sample_appointment_data(change_type, now))
    if flow.trigger in reminders.TRIGGERS:  # a time-relative trigger's sample says when it was due, too
        scheduled = reminders.scheduled_instant(flow, parse_graph_datetime(payload["StartTime"]),
                                                parse_graph_datetime(payload["EndTime"]))
        payload["ScheduledFor"] = iso(scheduled) if scheduled else ""
    await outbox.put_test_event(mailbox, event, change_type, payload, now)
    await deliveries.enqueue(deliveries.new_message(mailbox, event, flow.webhook_id, now))
    log.info("test event %s sent to flow %s on %s", event, flow.webhook_id, mailbox,
             extra={"mailbox": mailbox, "flowId": flow.webhook_id, "eventId": event})
    return event
