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

import azure.functions as func

from shared.adapters.auth import authenticate
from shared.contracts.errors import ApiError
from shared.endpoints.access import parse_appointment_id, parse_mailbox, require_administrator
from shared.endpoints.http import empty_response, endpoint, json_object, text_field
from shared.services.appointments import Appointments

ROUTE = "v1/bookingBusinesses/{smtp}/appointments/{appointmentId}/cancel"
MAX_REASON_CHARS = 2000
MAX_BODY_BYTES = 64 * 1024


def parse_reason(body: bytes) -> str:
    document = json_object(body or b"{}", MAX_BODY_BYTES)
    reason = document.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ApiError("InvalidRequest", reason='give the cancellation reason as {"reason": "..."}')
    return text_field(reason, "reason", MAX_REASON_CHARS, multiline=True)


@endpoint
async def handle(req: func.HttpRequest) -> func.HttpResponse:
    caller = await authenticate(req.headers.get("authorization"))
    mailbox = parse_mailbox(req.route_params.get("smtp"))
    appointment_id = parse_appointment_id(req.route_params.get("appointmentId"))
    await require_administrator(mailbox, caller)
    reason = parse_reason(req.get_body())
    await Appointments(mailbox).cancel(appointment_id, reason, caller.upn)
    return empty_response(204)
