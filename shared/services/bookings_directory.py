"""The directory of Bookings businesses: who is on which staff list, with which role. It is Microsoft Graph.

``BookingsDirectory`` is the small interface the endpoints need, ``GraphBookingsDirectory`` implements it
over ``shared.adapters.graph``, and ``get_directory()`` hands it out. Unit tests replace ``get_directory``
with a fake.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol, TypedDict

from shared.adapters.graph import Graph, GraphError, get_graph
from shared.contracts.errors import ApiError

log = logging.getLogger(__name__)

ADMINISTRATOR = "administrator"


class AdministeredBusiness(TypedDict):
    displayName: str
    email: str  # the business's SMTP address


class BookingsDirectory(Protocol):
    """What the registration API needs to know about Bookings businesses. Graph implements it.

    Implementations ask Graph with ``Prefer: include-unknown-enum-members`` so ``scheduler`` and
    ``teamMember`` come back as themselves (not ``unknownFutureValue``); match the caller on the staff
    member's ``emailAddress`` case-insensitively. They raise ``ApiError("BookingBusinessNotFound",
    business=...)`` for an unknown business and ``ApiError("DependencyUnavailable", dependency=...)``
    when Graph does not answer. A short-lived cache is allowed only for negative answers and listings;
    a cached "administrator" after a demotion is not.
    """

    async def staff_role(self, mailbox: str, upn: str) -> str | None:
        """The role of ``upn`` on the business's staff list (``administrator``, ``viewer``, ``scheduler``,
        ``teamMember``, ``guest``, ``externalGuest``), or None when the user is not on it."""
        ...

    async def businesses_administered_by(self, upn: str) -> list[AdministeredBusiness]:
        """Every business where ``upn`` is an administrator."""
        ...


# Listing the businesses a user administers costs one staff listing per business; Outlook allows 4
# concurrent requests per app per mailbox, and the dropdown is not worth more parallelism than that.
_STAFF_LISTING_CONCURRENCY = 4


class GraphBookingsDirectory:
    """``BookingsDirectory`` over Microsoft Graph (``shared.adapters.graph``): staff lists, read on every call."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    async def staff_role(self, mailbox: str, upn: str) -> str | None:
        try:
            staff = await self.graph.list_staff(mailbox)
        except GraphError as error:
            raise _directory_error(error, mailbox) from None
        for member in staff:
            if str(member.get("emailAddress") or "").strip().lower() == upn:
                return str(member.get("role") or "") or None
        return None

    async def businesses_administered_by(self, upn: str) -> list[AdministeredBusiness]:
        try:
            businesses = await self.graph.list_businesses()
        except GraphError as error:
            raise _directory_error(error, "*") from None
        limit = asyncio.Semaphore(_STAFF_LISTING_CONCURRENCY)

        async def administered(business: dict[str, Any]) -> AdministeredBusiness | None:
            mailbox = str(business.get("id") or business.get("email") or "").lower()
            if not mailbox:
                return None
            async with limit:
                try:
                    role = await self.staff_role(mailbox, upn)
                except ApiError as error:
                    if error.code == "BookingBusinessNotFound":  # deleted between the two calls
                        return None
                    raise
            if role != ADMINISTRATOR:
                return None
            return {"displayName": str(business.get("displayName") or mailbox), "email": mailbox}

        found = await asyncio.gather(*(administered(b) for b in businesses))
        return [b for b in found if b is not None]


def _directory_error(error: GraphError, mailbox: str) -> ApiError:
    if error.status == 404:
        return ApiError("BookingBusinessNotFound", business=mailbox)
    if error.status == 0 or error.throttled or error.status >= 500:
        headers = {"Retry-After": str(int(error.retry_after))} if error.retry_after else None
        return ApiError("DependencyUnavailable", headers=headers, dependency="Microsoft Graph (Bookings)")
    # 401/403 and the like: the app's own Graph access is misconfigured. A 500 whose correlation id leads
    # the administrator to this log line is the honest answer; the flow maker cannot fix it.
    log.error("Graph refused the Bookings directory lookup for %s: %s %s", mailbox, error.status, error.code)
    return ApiError("InternalError")


def get_directory() -> BookingsDirectory:
    """The Bookings directory: Graph, through the event loop's ``shared.adapters.graph`` client."""
    return GraphBookingsDirectory(get_graph())
