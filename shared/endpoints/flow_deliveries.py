"""A flow's deliveries, from Power Automate: *List deliveries of a flow* and *Replay failed deliveries of a flow*.

Routes (under the ``api`` route prefix):

- ``GET  v1/bookingBusinesses/{smtp}/webhooks/{webhookId}/deliveries?top=&after=`` the flow's deliveries of the
  last ``DELIVERY_LOG_RETENTION_DAYS`` (``shared.records.delivery_log``: ids and statuses only), newest first,
  ``{"businessSmtp", "webhookId", "trigger", "consecutiveFailures", "lastDeliveryStatus", "value": [...],
  "nextLink"}`` with at most ``top`` (``DEFAULT_PAGE_SIZE``, up to ``MAX_PAGE_SIZE``) a page: ``nextLink`` (Power
  Automate's ``x-ms-pageable``) while more follow
- ``POST v1/bookingBusinesses/{smtp}/webhooks/{webhookId}/deadletters/replay`` the flow's dead letters delivered
  again (``shared.services.dead_letters.replay_all``) → 202 ``{"businessSmtp", "webhookId", "replayed",
  "discarded"}``

A flow is named by its webhook id: the id its registration returned (Power Automate keeps it in the ``Location``
it DELETEs), which the connector's *Flow* dropdown lists with the trigger, creator and creation time (*List the
appointment flows of a Bookings business*), and which each delivery carries as ``X-Bookings-Webhook-Id``.

Who may: the flow's creator (the ``oid`` of the registration's sign-in) and the business's administrators, the
rule of deleting a flow and of test events. Anyone else: ``403 NotFlowCreatorOrAdministrator``, or ``404
BookingBusinessNotFound``; ``404 FlowNotFound`` only for an administrator (nobody else learns which flows exist).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import azure.functions as func

from shared.adapters.auth import authenticate
from shared.adapters.settings import get_settings
from shared.contracts.errors import ApiError
from shared.endpoints.access import parse_mailbox
from shared.endpoints.flow_webhooks import ROUTE_PREFIX, parse_webhook_id
from shared.endpoints.http import endpoint, json_response, page_size
from shared.records import delivery_log
from shared.records.flows import Flow, FlowRegistry
from shared.services import bookings_directory, dead_letters
from shared.services.bookings_directory import ADMINISTRATOR
from shared.services.dead_letters import REPLAYED

DELIVERIES_ROUTE = "v1/bookingBusinesses/{smtp}/webhooks/{webhookId}/deliveries"
REPLAY_ROUTE = "v1/bookingBusinesses/{smtp}/webhooks/{webhookId}/deadletters/replay"
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 100


async def flow_of_creator_or_administrator(req: func.HttpRequest) -> tuple[str, Flow]:
    """The route's business and flow, once the caller is its creator or an administrator of the business."""
    caller = await authenticate(req.headers.get("authorization"))
    mailbox = parse_mailbox(req.route_params.get("smtp"))
    webhook_id = parse_webhook_id(req.route_params.get("webhookId"))
    flow = await FlowRegistry.default().get_flow(mailbox, webhook_id)
    if flow is None or flow.created_by_oid != caller.oid:
        role = await bookings_directory.get_directory().staff_role(mailbox, caller)
        if role != ADMINISTRATOR:
            raise ApiError("NotFlowCreatorOrAdministrator", business=mailbox, id=webhook_id,
                           role=role or "none (not on the staff list)")
    if flow is None:
        raise ApiError("FlowNotFound", business=mailbox, id=webhook_id)
    return mailbox, flow



def _next_link(mailbox: str, webhook_id: str, top: int, after: str) -> str:
    path = DELIVERIES_ROUTE.replace("{smtp}", quote(mailbox, safe="@")).replace("{webhookId}", webhook_id)
    return f"{get_settings().public_base_url}/{ROUTE_PREFIX}/{path}?{urlencode({'top': top, 'after': after})}"


@endpoint
async def list_deliveries(req: func.HttpRequest) -> func.HttpResponse:
    """A page of the flow's deliveries, newest first (route ``DELIVERIES_ROUTE``)."""
    mailbox, flow = await flow_of_creator_or_administrator(req)
    top = page_size(req.params.get("top"), DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    raw_after = req.params.get("after")
    after = delivery_log.parse_cursor(raw_after) if raw_after else None
    if raw_after and after is None:
        raise ApiError("InvalidRequest", reason="after must come from the previous page's nextLink")
    rows, more = await delivery_log.page(mailbox, flow.webhook_id, after=after, top=top, now=datetime.now(UTC),
                                        retention_days=get_settings().delivery_log_retention_days)
    body: dict[str, Any] = {"businessSmtp": mailbox, "webhookId": flow.webhook_id, "trigger": flow.trigger,
                            # The flow's health (written behind the deliveries, within seconds): at a glance.
                            "consecutiveFailures": flow.consecutive_failures,
                            "lastDeliveryStatus": flow.last_delivery_status,
                            "value": [delivery_log.listing(row) for row in rows]}
    if more:
        body["nextLink"] = _next_link(mailbox, flow.webhook_id, top, delivery_log.cursor(rows[-1]))
    return json_response(body)


@endpoint
async def replay_dead_letters(req: func.HttpRequest) -> func.HttpResponse:
    """Deliver the flow's dead letters again (route ``REPLAY_ROUTE``)."""
    mailbox, flow = await flow_of_creator_or_administrator(req)
    outcomes = await dead_letters.replay_all(mailbox, flow.webhook_id)
    return json_response({
        "businessSmtp": mailbox, "webhookId": flow.webhook_id,
        "replayed": [letter.id for letter, outcome in outcomes if outcome == REPLAYED],
        "discarded": [{"id": letter.id, "reason": outcome} for letter, outcome in outcomes if outcome != REPLAYED],
    }, 202)
