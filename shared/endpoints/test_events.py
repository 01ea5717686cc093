"""``POST v1/bookingBusinesses/{smtp}/webhooks/{webhookId}/test``: *Send a test event to this flow*.

A flow maker sees a trigger's dynamic content only once an appointment changes. This sends the flow a made-up
``AppointmentData`` for its trigger through the real delivery path (``shared.services.test_events``).

Who may: the flow's creator, or an administrator of the business (``403 NotFlowCreatorOrAdministrator``
otherwise). 202 with the event id; ``429 TooManyTestEvents`` with ``Retry-After`` beyond the flow's allowance
(``shared.records.test_event_limit``).
"""

from __future__ import annotations

import azure.functions as func

from shared.endpoints.flow_deliveries import flow_of_creator_or_administrator
from shared.endpoints.http import endpoint, json_response
from shared.services import test_events

ROUTE = "v1/bookingBusinesses/{smtp}/webhooks/{webhookId}/test"


@endpoint
async def handle(req: func.HttpRequest) -> func.HttpResponse:
    mailbox, flow = await flow_of_creator_or_administrator(req)
    event = await test_events.send(mailbox, flow)
    return json_response({"eventId": event, "webhookId": flow.webhook_id, "trigger": flow.trigger, "isTest": True}, 202)
