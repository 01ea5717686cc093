"""A business's appointments, services and staff as the connector's actions show them, read from and written to
Microsoft Graph (app-only, ``shared.adapters.graph``).

An appointment is always read by id before it is shown (``GET …/appointments/{id}``: listings omit customers
and notes), and mapped by ``shared.contracts.appointment_data`` exactly as the triggers' payloads are, so an
action's ``AppointmentData`` and a trigger's are the same thing. The business's services, staff and custom
questions that the mapping names are kept ``LOOKUP_CACHE_SECONDS`` per business.

Graph's answers become catalogue errors here: 404 → ``AppointmentNotFound`` / ``BookingBusinessNotFound``,
401/403 → ``GraphPermissionMissing`` (the app's own grant, which a flow maker cannot fix but an administrator
can), 400 on a write → ``AppointmentRejected`` with Graph's reason, throttling or no answer →
``DependencyUnavailable`` with Graph's ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from shared.adapters.graph import Graph, GraphError, get_graph
from shared.contracts.appointment_data import AppointmentData, parse_iso_duration, to_appointment_data
from shared.contracts.errors import ApiError

LOOKUP_CACHE_SECONDS = 60.0
# Graph (Outlook) serves at most 4 concurrent requests per app and mailbox.
MAILBOX_CONCURRENCY = 4
_lookups: dict[str, tuple[dict[str, list[dict[str, Any]]], float]] = {}


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


def forget_cached() -> None:
    """Drop the cached services, staff and questions (tests that change the business)."""
    _lookups.clear()


def _graph_error(error: GraphError, mailbox: str, *, appointment: bool = False, write: bool = False) -> ApiError:
    if error.status == 404:
        return ApiError("AppointmentNotFound" if appointment else "BookingBusinessNotFound", business=mailbox)
    if error.status in (401, 403):
        return ApiError("GraphPermissionMissing", business=mailbox, graph_code=error.code)
    if write and error.status == 400:
        return ApiError("AppointmentRejected", business=mailbox, reason=error.message[:500])
    headers = {"Retry-After": str(int(error.retry_after))} if error.retry_after else None
    return ApiError("DependencyUnavailable", headers=headers,
                    dependency=f"Microsoft Graph ({error.status} {error.code})")


class Appointments:
    """One business's appointments, services and staff."""

    def __init__(self, mailbox: str, graph: Graph | None = None) -> None:
        self.mailbox = mailbox
        self.graph = graph or get_graph()
        self._limit = asyncio.Semaphore(MAILBOX_CONCURRENCY)

    async def lookups(self) -> dict[str, list[dict[str, Any]]]:
        """Services, staff and custom questions of the business (what payloads name)."""
        cached = _lookups.get(self.mailbox)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        try:
            services, staff, questions = await asyncio.gather(
                self.graph.list_services(self.mailbox), self.graph.list_staff(self.mailbox),
                self.graph.list_custom_questions(self.mailbox))
        except GraphError as error:
            raise _graph_error(error, self.mailbox) from None
        found = {"services": services, "staff": staff, "questions": questions}
        _lookups[self.mailbox] = (found, time.monotonic() + LOOKUP_CACHE_SECONDS)
        return found

    async def _map(self, appointment: dict[str, Any]) -> AppointmentData:
        lookups = await self.lookups()
        return to_appointment_data(appointment, services=lookups["services"], staff=lookups["staff"],
                                   questions=lookups["questions"])

    async def _read(self, appointment_id: str) -> dict[str, Any] | None:
        async with self._limit:
            try:
                return await self.graph.get_appointment(self.mailbox, appointment_id)
            except GraphError as error:
                # Graph answers 400 (ErrorInvalidIdMalformed) for an id it cannot parse: no such appointment either.
                if error.status in (400, 404):
                    return None
                raise _graph_error(error, self.mailbox, appointment=True) from None

    async def get(self, appointment_id: str) -> AppointmentData:
        found = await self._read(appointment_id)
        if found is None:
            raise ApiError("AppointmentNotFound", business=self.mailbox)
        return await self._map(found)

    async def page(self, start: datetime, end: datetime, skip: int, top: int) -> tuple[list[AppointmentData], bool]:
        """Appointments overlapping [start, end), ordered by start, from the ``skip``-th, at most ``top``; and
        whether more follow. Each is read by id (the listing lacks customers and notes)."""
        try:
            listing = await self.graph.calendar_view(self.mailbox, start, end)
        except GraphError as error:
            raise _graph_error(error, self.mailbox) from None
        ids = list(dict.fromkeys(str(item.get("id")) for item in listing if item.get("id")))
        chosen = ids[skip:skip + top]
        fulls = await asyncio.gather(*(self._read(appointment_id) for appointment_id in chosen))
        # One cancelled between the listing and its read is simply not shown.
        items = [await self._map(full) for full in fulls if full is not None]
        items.sort(key=lambda a: (a["StartTime"], a["AppointmentId"]))
        return items, skip + top < len(ids)

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

    async def create(self, new: NewAppointment) -> AppointmentData:
        """Book an appointment (``POST …/appointments``, app-only), as Graph's create page documents it:
        https://learn.microsoft.com/en-us/graph/api/bookingbusiness-post-appointments?view=graph-rest-1.0"""
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
        start = new["start"]
        end = new.get("end") or start + (parse_iso_duration(service.get("defaultDuration")) or timedelta(minutes=30))
        body: dict[str, Any] = {
            "@odata.type": "#microsoft.graph.bookingAppointment",
            "serviceId": new["serviceId"],
            "startDateTime": _graph_time(start), "endDateTime": _graph_time(end),
            "staffMemberIds": list(new.get("staffMemberIds", [])),
            "serviceNotes": new.get("serviceNotes", ""),
            "additionalInformation": new.get("additionalInformation", ""),
        }
        if new.get("customerTimeZone"):
            body["customerTimeZone"] = new["customerTimeZone"]
        if new.get("customerName") or new.get("customerEmail"):
            body["customers"] = [await self._customer(new, group=int(service.get("maximumAttendeesCount") or 1) > 1)]
        try:
            created = await self.graph.create_appointment(self.mailbox, body)
        except GraphError as error:
            raise _graph_error(error, self.mailbox, write=True) from None
        # The create answer is the whole appointment; reading it again by id costs a call for nothing.
        return await self._map(created or {})

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
            try:
                customers = await self.graph.list_customers(self.mailbox)
            except GraphError as error:
                raise _graph_error(error, self.mailbox) from None
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
            try:
                created = await self.graph.create_customer(self.mailbox, customer)
            except GraphError as error:
                raise _graph_error(error, self.mailbox, write=True) from None
            info["customerId"], info["name"] = created["id"], info["name"] or created.get("displayName") or ""
        return info


def _minutes(duration: Any) -> int:
    delta = parse_iso_duration(duration)
    return round(delta.total_seconds() / 60) if delta is not None else 0


def _graph_time(moment: datetime) -> dict[str, str]:
    return {"@odata.type": "#microsoft.graph.dateTimeTimeZone",
            "dateTime": moment.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat(), "timeZone": "UTC"}
