"""Who may call the connector's API for a business, and how a business is named in a route.

A business is named by its mailbox (SMTP address, case-insensitive). The rule of every administrative
route is the one Microsoft's connector applies to its triggers: the signed-in caller (``shared.adapters.auth``)
must be an ``administrator`` on the business's staff list, asked of the directory on every request and
never cached: a stale "yes" after a demotion is not acceptable.

The connector's actions follow Bookings' own roles (``ACTION_ROLES``, checked the same way): reading a
business's appointments, services and staff is for every role that sees the Bookings calendar
(administrators, schedulers, viewers, team members), booking one for administrators and schedulers. Team
members may change only their own bookings in Bookings; the app does not model whose a booking is, so it lets
them read only. Guests see nothing. Role names: Graph's ``bookingStaffRole``
(https://learn.microsoft.com/en-us/graph/api/resources/bookingstaffmember?view=graph-rest-1.0).

An appointment is named in a route by the id Graph issued (``parse_appointment_id``: the one guard every route
taking an appointment id uses, before the id goes anywhere near a Graph URL).
"""

from __future__ import annotations

import re

import azure.functions as func

from shared.adapters.auth import Caller, authenticate
from shared.contracts.errors import ApiError
from shared.services import bookings_directory
from shared.services.bookings_directory import ADMINISTRATOR

READ, WRITE = "read", "write"
ACTION_ROLES: dict[str, tuple[str, ...]] = {
    READ: (ADMINISTRATOR, "scheduler", "viewer", "teamMember"),
    WRITE: (ADMINISTRATOR, "scheduler"),
}
_ACTION_TEXT = {READ: "read its appointments, services and staff", WRITE: "book appointments"}

# Conservative: what Bookings mailboxes look like, and nothing that could break a Table key or a URL
# (/ \ # ? are not allowed in PartitionKey).
_SMTP = re.compile(r"^[a-z0-9](?:[a-z0-9._%+'-]{0,62}[a-z0-9_%+'-])?@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
                   r"[a-z0-9-]{2,63}$")


# What Graph issues as appointment ids: Exchange REST ids, URL-safe base64 ("AAMkADKnAAA=" in
# https://learn.microsoft.com/en-us/graph/api/bookingappointment-get; the REST format replaces "+" by "-" and "/"
# by "_" and may end in "=" padding: https://learn.microsoft.com/en-us/graph/api/user-translateexchangeids).
# Nothing else is accepted: no "." (so never a dot segment such as ".." or its encodings, which would name another
# Graph resource), no "/ ? # \ %", no control characters, no spaces.
# Bookings' service and staff ids are GUIDs, which fit the same alphabet.
_GRAPH_ID = re.compile(r"[A-Za-z0-9_=-]+")


def is_graph_id(value: str, limit: int = 512) -> bool:
    """Whether ``value`` is spelt as Graph spells the ids it issues (at most ``limit`` characters)."""
    return 0 < len(value) <= limit and _GRAPH_ID.fullmatch(value) is not None


def parse_appointment_id(raw: str | None) -> str:
    """The appointment id of a route, as Graph issued it; ``InvalidRequest`` for anything Graph never issues."""
    appointment_id = (raw or "").strip()
    if not is_graph_id(appointment_id):
        raise ApiError("InvalidRequest", reason="the appointment id is not one Microsoft Graph issues (take the "
                                                "AppointmentId of a trigger or of List appointments)")
    return appointment_id


def parse_mailbox(raw: str | None) -> str:
    """The business's mailbox from a route parameter, lower-cased; ``InvalidRequest`` if it is not one."""
    mailbox = (raw or "").strip().lower()
    if len(mailbox) > 254 or not _SMTP.match(mailbox):
        raise ApiError("InvalidRequest", reason="the Bookings business must be named by its SMTP address "
                                                "(e.g. clinic@contoso.com)")
    return mailbox


async def require_administrator(mailbox: str, caller: Caller) -> None:
    role = await bookings_directory.get_directory().staff_role(mailbox, caller)
    if role != ADMINISTRATOR:
        raise ApiError("NotBookingsAdministrator", business=mailbox, role=role or "none (not on the staff list)")


async def administered_mailbox(req: func.HttpRequest) -> tuple[str, Caller]:
    """The route's business and the caller, once the caller is proven one of its administrators."""
    caller = await authenticate(req.headers.get("authorization"))
    mailbox = parse_mailbox(req.route_params.get("smtp"))
    await require_administrator(mailbox, caller)
    return mailbox, caller


async def staff_mailbox(req: func.HttpRequest, access: str) -> tuple[str, Caller]:
    """The route's business and the caller, once the caller's role there allows ``access`` (``READ`` or
    ``WRITE``); ``BookingsRoleNotAllowed`` otherwise (404 ``BookingBusinessNotFound`` for no such business)."""
    caller = await authenticate(req.headers.get("authorization"))
    mailbox = parse_mailbox(req.route_params.get("smtp"))
    role = await bookings_directory.get_directory().staff_role(mailbox, caller)
    if role not in ACTION_ROLES[access]:
        raise ApiError("BookingsRoleNotAllowed", business=mailbox, role=role or "none (not on the staff list)",
                       action=_ACTION_TEXT[access], allowed=", ".join(ACTION_ROLES[access]))
    return mailbox, caller
