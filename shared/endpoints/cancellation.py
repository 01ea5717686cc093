"""POST /api/v1/bookingBusinesses/{smtp}/appointments/{id}/cancel: cancel with a reason flows can see.

Graph has no cancellation-reason property: a cancelled appointment simply disappears, so Microsoft's
connector sends ``CancelReason`` empty. Cancelling through this route (administrators of the business
only) puts the reason in the Cancelled event (``shared.services.appointments``: ``Appointments.cancel``); the
cancellation message also goes to the customer, as Bookings sends it. Cancellations made elsewhere (the
Bookings page, Outlook, the customer) carry no reason we could know.

Needs the application permissions ``ENABLE_CANCEL_WITH_REASON`` grants: ``Bookings.ReadWrite.All``, which
the cancel page lists, and ``BookingsAppointment.ReadWrite.All``, which the other appointment pages name
(infra/README.md, "Microsoft Graph permissions").
"""

from __future__ import annotations

import json

import azure.functions as func

from shared.adapters.auth import authenticate
from shared.contracts.errors import ApiError
from shared.endpoints.access import parse_mailbox, require_administrator
from shared.endpoints.http import empty_response, endpoint
from shared.services.appointments import Appointments

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
    await Appointments(mailbox).cancel(appointment_id, reason, caller.upn)
    return empty_response(204)
