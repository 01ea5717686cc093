"""``POST v1/bookingBusinesses/{smtp}/webhooks/{webhookId}/test``: *Send a test event to this flow*.

A flow maker sees a trigger's dynamic content only once an appointment changes. This sends the flow a made-up
``AppointmentData`` for its trigger (``appointment_data.sample_appointment_data``: ``IsTest`` true, every field
filled, a cancel reason for the cancelled trigger, change details for the updated one) through the real delivery
path: an outbox row of its own, already fanned out to this one flow only, and a ``deliveries`` message, so the
delivery worker posts it with the usual headers plus ``X-Bookings-Test: true``, retries it, and dead-letters it
like any other event. The flow's filters do not apply: the flow maker asked for it.

Who may: the flow's creator, or an administrator of the business (as for deleting a flow). 202 with the event id.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import azure.functions as func

from shared.adapters.auth import authenticate
from shared.contracts.appointment_data import sample_appointment_data
from shared.contracts.errors import ApiError
from shared.endpoints.access import parse_mailbox, require_administrator
from shared.endpoints.flow_webhooks import parse_webhook_id
from shared.endpoints.http import endpoint, json_response
from shared.messages import deliveries
from shared.records import outbox
from shared.records.flows import FlowRegistry

log = logging.getLogger(__name__)

ROUTE = "v1/bookingBusinesses/{smtp}/webhooks/{webhookId}/test"
CHANGE_OF_TRIGGER = {trigger: change for change, trigger in outbox.TRIGGER_OF_CHANGE.items()}


@endpoint
async def handle(req: func.HttpRequest) -> func.HttpResponse:
    caller = await authenticate(req.headers.get("authorization"))
    mailbox = parse_mailbox(req.route_params.get("smtp"))
    webhook_id = parse_webhook_id(req.route_params.get("webhookId"))
    flow = await FlowRegistry.default().get_flow(mailbox, webhook_id)
    if flow is None or flow.created_by_oid != caller.oid:
        # Only administrators learn whether a flow they did not create exists.
        await require_administrator(mailbox, caller)
    if flow is None:
        raise ApiError("FlowNotFound", business=mailbox, id=webhook_id)
    change_type = CHANGE_OF_TRIGGER[flow.trigger]
    now = datetime.now(UTC)
    event = uuid.uuid4().hex
    await outbox.put_test_event(mailbox, event, change_type, sample_appointment_data(change_type, now), now)
    await deliveries.enqueue(deliveries.new_message(mailbox, event, webhook_id, now))
    log.info("test event %s sent to flow %s on %s", event, webhook_id, mailbox,
             extra={"mailbox": mailbox, "flowId": webhook_id, "eventId": event})
    return json_response({"eventId": event, "webhookId": webhook_id, "trigger": flow.trigger, "isTest": True}, 202)
