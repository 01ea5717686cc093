"""One Bookings business in Microsoft Graph: every Graph call the reconcile worker and the actions make for it.

``Bookings(mailbox)`` reads an appointment by id (``GET …/appointments/{id}``; listings omit customers and
notes), a calendar event by id (notifications name events), the business's calendar view, its customers, and
the services, staff and custom questions that payloads name; it books appointments, adds customers and cancels.
``calls`` counts the requests it made (the reconcile reports them per change).

The lookups (services, staff, custom questions) have one cache per worker process, per business: kept
``LOOKUP_CACHE_SECONDS`` (3 Graph listings per business in that time, not 3 per change; a rename shows in
payloads within it), at most ``LOOKUP_CACHE_SIZE`` businesses (least recently used go first). The reconcile
reads them again sooner when an appointment names an id they lack (a new service, staff member or question), at
most once per ``Bookings`` (one reconcile); ids still missing then are remembered and not read for again. The
actions take the cached lookups only when at most ``ACTION_LOOKUP_SECONDS`` old: their lists are what a flow
maker picks from.

Graph's failures become catalogue errors (``GraphFailure``, which keeps Graph's status for the workers):
404 (and an appointment id Graph cannot parse) → ``AppointmentNotFound`` / ``BookingBusinessNotFound``, 401/403 →
``GraphPermissionMissing`` (the app's own grant, which a flow maker cannot fix but an administrator can), 400 or
422 on a write → ``AppointmentRejected`` with Graph's reason, 409 on a write → ``AppointmentSlotTaken`` (both
say retrying will not help), anything else (throttling, no answer) → ``DependencyUnavailable`` with Graph's
``Retry-After`` (what a create makes of those: ``shared.services.appointments``). Status codes:
https://learn.microsoft.com/en-us/graph/errors
A read of an appointment or event that Graph answers 404 is ``None``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from cachetools import TTLCache

from shared.adapters.graph import Graph, GraphError, get_graph
from shared.services import caller_budget
from shared.services.graph_failures import GraphFailure

LOOKUP_CACHE_SECONDS = 600.0
LOOKUP_CACHE_SIZE = 2000
ACTION_LOOKUP_SECONDS = 60.0
# Graph (Outlook) serves at most 4 concurrent requests per app and mailbox: the reconcile keeps 3, callers 1.
MAILBOX_CONCURRENCY = caller_budget.RECONCILE_CONCURRENCY


class Lookups(TypedDict):
    services: list[dict[str, Any]]
    staff: list[dict[str, Any]]
    questions: list[dict[str, Any]]


@dataclass
class _Cached:
    lookups: Lookups
    read_at: float  # time.monotonic()
    missing: set[str] = field(default_factory=set)  # ids appointments named that a read after them lacked


_lookups: TTLCache[str, _Cached] = TTLCache(maxsize=LOOKUP_CACHE_SIZE, ttl=LOOKUP_CACHE_SECONDS)


def forget_cached() -> None:
    """Drop every business's cached lookups (tests that change a business)."""
    _lookups.clear()


def ids_named(appointment: dict[str, Any]) -> set[str]:
    """The service, staff and question ids a Graph appointment names (what the lookups must resolve)."""
    ids = {str(appointment.get("serviceId") or "")}
    ids.update(str(s) for s in appointment.get("staffMemberIds") or [] if s)
    for customer in appointment.get("customers") or []:
        if isinstance(customer, dict):
            ids.update(str(a.get("questionId") or "") for a in customer.get("customQuestionAnswers") or []
                       if isinstance(a, dict))
    ids.discard("")
    return ids


def _ids_in(lookups: Lookups) -> set[str]:
    return {str(item.get("id")) for items in (lookups["services"], lookups["staff"], lookups["questions"])
            for item in items if isinstance(item, dict) and item.get("id")}


def failure(error: GraphError, mailbox: str, *, appointment: bool = False, write: bool = False) -> GraphFailure:
    """The catalogue error for a Graph failure on the business ``mailbox``."""
    if error.status == 404 or (appointment and error.code == "ErrorInvalidIdMalformed"):
        return GraphFailure(error, "AppointmentNotFound" if appointment else "BookingBusinessNotFound",
                            business=mailbox)
    if error.status in (401, 403):
        return GraphFailure(error, "GraphPermissionMissing", business=mailbox, graph_code=error.code)
    if write and error.status in (400, 422):
        return GraphFailure(error, "AppointmentRejected", business=mailbox, reason=error.message[:500])
    if write and error.status == 409:  # "conflicts with the current state" (graph/errors): the slot is not free
        return GraphFailure(error, "AppointmentSlotTaken", business=mailbox, reason=error.message[:300])
    headers = {"Retry-After": str(int(error.retry_after))} if error.retry_after else None
    return GraphFailure(error, "DependencyUnavailable", headers=headers,
                        dependency=f"Microsoft Graph ({error.status} {error.code})")


class Bookings:
    """One business's appointments, calendar, customers and lookups in Graph (app-only)."""

    def __init__(self, mailbox: str, graph: Graph | None = None, *, for_caller: bool = False) -> None:
        """``for_caller``: the calls are made on behalf of a caller (an action), and spend the callers' share of
        the mailbox's Graph limits (``shared.services.caller_budget``); the reconcile's do not."""
        self.mailbox = mailbox
        self.graph = graph or get_graph()
        self.calls = 0  # Graph requests made
        self.for_caller = for_caller
        self._limit = asyncio.Semaphore(MAILBOX_CONCURRENCY)
        self._prepaid = 0  # calls already spent from the callers' share (``reserve``)
        self._pinned: Lookups | None = None  # what this reader maps with
        self._read_here = False  # read from Graph by this reader (not again, whatever is missing)

    async def reserve(self, calls: int) -> None:
        """Spend ``calls`` of the callers' share at once, for calls about to be made together (one storage
        read and write for all of them)."""
        if self.for_caller and calls > 0:
            await caller_budget.spend(self.mailbox, calls)
            self._prepaid += calls

    @contextlib.asynccontextmanager
    async def _calling(self, calls: int = 1) -> AsyncIterator[None]:
        """Around each Graph request: for a caller, spend from the share (what ``reserve`` paid first) and hold
        the callers' slot of the mailbox; for the reconcile, nothing (its own concurrency is ``_limit``)."""
        if not self.for_caller:
            yield
            return
        prepaid = min(self._prepaid, calls)
        self._prepaid -= prepaid
        if calls > prepaid:
            await caller_budget.spend(self.mailbox, calls - prepaid)
        async with caller_budget.slot(self.mailbox):
            yield

    # ---- reads ------------------------------------------------------------------------------------

    async def appointment(self, appointment_id: str) -> dict[str, Any] | None:
        """``GET …/appointments/{id}``, at most ``MAILBOX_CONCURRENCY`` at a time; None when Graph has none."""
        async with self._limit, self._calling():
            self.calls += 1
            try:
                return await self.graph.get_appointment(self.mailbox, appointment_id)
            except GraphError as error:
                if error.status == 404:
                    return None
                raise failure(error, self.mailbox, appointment=True) from None

    async def event(self, event_id: str) -> dict[str, Any] | None:
        """The mailbox's calendar event (what a notification names); None when Graph has none."""
        self.calls += 1
        try:
            async with self._calling():
                return await self.graph.get_event(self.mailbox, event_id)
        except GraphError as error:
            if error.status == 404:
                return None
            raise failure(error, self.mailbox) from None

    async def calendar_view(self, start: datetime, end: datetime) -> tuple[list[dict[str, Any]], int]:
        """The appointments overlapping ``start``..``end`` (without customers and notes), and how many pages
        (requests) the listing took."""
        try:
            async with self._calling():  # a caller's views are windows of a page or two (``Appointments.page``)
                listing, pages = await self.graph.calendar_view_pages(self.mailbox, start, end)
        except GraphError as error:
            raise failure(error, self.mailbox) from None
        self.calls += pages
        return listing, pages

    async def customers(self) -> list[dict[str, Any]]:
        self.calls += 1
        try:
            async with self._calling():
                return await self.graph.list_customers(self.mailbox)
        except GraphError as error:
            raise failure(error, self.mailbox) from None

    # ---- lookups ----------------------------------------------------------------------------------

    async def lookups(self, max_age: float = ACTION_LOOKUP_SECONDS) -> Lookups:
        """Services, staff and custom questions: the cached ones when at most ``max_age`` seconds old."""
        cached = _lookups.get(self.mailbox)
        if cached is not None and cached.read_at > time.monotonic() - max_age:
            return cached.lookups
        return await self._read_lookups()

    async def lookups_for(self, appointment: dict[str, Any]) -> Lookups:
        """The lookups to map ``appointment`` with, as the reconcile keeps them (module docstring): the same
        ones for every appointment of this reader, read again once when one names an id they lack."""
        named = ids_named(appointment)
        cached = _lookups.get(self.mailbox)
        if self._pinned is None and cached is not None:
            self._pinned = cached.lookups
        known_missing = cached.missing if cached is not None else set()
        if self._pinned is None or (not self._read_here and named - _ids_in(self._pinned) - known_missing):
            self._pinned = await self._read_lookups()
            self._read_here = True
        missing = named - _ids_in(self._pinned)
        entry = _lookups.get(self.mailbox)
        if missing and entry is not None:  # removed since (or never there): no later reader reads for them
            entry.missing.update(missing)
        return self._pinned

    async def _read_lookups(self) -> Lookups:
        self.calls += 3
        business = self.mailbox
        try:
            if self.for_caller:  # one after the other, in the callers' one slot
                async with self._calling(3):
                    services, staff, questions = (await self.graph.list_services(business),
                                                  await self.graph.list_staff(business),
                                                  await self.graph.list_custom_questions(business))
            else:
                services, staff, questions = await asyncio.gather(
                    self.graph.list_services(business), self.graph.list_staff(business),
                    self.graph.list_custom_questions(business))
        except GraphError as error:
            raise failure(error, self.mailbox) from None
        found: Lookups = {"services": services, "staff": staff, "questions": questions}
        _lookups[self.mailbox] = _Cached(found, time.monotonic())
        return found

    # ---- writes (never retried: a retry could book twice) --------------------------------------------

    async def create_appointment(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST …/appointments``: Graph's answer is the whole appointment."""
        self.calls += 1
        try:
            async with self._calling():
                return await self.graph.create_appointment(self.mailbox, body) or {}
        except GraphError as error:
            raise failure(error, self.mailbox, write=True) from None

    async def create_customer(self, customer: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        try:
            async with self._calling():
                return await self.graph.create_customer(self.mailbox, customer)
        except GraphError as error:
            raise failure(error, self.mailbox, write=True) from None

    async def cancel(self, appointment_id: str, message: str) -> None:
        """Cancel the appointment; Bookings sends ``message`` to the customer."""
        self.calls += 1
        try:
            async with self._calling():
                await self.graph.cancel_appointment(self.mailbox, appointment_id, message)
        except GraphError as error:
            raise failure(error, self.mailbox, appointment=True) from None
