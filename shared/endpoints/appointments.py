"""The connector's actions on a business's appointments, services and staff.

Routes (under the ``api`` route prefix; the business is named by its SMTP address, as in the triggers):

- ``GET  v1/bookingBusinesses/{smtp}/appointments/{appointmentId}``  *Get an appointment* → ``AppointmentData``
- ``GET  v1/bookingBusinesses/{smtp}/appointments?startDateTime=&endDateTime=``  *List appointments*: a page
  ``{"value": [AppointmentData…], "nextLink"}``, as Power Automate's ``x-ms-pageable`` follows it
- ``POST v1/bookingBusinesses/{smtp}/appointments``  *Create an appointment* → 201 ``AppointmentData``
- ``GET  v1/bookingBusinesses/{smtp}/services``, ``…/staffMembers``  the lists (and the dropdowns' sources)

Who may: the caller must be on the business's staff list with a role that may read (every role that sees the
calendar) or book (administrators and schedulers): ``shared.endpoints.access.staff_mailbox``, asked of the
directory on every request. Cancelling is ``shared.endpoints.cancellation``. Graph is asked app-only
(``shared.services.appointments``); booking needs the write permissions ``ENABLE_CANCEL_WITH_REASON`` grants.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import azure.functions as func

from shared.adapters.settings import get_settings
from shared.contracts.errors import ApiError
from shared.contracts.graph_times import parse_graph_datetime
from shared.endpoints.access import READ, WRITE, staff_mailbox
from shared.endpoints.http import by_method, endpoint, json_object, json_response
from shared.services.appointments import Appointments, NewAppointment

log = logging.getLogger(__name__)

ROUTE_PREFIX = "api"
APPOINTMENTS_ROUTE = "v1/bookingBusinesses/{smtp}/appointments"
APPOINTMENT_ROUTE = "v1/bookingBusinesses/{smtp}/appointments/{appointmentId}"
SERVICES_ROUTE = "v1/bookingBusinesses/{smtp}/services"
STAFF_ROUTE = "v1/bookingBusinesses/{smtp}/staffMembers"

DEFAULT_RANGE = timedelta(days=7)
MAX_RANGE = timedelta(days=366)
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 50  # each appointment on a page is one Graph read by id
MAX_BODY_BYTES = 64 * 1024
MAX_TEXT_CHARS = 4000
_TEXTS = ("customerName", "customerEmail", "customerPhone", "customerNotes", "customerTimeZone", "serviceNotes",
          "additionalInformation")


def _appointment_id(raw: str | None) -> str:
    appointment_id = (raw or "").strip()
    if not appointment_id or len(appointment_id) > 512:
        raise ApiError("InvalidRequest", reason="no appointment id")
    return appointment_id


def _time(value: Any, name: str) -> datetime:
    """An ISO 8601 date and time; one without an offset is UTC."""
    moment = parse_graph_datetime(value) if isinstance(value, str) else None
    if moment is None:
        raise ApiError("InvalidRequest", reason=f"{name} must be a date and time in ISO 8601 "
                                                "(e.g. 2030-05-06T09:00:00Z)")
    return moment


def _int(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError("InvalidRequest", reason=f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def _ids(value: Any, name: str) -> list[str]:
    """One id or a list of ids (a dropdown gives one; an expression may give several)."""
    if value is None or value == "":
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and 0 < len(v.strip()) <= 100 for v in values):
        raise ApiError("InvalidRequest", reason=f"{name} must be an id or a list of ids")
    return list(dict.fromkeys(v.strip() for v in values))


def parse_new_appointment(body: bytes) -> NewAppointment:
    document = json_object(body, MAX_BODY_BYTES)
    service = document.get("serviceId")
    if not isinstance(service, str) or not service.strip():
        raise ApiError("InvalidRequest", reason="serviceId is required (pick the service from the list)")
    start = _time(document.get("startDateTime"), "startDateTime")
    end = _time(document["endDateTime"], "endDateTime") if document.get("endDateTime") else None
    if end is not None and end <= start:
        raise ApiError("InvalidRequest", reason="endDateTime must be later than startDateTime")
    new: NewAppointment = {"serviceId": service.strip(), "start": start, "end": end,
                           "staffMemberIds": _ids(document.get("staffMemberIds", document.get("staffMemberId")),
                                                  "staffMemberId")}
    for name in _TEXTS:
        value = document.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > MAX_TEXT_CHARS:
            raise ApiError("InvalidRequest", reason=f"{name} must be text of at most {MAX_TEXT_CHARS} characters")
        new[name] = value.strip()  # type: ignore[literal-required]
    return new


def _next_link(mailbox: str, start: datetime, end: datetime, top: int, skip: int) -> str:
    query = urlencode({"startDateTime": start.isoformat().replace("+00:00", "Z"),
                       "endDateTime": end.isoformat().replace("+00:00", "Z"), "top": top, "skip": skip})
    path = APPOINTMENTS_ROUTE.replace("{smtp}", quote(mailbox, safe="@"))
    return f"{get_settings().public_base_url}/{ROUTE_PREFIX}/{path}?{query}"


async def _list(req: func.HttpRequest) -> func.HttpResponse:
    mailbox, _ = await staff_mailbox(req, READ)
    params = req.params
    start = _time(params["startDateTime"], "startDateTime") if params.get("startDateTime") else \
        datetime.now(UTC).replace(microsecond=0)
    end = _time(params["endDateTime"], "endDateTime") if params.get("endDateTime") else start + DEFAULT_RANGE
    if end <= start or end - start > MAX_RANGE:
        raise ApiError("InvalidRequest", reason=f"endDateTime must be after startDateTime, at most "
                                                f"{MAX_RANGE.days} days later")
    top = _int(params.get("top"), "top", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    skip = _int(params.get("skip"), "skip", 0, 0, 100_000)
    items, more = await Appointments(mailbox).page(start, end, skip, top)
    body: dict[str, Any] = {"value": items}
    if more:
        body["nextLink"] = _next_link(mailbox, start, end, top, skip + top)
    return json_response(body)


async def _create(req: func.HttpRequest) -> func.HttpResponse:
    mailbox, caller = await staff_mailbox(req, WRITE)
    new = parse_new_appointment(req.get_body())
    created = await Appointments(mailbox).create(new)
    log.info("appointment %s booked on %s by %s", created["AppointmentId"], mailbox, caller.oid,
             extra={"mailbox": mailbox})
    return json_response(created, 201)


@endpoint
async def appointments(req: func.HttpRequest) -> func.HttpResponse:
    """``GET`` lists appointments, ``POST`` books one (route ``APPOINTMENTS_ROUTE``)."""
    return await by_method(req, {"GET": _list, "POST": _create})


@endpoint
async def get_appointment(req: func.HttpRequest) -> func.HttpResponse:
    mailbox, _ = await staff_mailbox(req, READ)
    appointment_id = _appointment_id(req.route_params.get("appointmentId"))
    return json_response(await Appointments(mailbox).get(appointment_id))


@endpoint
async def list_services(req: func.HttpRequest) -> func.HttpResponse:
    mailbox, _ = await staff_mailbox(req, READ)
    return json_response({"value": await Appointments(mailbox).services()})


@endpoint
async def list_staff(req: func.HttpRequest) -> func.HttpResponse:
    mailbox, _ = await staff_mailbox(req, READ)
    return json_response({"value": await Appointments(mailbox).staff()})
