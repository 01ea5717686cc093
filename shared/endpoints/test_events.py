"""``POST v1/bookingBusinesses/{smtp}/webhooks/{webhookId}/test``: *Send a test event to this flow*.

A flow maker sees a trigger's dynamic content only once an appointment changes. This sends the flow a made-up
``AppointmentData`` for its trigger through the real delivery path (``shared.services.test_events``).

Who may: the flow's creator, or an administrator of the business (as for deleting a flow). 202 with the event id;
``429 TooManyTestEvents`` with ``Retry-After`` beyond the flow's allowance (``shared.records.test_event_limit``).
"""

from __future__ import annotations

import azure.functions as func

from shared.adapters.auth import authenticate
from shared.contracts.errors import ApiError
from shared.endpoints.access import parse_mailbox, require_administrator
from shared.endpoints.flow_webhooks import parse_webhook_id
from shared.endpoints.http import endpoint, json_response
from shared.records.flows import FlowRegistry
from shared.services import test_events

ROUTE = "v1/bookingBusinesses/{smtp}/webhooks/{webhookId}/test"


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
    event = await test_events.send(mailbox, flow)
    return json_response({"eventId": event, "webhookId": webhook_id, "trigger": flow.trigger, "isTest": True}, 202)
