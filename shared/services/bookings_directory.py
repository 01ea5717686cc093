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
    Answered from an index of each business's administrators kept in Table storage, shared by every
    instance (``shared.records.business_admins``), never by reading every staff list per call. One call
    costs, uncached: one token exchange and one listing on the caller's behalf (``GET
    /solutions/bookingBusinesses``, delegated ``Bookings.Read.All``: it names the businesses the index does
    not know yet), one read of the index partition, at most one ``/me``; plus, for businesses whose staff
    list the index has never read, one app-only staff listing each, 8 at a time, for at most
    ``ON_DEMAND_SECONDS`` (each business is read so once, whoever calls; an answer cut short is not cached
    and the next call goes on). The answer: every business in the index where one of the caller's addresses
    is an administrator. The directory refresh timer (``refresh_index``, ``shared.workers.directory_refresh``)
    re-reads every staff list, paced, so a staff change reaches the dropdown within one refresh period plus
    a run. Kept for ``LISTING_CACHE_SECONDS`` per caller, the caller's directory addresses for
    ``ADDRESS_CACHE_SECONDS``; one caller may cause at most ``GRAPH_CALLS_PER_CALLER_PER_MINUTE`` calls
    on their behalf per instance (``TooManyDirectoryLookups``, 429 with ``Retry-After``, beyond). Rules that
    admit a caller (``staff_role``) read the staff list live and never use the index or a cached role: a
    demoted administrator is refused at once.

    The actions' dropdown (``businesses_staffed_by``) is the same answer from the same index and staff list reads,
    for every role that may use the actions (``business_admins.STAFF_ROLES`` and administrators).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypedDict

from cachetools import TTLCache

from shared.adapters.auth import Caller
from shared.adapters.graph import Graph, GraphError, get_graph
from shared.adapters.on_behalf_of import graph_as
from shared.contracts.errors import ApiError
from shared.records import business_admins, flows
from shared.records.business_admins import STAFF_ROLES, BusinessAdmins
from shared.services import caller_budget

log = logging.getLogger(__name__)

ADMINISTRATOR = "administrator"
STAFF = "staff"  # the actions' dropdown: every role that may use them (business_admins.STAFF_ROLES, administrators)
LISTING_CACHE_SECONDS = 60.0
ADDRESS_CACHE_SECONDS = 300.0
GRAPH_CALLS_PER_CALLER_PER_MINUTE = 120
CACHE_SIZE = 10_000
# The most time one dropdown call spends reading staff lists the index lacks; what is left is read by the
# next call or the refresh timer. Well within the time Power Automate waits for a dropdown's values.
ON_DEMAND_SECONDS = 15.0
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

    async def businesses_staffed_by(self, caller: Caller) -> list[AdministeredBusiness]:
        """Every business where the caller has a role that may use the actions (administrators included)."""
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


# Bounded, least recently used first out, each entry for its own lifetime. Keyed by (caller oid, which dropdown).
_listings: TTLCache[tuple[str, str], list[AdministeredBusiness]] = TTLCache(maxsize=CACHE_SIZE,
                                                                            ttl=LISTING_CACHE_SECONDS)
_addresses: TTLCache[str, set[str]] = TTLCache(maxsize=CACHE_SIZE, ttl=ADDRESS_CACHE_SECONDS)
_budget = _CallBudget(GRAPH_CALLS_PER_CALLER_PER_MINUTE)


def forget_cached() -> None:
    """Drop every cached listing and address set (tests that re-seed the directory)."""
    for cache in (_listings, _addresses):
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
        """The staff list, live: a check on a caller's behalf, spending the callers' share of the mailbox's Graph
        limits (``shared.services.caller_budget``)."""
        await caller_budget.spend(mailbox, headroom=caller_budget.ADMISSION_HEADROOM)
        try:
            async with caller_budget.slot(mailbox):
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
        return await self._businesses(caller, ADMINISTRATOR)

    async def businesses_staffed_by(self, caller: Caller) -> list[AdministeredBusiness]:
        return await self._businesses(caller, STAFF)

    async def _businesses(self, caller: Caller, which: str) -> list[AdministeredBusiness]:
        """The dropdown ``which`` (``ADMINISTRATOR`` or ``STAFF``) for the caller, from the shared index."""
        cached = _listings.get((caller.oid, which))
        if cached is not None:
            return cached
        _budget.spend(caller.oid, 2)  # the exchange and the listing
        try:
            listed = await graph_as(caller.token).list_businesses()
        except GraphError as error:
            raise _as_user_error(error, caller) from None
        index = await business_admins.read_all()
        await _note_listed(index, listed)
        complete = await self._read_unread(index, asyncio.get_running_loop().time() + ON_DEMAND_SECONDS, which)
        keys = frozenset(map(business_admins.address_key, caller.claimed_addresses or {caller.upn}))
        read = [row for row in index.values() if row.admin_keys is not None]
        listed = BusinessAdmins.administered_by if which == ADMINISTRATOR else BusinessAdmins.staffed_by
        if any(not listed(row, keys) for row in read):
            if _addresses.get(caller.oid) is None:
                _budget.spend(caller.oid, 1)
            keys |= frozenset(map(business_admins.address_key, await self.caller_addresses(caller)))
        found: list[AdministeredBusiness] = [{"displayName": row.display_name or row.mailbox, "email": row.mailbox}
                                             for row in read if listed(row, keys)]
        if complete:  # an answer missing businesses not read yet is not kept: the next call goes on reading
            _listings[(caller.oid, which)] = found
        return found

    async def _read_unread(self, index: dict[str, BusinessAdmins], deadline: float, which: str) -> bool:
        """Read the staff lists the index lacks for the dropdown ``which`` (app-only), until ``deadline``; store
        and return whether all were read. Each business is read on demand once (then the refresh keeps it),
        whoever calls; a row from before the ``Staff`` column only for the actions' dropdown."""
        unread = [row for row in index.values()
                  if (row.admin_keys is None if which == ADMINISTRATOR else not row.read)]
        if not unread:
            return True
        report = await self._read_staff_lists(unread, deadline=deadline, per_second=None,
                                              concurrency=_ON_DEMAND_CONCURRENCY)
        await _store(index, report)
        if report.unavailable is not None:  # the honest answer, as before the index: try again shortly
            raise _unavailable(report.unavailable)
        return not report.left

    async def _read_staff_lists(self, rows: list[BusinessAdmins], *, deadline: float, per_second: float | None,
                                concurrency: int) -> StaffReadReport:
        """Read each business's staff list, ``concurrency`` at a time and at most ``per_second`` starts a
        second, starting none after ``deadline`` or once Graph throttles or is unavailable."""
        report = StaffReadReport()
        limit = asyncio.Semaphore(concurrency)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        async def read(row: BusinessAdmins) -> None:
            async with limit:
                if stop.is_set() or loop.time() >= deadline:
                    report.left.append(row.mailbox)
                    return
                try:
                    staff = await self.graph.list_staff(row.mailbox)
                except GraphError as error:
                    report.error = report.error or _read_failed(report, row, error)
                    if error.status != 404:  # throttled, down or refused: the rest waits
                        stop.set()
                    return
            report.read.append(business_admins.read_row(
                row.mailbox, row.display_name, _with_roles(staff, ADMINISTRATOR),
                staff_addresses=_with_roles(staff, *STAFF_ROLES)))

        tasks: dict[asyncio.Task[None], str] = {}
        for number, row in enumerate(rows):
            if per_second and number:
                await asyncio.sleep(1 / per_second)
            if stop.is_set() or loop.time() >= deadline:
                report.left.extend(r.mailbox for r in rows[number:])
                break
            tasks[asyncio.create_task(read(row))] = row.mailbox
        if tasks:
            # A hard end: a read still waiting (Graph's Retry-After, the SDK's retries) at the deadline is left.
            _, late = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
            for task in late:
                task.cancel()
                report.left.append(tasks[task])
            await asyncio.gather(*late, return_exceptions=True)
        if report.error is not None:
            raise report.error
        return report

    async def refresh_index(self, *, seconds: float, per_second: float) -> StaffReadReport:
        """The refresh timer's work: add the businesses the app can list or has flows for, then read every
        business's staff list, least recently read first, paced at ``per_second``, for at most ``seconds``."""
        deadline = asyncio.get_running_loop().time() + seconds
        index = await business_admins.read_all()
        try:  # documented for application permissions, refused under a stricter reading (graph_sandbox)
            await _note_listed(index, await self.graph.list_businesses())
        except GraphError as error:
            log.debug("app-only business listing not available: %s %s", error.status, error.code)
        await _note_listed(index, [{"id": m} for m in await flows.mailboxes_with_flows()])
        oldest_first = sorted(index.values(), key=lambda r: (r.read_at is not None, r.read_at or _NEVER))
        report = await self._read_staff_lists(oldest_first, deadline=deadline, per_second=per_second,
                                              concurrency=_REFRESH_CONCURRENCY)
        await _store(index, report)
        return report


@dataclass
class StaffReadReport:
    """What a round of staff-list reads did: rows read, businesses gone (404), left for later."""

    read: list[BusinessAdmins] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    throttled: bool = False
    unavailable: GraphError | None = None  # Graph throttled or did not answer: reading stopped
    error: ApiError | None = None  # the app's own Graph access is refused: no point reading on


_NEVER = datetime.min.replace(tzinfo=UTC)
# Each business is a mailbox of its own: Outlook's 4 concurrent requests per app per mailbox do not limit
# reading many businesses at once. The dropdown's first call reads 8 at a time; the refresh is paced.
_ON_DEMAND_CONCURRENCY = 8
_REFRESH_CONCURRENCY = 4


def _with_roles(staff: list[dict[str, Any]], *roles: str) -> list[str]:
    return [str(m.get("emailAddress") or "") for m in staff if m.get("role") in roles]


def _read_failed(report: StaffReadReport, row: BusinessAdmins, error: GraphError) -> ApiError | None:
    """Record a failed read: a business gone (404), or left for later (Graph throttling or down: the caller
    stops reading). 401/403 and the like mean the app's own access is misconfigured: that error."""
    if error.status == 404:
        report.gone.append(row.mailbox)
        return None
    report.left.append(row.mailbox)
    report.throttled = report.throttled or error.throttled
    if error.status == 0 or error.throttled or error.status >= 500:
        report.unavailable = report.unavailable or error
        return None
    return _directory_error(error, row.mailbox)


async def _note_listed(index: dict[str, BusinessAdmins], listed: list[dict[str, Any]]) -> None:
    """Add to the index (and to ``index``) the listed businesses it lacks, and new display names."""
    changed = []
    for business in listed:
        mailbox = str(business.get("id") or business.get("email") or "").strip().lower()
        name = str(business.get("displayName") or "")
        known = index.get(mailbox)
        if mailbox and (known is None or (name and known.display_name != name)):
            row = BusinessAdmins(mailbox, name or mailbox, None, None)
            changed.append(row)  # written unread (merged): a staff list read meanwhile is kept
            index[mailbox] = row if known is None else replace(known, display_name=row.display_name)
    if changed:
        await business_admins.put(changed)


async def _store(index: dict[str, BusinessAdmins], report: StaffReadReport) -> None:
    if report.read:
        await business_admins.put(report.read)
    if report.gone:
        await business_admins.forget(report.gone)
    for row in report.read:
        index[row.mailbox] = row
    for mailbox in report.gone:
        index.pop(mailbox, None)


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


async def refresh_index(*, seconds: float, per_second: float) -> StaffReadReport:
    """One run of the administrators index refresh (``GraphBookingsDirectory.refresh_index``)."""
    return await GraphBookingsDirectory(get_graph()).refresh_index(seconds=seconds, per_second=per_second)
