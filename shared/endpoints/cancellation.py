"""POST /api/v1/bookingBusinesses/{smtp}/appointments/{id}/cancel: cancel with a reason flows can see.

Graph has no cancellation-reason property: a cancelled appointment simply disappears, so Microsoft's
connector sends ``CancelReason`` empty. Cancelling through this route (administrators of the business
only) records the reason in the mailbox partition *before* asking Graph to cancel (the cancellation
message also goes to the customer, as Bookings sends it), so the reconcile worker finds it when the
appointment vanishes and puts it in the Cancelled event. Cancellations made elsewhere (the Bookings
page, Outlook, the customer) carry no reason we could know.

Needs the application permissions ``ENABLE_CANCEL_WITH_REASON`` grants: ``Bookings.ReadWrite.All``, which
the cancel page lists, and ``BookingsAppointment.ReadWrite.All``, which the other appointment pages name
(infra/README.md, "Microsoft Graph permissions").
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.adapters.auth import authenticate
from shared.adapters.graph import GraphError, get_graph
from shared.contracts.errors import ApiError
from shared.endpoints.access import parse_mailbox, require_administrator
from shared.endpoints.http import empty_response, endpoint
from shared.messages import mailbox_changes
from shared.records import reconcile_state

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
async def handle(req: func.HttpRequest) -> func.HttpResponse:
    caller = await authenticate(req.headers.get("authorization"))
    mailbox = parse_mailbox(req.route_params.get("smtp"))
    appointment_id = (req.route_params.get("appointmentId") or "").strip()
    if not appointment_id or len(appointment_id) > 512:
        raise ApiError("InvalidRequest", reason="no appointment id")
    await require_administrator(mailbox, caller)
    reason = parse_reason(req.get_body())
    await reconcile_state.put_cancel_reason(mailbox, appointment_id, reason, caller.upn)
    try:
        await get_graph().cancel_appointment(mailbox, appointment_id, reason)
    except GraphError as error:
        await reconcile_state.delete_cancel_reason(mailbox, appointment_id)  # not cancelled: it must not stick
        if error.status == 404:
            raise ApiError("AppointmentNotFound", business=mailbox) from None
        if error.status in (401, 403):
            raise ApiError("GraphPermissionMissing", business=mailbox, graph_code=error.code) from None
        raise ApiError("DependencyUnavailable", dependency=f"Microsoft Graph ({error.status} {error.code})") from None
    # The calendar notification will come; this hint makes the Cancelled event independent of it.
    await mailbox_changes.enqueue(mailbox_changes.full_resync(mailbox, "cancelled"))
    log.info("appointment cancelled with a reason", extra={"mailbox": mailbox})
    return empty_response(204)
