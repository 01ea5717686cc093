"""A business's appointments, services and staff as the connector's actions show them, and the cancellation
with a reason.

Graph is asked through ``shared.services.bookings`` (app-only), which also turns Graph's failures into catalogue
errors. An appointment is always read by id before it is shown (listings omit customers and notes), and mapped
by ``shared.contracts.appointment_data`` exactly as the triggers' payloads are, so an action's
``AppointmentData`` and a trigger's are the same thing.

Cancelling with a reason: Graph has no cancellation-reason property (a cancelled appointment simply disappears),
so the reason is recorded in the mailbox partition (``shared.records.reconcile_state``) *before* Graph is asked
to cancel, where the reconcile worker finds it when the appointment vanishes and puts it in the Cancelled event;
a full-resync hint follows, so that event does not wait for Graph's notification.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from shared.contracts.appointment_data import AppointmentData, to_appointment_data
from shared.contracts.errors import ApiError
from shared.contracts.graph_times import parse_iso_duration
from shared.messages import mailbox_changes
from shared.records import reconcile_state
from shared.services.bookings import Bookings, Lookups
from shared.services.graph_failures import GraphFailure

log = logging.getLogger(__name__)


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
        self.bookings = bookings or Bookings(mailbox)

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

    async def page(self, start: datetime, end: datetime, skip: int, top: int) -> tuple[list[AppointmentData], bool]:
        """Appointments overlapping [start, end), ordered by start, from the ``skip``-th, at most ``top``; and
        whether more follow. Each is read by id (the listing lacks customers and notes)."""
        listing, _ = await self.bookings.calendar_view(start, end)
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
        # The create answer is the whole appointment; reading it again by id costs a call for nothing.
        return await self._map(await self.bookings.create_appointment(body))

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


def _minutes(duration: Any) -> int:
    delta = parse_iso_duration(duration)
    return round(delta.total_seconds() / 60) if delta is not None else 0


def _graph_time(moment: datetime) -> dict[str, str]:
    return {"@odata.type": "#microsoft.graph.dateTimeTimeZone",
            "dateTime": moment.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat(), "timeZone": "UTC"}
