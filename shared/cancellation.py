"""POST /api/v1/bookingBusinesses/{smtp}/appointments/{id}/cancel: cancel with a reason flows can see.

Graph has no cancellation-reason property: a cancelled appointment simply disappears, so Microsoft's
connector sends ``CancelReason`` empty. Cancelling through this route (administrators of the business
only) records the reason in the mailbox partition *before* asking Graph to cancel (the cancellation
message also goes to the customer, as Bookings sends it), so the reconcile worker finds it when the
appointment vanishes and puts it in the Cancelled event. Cancellations made elsewhere (the Bookings
page, Outlook, the customer) carry no reason we could know.

Needs the Graph permission ``BookingsAppointment.ReadWrite.All`` (see the deployment section).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import azure.functions as func

from shared.auth import authenticate
from shared.errors import ApiError
from shared.graph import GraphError, get_graph
from shared.notifications import change_message, enqueue_change
from shared.reconcile import CANCEL_REASON_PREFIX
from shared.registration_api import parse_business, require_administrator
from shared.store import MAILBOX_TABLE, get_store
from shared.web import CORRELATION_HEADER, endpoint

log = logging.getLogger(__name__)

ROUTE = "v1/bookingBusinesses/{smtp}/appointments/{appointmentId}/cancel"
MAX_REASON_CHARS = 2000


def parse_reason(body: bytes) -> str:
    try:
        document = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ApiError("InvalidRequest", reason="the body is not JSON") from None
    reason = document.get("reason") if isinstance(document, dict) else None
    if not isinstance(reason, str) or not reason.strip():
        raise ApiError("InvalidRequest", reason='give the cancellation reason as {"reason": "..."}')
    if len(reason) > MAX_REASON_CHARS:
        raise ApiError("InvalidRequest", reason=f"the reason is longer than {MAX_REASON_CHARS} characters")
    return reason.strip()


@endpoint
async def handle(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    caller = await authenticate(req.headers.get("authorization"))
    business = parse_business(req.route_params.get("smtp"))
    appointment_id = (req.route_params.get("appointmentId") or "").strip()
    if not appointment_id or len(appointment_id) > 512:
        raise ApiError("InvalidRequest", reason="no appointment id")
    await require_administrator(business, caller)
    reason = parse_reason(req.get_body())
    table = get_store().table(MAILBOX_TABLE)
    row_key = f"{CANCEL_REASON_PREFIX}{appointment_id}"
    await table.upsert_entity({"PartitionKey": business, "RowKey": row_key, "Reason": reason,
                               "CancelledBy": caller.upn, "RecordedAt": datetime.now(UTC)})
    try:
        await get_graph().cancel_appointment(business, appointment_id, reason)
    except GraphError as error:
        await table.delete_entity(business, row_key)  # not cancelled: the reason must not stick to it
        if error.status == 404:
            raise ApiError("AppointmentNotFound", business=business) from None
        if error.status in (401, 403):
            raise ApiError("GraphPermissionMissing", business=business, graph_code=error.code) from None
        raise ApiError("DependencyUnavailable", dependency=f"Microsoft Graph ({error.status} {error.code})") from None
    # The calendar notification will come; this hint makes the Cancelled event independent of it.
    await enqueue_change(change_message(business, full_resync=True, reason="cancelled", correlation_id=correlation_id))
    log.info("appointment cancelled with a reason", extra={"mailbox": business, "correlationId": correlation_id})
    return func.HttpResponse(status_code=204, headers={CORRELATION_HEADER: correlation_id})
