"""A business's appointments, services and staff as the connector's actions show them, and the cancellation
with a reason.

Graph is asked through ``shared.services.bookings`` (app-only), which also turns Graph's failures into catalogue
errors; every call is on behalf of a caller and spends the callers' share of the mailbox's Graph limits
(``shared.services.caller_budget``: ``429 GraphBudgetSpent`` beyond it). An appointment is always read by id
before it is shown (listings omit customers and notes), and mapped by ``shared.contracts.appointment_data``
exactly as the triggers' payloads are, so an action's ``AppointmentData`` and a trigger's are the same thing.

Listing (``Appointments.page``): appointments overlapping a range, in (start time, id) order, a page at a time
after a cursor (the start and id of the last one shown, or a time before which everything was shown). Graph is
read in calendar views from the cursor on: the first ``FIRST_WINDOW`` long, each next one twice as long while
they hold fewer than a page, at most ``MAX_WINDOWS`` per page; the window length travels in the cursor, halved after
one that held more than ``DENSE_PAGES`` pages. A page therefore costs the same Graph calls for a week's range as
for a year's, and never re-lists what earlier pages covered. An appointment booked or cancelled between two pages
moves nothing: each one is listed once, or (booked before the cursor) not at all, never twice.

Cancelling with a reason: Graph has no cancellation-reason property (a cancelled appointment simply disappears),
so the reason is recorded in the mailbox partition (``shared.records.reconcile_state``) *before* Graph is asked
to cancel, where the reconcile worker finds it when the appointment vanishes and puts it in the Cancelled event;
a full-resync hint follows, so that event does not wait for Graph's notification.

Booking once (``Appointments.book``). Power Automate's retry policy resends a request that timed out or got a
408, 429 or 5xx (https://learn.microsoft.com/azure/logic-apps/logic-apps-exception-handling), so a create that
Graph stored but whose answer was lost must not book again. Each create holds a key first
(``shared.records.idempotency``): the caller's ``Idempotency-Key`` header, else the request itself (the same
caller asking for the same booking within the key's lifetime is the same booking). A key already booked is
answered with its appointment; a key whose earlier request never heard Graph's answer makes this one look in Graph
(the calendar view around the slot, then the candidates by id for the customer) before it books. Graph's refusals
say whether retrying helps: 400/422 ``AppointmentRejected`` and 409 ``AppointmentSlotTaken`` do not; throttling
and failures after which the appointment is not found are ``AppointmentNotBooked`` (503, ``Retry-After``); a 500
while another appointment holds the slot is ``AppointmentSlotTaken`` (Graph answers a taken slot with a 500:
https://github.com/microsoftgraph/microsoft-graph-docs-contrib/issues/1598). A create found in Graph after a
failure is answered 201, never 503; one not visible yet leaves its key uncertain, so the retry looks again first.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from shared.contracts.appointment_data import AppointmentData, to_appointment_data
from shared.contracts.errors import ApiError
from shared.contracts.graph_times import parse_graph_datetime, parse_iso_duration
from shared.messages import mailbox_changes
from shared.records import idempotency, reconcile_state
from shared.services.bookings import Bookings, Lookups
from shared.services.graph_failures import GraphFailure

log = logging.getLogger(__name__)

MAX_BOOKING_LENGTH = timedelta(hours=24)  # also the longest a create request may ask for (the endpoint checks)
MAX_LOOKUP_READS = 5  # appointments read by id when looking for one a create may have made
RETRY_SECONDS = 10  # Retry-After when Graph gave none
# Listing (module docstring): the calendar view is read in windows from the cursor on, never the whole range.
FIRST_WINDOW = timedelta(days=1)
MIN_WINDOW, MAX_WINDOW = timedelta(minutes=15), timedelta(days=366)
MAX_WINDOWS = 3  # calendar views per page at most (each doubling the window while they hold too few)
DENSE_PAGES = 4  # a window holding more than this many pages of appointments is halved for the next page


@dataclass(frozen=True)
class ListingCursor:
    """Where a page of *List appointments* continues: after the appointment starting at ``start`` with id
    ``after_id`` ("" : everything starting before ``start`` was listed), reading Graph ``window`` at a time."""

    start: datetime
    after_id: str
    window: timedelta


class ServiceItem(TypedDict):
    id: str
    displayName: str
    description: str
    durationMinutes: int
    maximumAttendeesCount: int
    isHiddenFromCustomers: bool


class StaffItem(TypedDict):
    id: str
    displayName: str
    emailAddress: str
    role: str


class NewAppointment(TypedDict, total=False):
    """What the *Create an appointment* action takes (``shared.endpoints.appointments`` parses it)."""

    serviceId: str
    start: datetime
    end: datetime | None
    staffMemberIds: list[str]
    customerName: str
    customerEmail: str
    customerPhone: str
    customerNotes: str
    customerTimeZone: str
    serviceNotes: str
    additionalInformation: str


class Appointments:
    """One business's appointments, services and staff."""

    def __init__(self, mailbox: str, bookings: Bookings | None = None) -> None:
        self.mailbox = mailbox
        self.bookings = bookings or Bookings(mailbox, for_caller=True)  # spends the callers' share of Graph

    async def lookups(self) -> Lookups:
        """Services, staff and custom questions of the business (what payloads name)."""
        return await self.bookings.lookups()

    async def _map(self, appointment: dict[str, Any]) -> AppointmentData:
        lookups = await self.lookups()
        return to_appointment_data(appointment, services=lookups["services"], staff=lookups["staff"],
                                   questions=lookups["questions"])

    async def _read(self, appointment_id: str) -> dict[str, Any] | None:
        try:
            return await self.bookings.appointment(appointment_id)
        except GraphFailure as failure:
            # Graph answers 400 (ErrorInvalidIdMalformed) for an id it cannot parse: no such appointment either.
            if failure.graph_status == 400:
                return None
            raise

    async def get(self, appointment_id: str) -> AppointmentData:
        found = await self._read(appointment_id)
        if found is None:
            raise ApiError("AppointmentNotFound", business=self.mailbox)
        return await self._map(found)

    async def page(self, start: datetime, end: datetime, top: int,
                   after: ListingCursor | None = None) -> tuple[list[AppointmentData], ListingCursor | None]:
        """Appointments overlapping [start, end) in (start time, id) order after ``after``, at most ``top``; and
        the cursor of the next page (None when none follows). Each is read by id (listings lack customers and
        notes). Graph is read in time windows from the cursor on (module docstring, "Listing"), so a page costs at
        most ``MAX_WINDOWS`` calendar views and ``top`` reads, whatever the range."""
        # The first page has no floor: it also lists appointments that began before ``start`` and overlap it.
        cursor = after or ListingCursor(start, "", FIRST_WINDOW)
        floor = (cursor.start, cursor.after_id) if after else (datetime.min.replace(tzinfo=UTC), "")
        found, scanned, window = await self._windows(start, end, top, cursor, floor)
        ordered = sorted(found.values(), key=_listing_key)
        chosen = ordered[:top]
        if len(ordered) > top:  # the last window held more: the next page starts after the last one shown
            last = chosen[-1]
            following: ListingCursor | None = ListingCursor(_listing_key(last)[0], _listing_key(last)[1], window)
        else:  # everything starting before ``scanned`` is on this page (or was on an earlier one)
            following = ListingCursor(scanned, "", window) if scanned < end else None
        await self.bookings.reserve(len(chosen))  # the reads by id, spent at once
        fulls = await asyncio.gather(*(self._read(str(item["id"])) for item in chosen))
        # One cancelled between the listing and its read is simply not shown.
        return [await self._map(full) for full in fulls if full is not None], following

    async def _windows(self, start: datetime, end: datetime, top: int,
                       cursor: ListingCursor, floor: tuple[datetime, str]
                       ) -> tuple[dict[str, dict[str, Any]], datetime, timedelta]:
        """The appointments after ``floor`` (by id) from at most ``MAX_WINDOWS`` consecutive calendar views, each
        twice as long as the one before while they hold fewer than ``top``; how far they reached, and the window
        length the next page starts with (halved after a window that held more than ``DENSE_PAGES`` pages)."""
        found: dict[str, dict[str, Any]] = {}
        window, scanned = cursor.window, cursor.start
        for _ in range(MAX_WINDOWS):
            # A second's lead: an appointment starting exactly at the cursor still overlaps the view.
            view_end = min(end, scanned + window)
            listing, _ = await self.bookings.calendar_view(scanned - timedelta(seconds=1), view_end)
            held = [a for a in listing if a.get("id") and _in_listing(a, start, end)
                    and _listing_key(a) > floor]
            found.update((str(a["id"]), a) for a in held)
            scanned = view_end
            if len(held) > DENSE_PAGES * top:
                window = max(MIN_WINDOW, window / 2)
            if len(found) >= top or scanned >= end:
                break
            window = min(MAX_WINDOW, window * 2)
        return found, scanned, window

    async def services(self) -> list[ServiceItem]:
        services = (await self.lookups())["services"]
        return sorted(({
            "id": str(s.get("id") or ""), "displayName": str(s.get("displayName") or ""),
            "description": str(s.get("description") or ""),
            "durationMinutes": _minutes(s.get("defaultDuration")),
            "maximumAttendeesCount": int(s.get("maximumAttendeesCount") or 1),
            "isHiddenFromCustomers": s.get("isHiddenFromCustomers") is True,
        } for s in services if s.get("id")), key=lambda s: (s["displayName"].lower(), s["id"]))

    async def staff(self) -> list[StaffItem]:
        staff = (await self.lookups())["staff"]
        return sorted(({
            "id": str(m.get("id") or ""), "displayName": str(m.get("displayName") or ""),
            "emailAddress": str(m.get("emailAddress") or ""), "role": str(m.get("role") or ""),
        } for m in staff if m.get("id")), key=lambda m: (m["displayName"].lower(), m["id"]))

    async def book(self, new: NewAppointment, *, caller: str, key: str | None = None) -> AppointmentData:
        """Book ``new`` once, however often it is asked for (module docstring, "Booking once"): ``key`` is the
        caller's ``Idempotency-Key``, else the request itself is the key."""
        request_hash = _request_hash(new, caller)
        try:
            held = await idempotency.claim(self.mailbox, f"key:{caller}:{key}" if key else f"request:{request_hash}",
                                           request_hash)
        except idempotency.KeyReused:
            raise ApiError("IdempotencyKeyReused", business=self.mailbox, hours=idempotency.KEY_HOURS) from None
        except idempotency.KeyInUse as busy:
            raise ApiError("AppointmentBookingInProgress", headers={"Retry-After": str(busy.seconds)},
                           business=self.mailbox, seconds=busy.seconds) from None
        if held.state == idempotency.BOOKED:
            return await self.get(held.appointment_id)  # as the first request answered (404 if cancelled since)
        await idempotency.prune(self.mailbox)
        try:
            found = await self._find(new) if held.look_first else None
            created = found or await self.bookings.create_appointment(await self._graph_body(new))
        except GraphFailure as failure:
            outcome = await self._not_booked(held, new, failure)
            if isinstance(outcome, ApiError):
                raise outcome from None
            return outcome
        except ApiError:
            await idempotency.release(held)  # refused before Graph was asked to book (an unknown service…)
            raise
        await idempotency.settle(held, str(created.get("id") or ""))
        # The create answer is the whole appointment; reading it again by id costs a call for nothing.
        return await self._map(created)

    async def _not_booked(self, held: idempotency.Claim, new: NewAppointment,
                          failure: GraphFailure) -> ApiError | AppointmentData:
        """What to answer when Graph's create failed; the appointment when it was booked all the same."""
        if 400 <= failure.graph_status < 500 and failure.graph_status != 429:  # Graph said no: nothing booked
            await idempotency.release(held)
            return failure
        if failure.graph_status == 429:
            await idempotency.release(held)  # throttled before anything was written
            return _retry_helps(self.mailbox, failure)
        # No answer, or a 5xx: booked or not, Graph did not say. Look, and keep the key uncertain so that a
        # retry looks again (a write Graph finishes later is then found, not booked twice).
        await idempotency.leave_uncertain(held)
        try:
            listing = await self._overlapping(new)
            found = await self._find(new, listing)
        except GraphFailure:
            return _retry_helps(self.mailbox, failure)
        if found is not None:
            await idempotency.settle(held, str(found.get("id") or ""))
            return await self._map(found)
        # Users report a 500 for a taken slot (microsoftgraph/microsoft-graph-docs-contrib#1598): say so when the
        # slot is taken, as retrying will not help.
        if failure.graph_status == 500 and _taken(new, await self._end(new), listing):
            return ApiError("AppointmentSlotTaken", business=self.mailbox,
                            reason="another appointment holds that time with the same staff or service")
        return _retry_helps(self.mailbox, failure)

    async def _overlapping(self, new: NewAppointment) -> list[dict[str, Any]]:
        start, end = new["start"], await self._end(new)
        listing, _ = await self.bookings.calendar_view(start - timedelta(minutes=1), end + timedelta(minutes=1))
        return listing

    async def _find(self, new: NewAppointment, listing: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
        """The appointment ``new`` describes, when Graph has it: the same service, times and staff in the
        calendar view, and (read by id, as listings omit customers) the same customer."""
        listing = listing if listing is not None else await self._overlapping(new)
        # Graph keeps whole seconds (``_graph_time``): compare what it was sent.
        start, end = new["start"].replace(microsecond=0), (await self._end(new)).replace(microsecond=0)
        staff = set(new.get("staffMemberIds", []))
        candidates = [a for a in listing if a.get("serviceId") == new["serviceId"]
                      and parse_graph_datetime(a.get("startDateTime")) == start
                      and parse_graph_datetime(a.get("endDateTime")) == end
                      and set(a.get("staffMemberIds") or []) >= staff]
        email = new.get("customerEmail", "").strip().lower()
        name = new.get("customerName", "").strip()
        for candidate in candidates[:MAX_LOOKUP_READS]:
            full = await self._read(str(candidate.get("id") or ""))
            customers = [c for c in (full or {}).get("customers") or [] if isinstance(c, dict)]
            if full is not None and (not (email or name) or any(
                    str(c.get("emailAddress") or "").strip().lower() == email if email else
                    str(c.get("name") or "").strip() == name for c in customers)):
                return full
        return None

    async def _service(self, new: NewAppointment) -> dict[str, Any]:
        lookups = await self.lookups()
        service = next((s for s in lookups["services"] if s.get("id") == new["serviceId"]), None)
        if service is None:
            raise ApiError("AppointmentRejected", business=self.mailbox,
                           reason="the business has no service with that id (pick one from the list)")
        known_staff = {str(m.get("id")) for m in lookups["staff"]}
        unknown = [s for s in new.get("staffMemberIds", []) if s not in known_staff]
        if unknown:
            raise ApiError("AppointmentRejected", business=self.mailbox,
                           reason=f"the business has no staff member {unknown[0]} (pick one from the list)")
        return service

    async def _end(self, new: NewAppointment) -> datetime:
        """The end asked for, else the start plus the service's length (capped like an asked-for end)."""
        if new.get("end"):
            return new["end"]  # type: ignore[return-value]
        length = parse_iso_duration((await self._service(new)).get("defaultDuration")) or timedelta(minutes=30)
        return new["start"] + min(length, MAX_BOOKING_LENGTH)

    async def _graph_body(self, new: NewAppointment) -> dict[str, Any]:
        """Graph's ``bookingAppointment`` for ``new``, as Graph's create page documents it:
        https://learn.microsoft.com/en-us/graph/api/bookingbusiness-post-appointments?view=graph-rest-1.0"""
        service = await self._service(new)
        body: dict[str, Any] = {
            "@odata.type": "#microsoft.graph.bookingAppointment",
            "serviceId": new["serviceId"],
            "startDateTime": _graph_time(new["start"]), "endDateTime": _graph_time(await self._end(new)),
            "staffMemberIds": list(new.get("staffMemberIds", [])),
            "serviceNotes": new.get("serviceNotes", ""),
            "additionalInformation": new.get("additionalInformation", ""),
        }
        if new.get("customerTimeZone"):
            body["customerTimeZone"] = new["customerTimeZone"]
        if new.get("customerName") or new.get("customerEmail"):
            body["customers"] = [await self._customer(new, group=int(service.get("maximumAttendeesCount") or 1) > 1)]
        return body

    async def _customer(self, new: NewAppointment, *, group: bool) -> dict[str, Any]:
        """The appointment's customer. Graph: for a service taking several customers, each must be one of the
        business's customers (a customer with no valid id is left out), so one is looked up by email and, when
        Bookings does not know them yet, created (``POST …/customers``, bookingbusiness-post-customers)."""
        info: dict[str, Any] = {"@odata.type": "#microsoft.graph.bookingCustomerInformation",
                                "name": new.get("customerName", ""), "emailAddress": new.get("customerEmail", ""),
                                "phone": new.get("customerPhone", ""), "notes": new.get("customerNotes", "")}
        if new.get("customerTimeZone"):
            info["timeZone"] = new["customerTimeZone"]
        email = new.get("customerEmail", "").strip().lower()
        if email:
            customers = await self.bookings.customers()
            known = next((c for c in customers if str(c.get("emailAddress") or "").strip().lower() == email), None)
            if known is not None:
                info["customerId"] = known["id"]
                info["name"] = info["name"] or known.get("displayName") or ""
        if group and "customerId" not in info:
            if not email:
                raise ApiError("AppointmentRejected", business=self.mailbox,
                               reason="this service takes several customers, and Bookings books only customers it "
                                      "knows into such a service: give the customer's email")
            customer: dict[str, Any] = {"@odata.type": "#microsoft.graph.bookingCustomer",
                                        "displayName": info["name"] or email, "emailAddress": email}
            if info["phone"]:
                customer["phones"] = [{"number": info["phone"], "type": "mobile"}]
            created = await self.bookings.create_customer(customer)
            info["customerId"], info["name"] = created["id"], info["name"] or created.get("displayName") or ""
        return info

    async def cancel(self, appointment_id: str, reason: str, by: str) -> None:
        """Cancel with a reason (module docstring), recorded as given by ``by`` (the caller's UPN)."""
        await reconcile_state.put_cancel_reason(self.mailbox, appointment_id, reason, by)
        try:
            await self.bookings.cancel(appointment_id, reason)
        except GraphFailure:
            await reconcile_state.delete_cancel_reason(self.mailbox, appointment_id)  # not cancelled: it must not stick
            raise
        # The calendar notification will come; this hint makes the Cancelled event independent of it.
        await mailbox_changes.enqueue(mailbox_changes.full_resync(self.mailbox, "cancelled"))
        log.info("appointment cancelled with a reason", extra={"mailbox": self.mailbox})


def _retry_helps(mailbox: str, failure: GraphFailure) -> ApiError:
    seconds = max(1, int(failure.retry_after or RETRY_SECONDS))
    return ApiError("AppointmentNotBooked", headers={"Retry-After": str(seconds)}, business=mailbox, seconds=seconds,
                    dependency=f"Microsoft Graph {failure.graph_status or 'did not answer'} {failure.graph_code}")


def _taken(new: NewAppointment, end: datetime, listing: list[dict[str, Any]]) -> bool:
    """Whether another appointment overlaps ``new``'s time (``start`` .. ``end``) with one of its staff (or, none
    named, its service); one ending as it starts does not."""
    staff, start = set(new.get("staffMemberIds", [])), new["start"]
    for other in listing:
        other_start = parse_graph_datetime(other.get("startDateTime"))
        other_end = parse_graph_datetime(other.get("endDateTime"))
        if other_start is None or other_end is None or not (other_start < end and other_end > start):
            continue
        if (staff & set(other.get("staffMemberIds") or [])) if staff else other.get("serviceId") == new["serviceId"]:
            return True
    return False


def _request_hash(new: NewAppointment, caller: str) -> str:
    """What a booking asks for, as one value: the same request sent again has the same hash."""
    canonical = {name: value.isoformat() if isinstance(value, datetime) else value for name, value in new.items()}
    text = json.dumps({"caller": caller, **canonical}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _minutes(duration: Any) -> int:
    delta = parse_iso_duration(duration)
    return round(delta.total_seconds() / 60) if delta is not None else 0


def _graph_time(moment: datetime) -> dict[str, str]:
    return {"@odata.type": "#microsoft.graph.dateTimeTimeZone",
            "dateTime": moment.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat(), "timeZone": "UTC"}


def _listing_key(appointment: dict[str, Any]) -> tuple[datetime, str]:
    """The listing's order: start time, then id (the cursor is one such key)."""
    start = parse_graph_datetime(appointment.get("startDateTime")) or datetime.min.replace(tzinfo=UTC)
    return start, str(appointment.get("id") or "")


def _in_listing(appointment: dict[str, Any], start: datetime, end: datetime) -> bool:
    """Whether it overlaps [start, end): a window may begin before the range (a cursor at an earlier start)."""
    begins, ends = parse_graph_datetime(appointment.get("startDateTime")), parse_graph_datetime(
        appointment.get("endDateTime"))
    return begins is not None and ends is not None and begins < end and (ends > start or begins >= start)
