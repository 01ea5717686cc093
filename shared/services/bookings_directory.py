"""The directory of Bookings businesses: who is on which staff list, with which role. It is Microsoft Graph.

``BookingsDirectory`` is the small interface the endpoints need, ``GraphBookingsDirectory`` implements it
over ``shared.adapters.graph``, and ``get_directory()`` hands it out. Unit tests replace ``get_directory``
with a fake.

Who the caller is, for a staff list
    A staff member's ``emailAddress`` is the person's mail address. The caller's token names their UPN,
    which in many tenants is not that address (a UPN on ``contoso.onmicrosoft.com``, a renamed user, a guest's
    ``…#EXT#@…``). So a staff list is matched against every address of the caller: first the token's own
    (upn, preferred_username, email); when none is on the list, the directory's ``mail`` and ``proxyAddresses``
    (``smtp:`` entries, returned only with ``$select``) of the signed-in user, read on the caller's behalf
    (``GET /me``, delegated ``User.Read``). Only whole addresses match (case-insensitive), never a part of one.
    When the directory cannot be asked, the answer is an error (``DependencyUnavailable``), never a guess.

The business dropdown
    ``GET /solutions/bookingBusinesses`` is "Application: Not supported" in revisions of its v1.0 page, so
    the businesses are listed as the caller (on-behalf-of, delegated ``Bookings.Read.All``), as Microsoft's own
    connector does; then each business's staff list (app-only) says where the caller is an administrator.
    Cost of one dropdown call, uncached: one token exchange, one listing, at most one ``/me``, one staff
    listing per business. Kept for ``LISTING_CACHE_SECONDS`` per caller, staff lists for the dropdown for
    ``STAFF_CACHE_SECONDS`` per business, the caller's directory addresses for ``ADDRESS_CACHE_SECONDS``; one
    caller may cause at most ``GRAPH_CALLS_PER_CALLER_PER_MINUTE`` Graph calls through the dropdown
    (``TooManyDirectoryLookups``, 429 with ``Retry-After``, beyond). Rules that admit a caller
    (``staff_role``) never use a cached role: a demoted administrator is refused at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Protocol, TypedDict

from cachetools import TTLCache

from shared.adapters.auth import Caller
from shared.adapters.graph import Graph, GraphError, get_graph
from shared.adapters.on_behalf_of import graph_as
from shared.contracts.errors import ApiError

log = logging.getLogger(__name__)

ADMINISTRATOR = "administrator"
LISTING_CACHE_SECONDS = 60.0
STAFF_CACHE_SECONDS = 60.0
ADDRESS_CACHE_SECONDS = 300.0
GRAPH_CALLS_PER_CALLER_PER_MINUTE = 120
CACHE_SIZE = 10_000
# Listing the businesses a user administers costs one staff listing per business; Outlook allows 4
# concurrent requests per app per mailbox, and the dropdown is not worth more parallelism than that.
_STAFF_LISTING_CONCURRENCY = 4
_ME_SELECT = "mail,proxyAddresses,userPrincipalName,otherMails"


class AdministeredBusiness(TypedDict):
    displayName: str
    email: str  # the business's SMTP address


class BookingsDirectory(Protocol):
    """What the endpoints need to know about Bookings businesses. Graph implements it.

    Implementations ask Graph with ``Prefer: include-unknown-enum-members`` so ``scheduler`` and
    ``teamMember`` come back as themselves (not ``unknownFutureValue``), and match staff members' addresses
    against every address of the caller (module docstring). They raise ``ApiError("BookingBusinessNotFound",
    business=...)`` for an unknown business and ``ApiError("DependencyUnavailable", dependency=...)`` when
    Graph does not answer. A short-lived cache is allowed only for listings; a cached "administrator" after a
    demotion is not.
    """

    async def staff_role(self, mailbox: str, caller: Caller) -> str | None:
        """The caller's role on the business's staff list (``administrator``, ``viewer``, ``scheduler``,
        ``teamMember``, ``guest``, ``externalGuest``), or None when they are not on it."""
        ...

    async def businesses_administered_by(self, caller: Caller) -> list[AdministeredBusiness]:
        """Every business where the caller is an administrator."""
        ...


class _CallBudget:
    """At most ``limit`` Graph calls per caller in any 60 s (a sliding window per caller)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._calls: dict[str, deque[float]] = {}

    def spend(self, caller: str, calls: int) -> None:
        now = time.monotonic()
        window = self._calls.setdefault(caller, deque())
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) + calls > self.limit:
            wait = int(60 - (now - window[0])) + 1 if window else 60
            raise ApiError("TooManyDirectoryLookups", headers={"Retry-After": str(wait)}, seconds=wait)
        window.extend([now] * calls)
        if len(self._calls) > CACHE_SIZE:
            self._calls = {k: v for k, v in self._calls.items() if v and v[-1] > now - 60}


# Bounded, least recently used first out, each entry for its own lifetime.
_listings: TTLCache[str, list[AdministeredBusiness]] = TTLCache(maxsize=CACHE_SIZE, ttl=LISTING_CACHE_SECONDS)
_staff_lists: TTLCache[str, list[dict[str, Any]]] = TTLCache(maxsize=CACHE_SIZE, ttl=STAFF_CACHE_SECONDS)
_addresses: TTLCache[str, set[str]] = TTLCache(maxsize=CACHE_SIZE, ttl=ADDRESS_CACHE_SECONDS)
_budget = _CallBudget(GRAPH_CALLS_PER_CALLER_PER_MINUTE)


def forget_cached() -> None:
    """Drop every cached listing, staff list and address set (tests that re-seed the directory)."""
    for cache in (_listings, _staff_lists, _addresses):
        cache.clear()


def directory_addresses(user: dict[str, Any]) -> set[str]:
    """The mail addresses a Graph user object names: ``mail``, ``otherMails``, and the ``smtp:`` entries of
    ``proxyAddresses`` (``SMTP:`` is the primary one; other address types such as ``x500:`` are not mail)."""
    found: set[str] = set()
    for value in [user.get("mail"), *(user.get("otherMails") or [])]:
        if isinstance(value, str) and "@" in value:
            found.add(value.strip().lower())
    for proxy in user.get("proxyAddresses") or []:
        if isinstance(proxy, str) and proxy[:5].lower() == "smtp:" and "@" in proxy:
            found.add(proxy[5:].strip().lower())
    return found


def _role_of(staff: list[dict[str, Any]], addresses: set[str] | frozenset[str]) -> str | None:
    for member in staff:
        if str(member.get("emailAddress") or "").strip().lower() in addresses:
            return str(member.get("role") or "") or None
    return None


class GraphBookingsDirectory:
    """``BookingsDirectory`` over Microsoft Graph (``shared.adapters.graph``)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    async def _staff(self, mailbox: str) -> list[dict[str, Any]]:
        try:
            return await self.graph.list_staff(mailbox)
        except GraphError as error:
            raise _directory_error(error, mailbox) from None

    async def caller_addresses(self, caller: Caller) -> set[str]:
        """The caller's addresses in the directory (``/me`` on their behalf), kept a few minutes per user."""
        cached = _addresses.get(caller.oid)
        if cached is not None:
            return cached
        try:
            user = await graph_as(caller.token).me(_ME_SELECT)
        except GraphError as error:
            raise _as_user_error(error, caller) from None
        found = directory_addresses(user or {}) | {str((user or {}).get("userPrincipalName") or "").lower()}
        found.discard("")
        _addresses[caller.oid] = found
        return found

    async def staff_role(self, mailbox: str, caller: Caller) -> str | None:
        staff = await self._staff(mailbox)
        role = _role_of(staff, caller.claimed_addresses or frozenset({caller.upn}))
        if role is not None:
            return role
        return _role_of(staff, await self.caller_addresses(caller))

    async def businesses_administered_by(self, caller: Caller) -> list[AdministeredBusiness]:
        cached = _listings.get(caller.oid)
        if cached is not None:
            return cached
        _budget.spend(caller.oid, 2)  # the exchange and the listing
        try:
            businesses = await graph_as(caller.token).list_businesses()
        except GraphError as error:
            raise _as_user_error(error, caller) from None
        addresses: set[str] | frozenset[str] = caller.claimed_addresses or frozenset({caller.upn})
        limit = asyncio.Semaphore(_STAFF_LISTING_CONCURRENCY)

        async def staff_of(mailbox: str) -> list[dict[str, Any]] | None:
            staff = _staff_lists.get(mailbox)
            if staff is not None:
                return staff
            _budget.spend(caller.oid, 1)
            async with limit:
                try:
                    staff = await self._staff(mailbox)
                except ApiError as error:
                    if error.code == "BookingBusinessNotFound":  # deleted between the two calls
                        return None
                    raise
            _staff_lists[mailbox] = staff
            return staff

        mailboxes = {str(b.get("id") or b.get("email") or "").lower(): b for b in businesses}
        mailboxes.pop("", None)
        staff_lists = dict(zip(mailboxes, await asyncio.gather(*(staff_of(m) for m in mailboxes)), strict=True))
        if any(s is not None and _role_of(s, addresses) is None for s in staff_lists.values()):
            if _addresses.get(caller.oid) is None:
                _budget.spend(caller.oid, 1)
            addresses = set(addresses) | await self.caller_addresses(caller)
        found: list[AdministeredBusiness] = [
            {"displayName": str(mailboxes[m].get("displayName") or m), "email": m}
            for m, staff in staff_lists.items() if staff is not None and _role_of(staff, addresses) == ADMINISTRATOR]
        _listings[caller.oid] = found
        return found


def _unavailable(error: GraphError) -> ApiError:
    headers = {"Retry-After": str(int(error.retry_after))} if error.retry_after else None
    return ApiError("DependencyUnavailable", headers=headers, dependency="Microsoft Graph (Bookings)")


def _as_user_error(error: GraphError, caller: Caller) -> ApiError:
    """A call made on the caller's behalf failed: Graph down (503), or the delegated access is not granted."""
    if error.status == 0 or error.throttled or error.status >= 500:
        return _unavailable(error)
    log.error("Graph refused a call on behalf of %s: %s %s %s", caller.oid, error.status, error.code, error.message)
    reason = error.message if error.code == "OnBehalfOfFailed" else f"Graph answered {error.status} {error.code}"
    return ApiError("GraphConsentMissing", reason=reason)


def _directory_error(error: GraphError, mailbox: str) -> ApiError:
    if error.status == 404:
        return ApiError("BookingBusinessNotFound", business=mailbox)
    if error.status == 0 or error.throttled or error.status >= 500:
        return _unavailable(error)
    # 401/403 and the like: the app's own Graph access is misconfigured. A 500 whose correlation id leads
    # the administrator to this log line is the honest answer; the flow maker cannot fix it.
    log.error("Graph refused the Bookings directory lookup for %s: %s %s", mailbox, error.status, error.code)
    return ApiError("InternalError")


def get_directory() -> BookingsDirectory:
    """The Bookings directory: Graph, through the event loop's ``shared.adapters.graph`` client."""
    return GraphBookingsDirectory(get_graph())
