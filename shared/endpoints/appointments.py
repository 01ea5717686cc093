"""The connector's actions on a business's appointments, services and staff.

Routes (under the ``api`` route prefix; the business is named by its SMTP address, as in the triggers):

- ``GET  v1/bookingBusinesses/{smtp}/appointments/{appointmentId}``  *Get an appointment* → ``AppointmentData``
- ``GET  v1/bookingBusinesses/{smtp}/appointments?startDateTime=&endDateTime=&top=``  *List appointments*: a
  page ``{"value": [AppointmentData…], "nextLink"}``, as Power Automate's ``x-ms-pageable`` follows it; the
  nextLink repeats the query and adds ``after``, an opaque cursor (``encode_cursor``; the paging itself is
  ``shared.services.appointments``)
- ``POST v1/bookingBusinesses/{smtp}/appointments``  *Create an appointment* → 201 ``AppointmentData``, booked
  once however often the request is sent (``Idempotency-Key`` header: ``shared.services.appointments``)
- ``GET  v1/bookingBusinesses/{smtp}/services``, ``…/staffMembers``  the lists (and the dropdowns' sources)
- ``GET  v1/bookingBusinessesUserAsStaff``  the actions' business dropdown: ``{"mailboxes": [{"displayName",
  "email"}]}`` of every business where the caller has a role that may use them (administrators, schedulers,
  viewers, team members; guests may use none, so their businesses are not offered), from the shared index the
  triggers' dropdown reads (``shared.services.bookings_directory``: never used to admit anyone)

Who may: the caller must be on the business's staff list with a role that may read (every role that sees the
calendar) or book (administrators and schedulers): ``shared.endpoints.access.staff_mailbox``, asked of the
directory on every request. Cancelling is ``shared.endpoints.cancellation``. Graph is asked app-only
(``shared.services.appointments``); booking needs the write permissions ``ENABLE_CANCEL_WITH_REASON`` grants.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import azure.functions as func

from shared.adapters.auth import authenticate
from shared.adapters.settings import get_settings
from shared.contracts.errors import ApiError
from shared.contracts.graph_times import parse_graph_datetime
from shared.endpoints.access import READ, WRITE, is_graph_id, parse_appointment_id, staff_mailbox
from shared.endpoints.http import by_method, endpoint, json_object, json_response, text_field
from shared.services import bookings_directory
from shared.services.appointments import (
    MAX_BOOKING_LENGTH,
    MAX_WINDOW,
    MIN_WINDOW,
    Appointments,
    ListingCursor,
    NewAppointment,
)

log = logging.getLogger(__name__)

ROUTE_PREFIX = "api"
APPOINTMENTS_ROUTE = "v1/bookingBusinesses/{smtp}/appointments"
APPOINTMENT_ROUTE = "v1/bookingBusinesses/{smtp}/appointments/{appointmentId}"
SERVICES_ROUTE = "v1/bookingBusinesses/{smtp}/services"
STAFF_ROUTE = "v1/bookingBusinesses/{smtp}/staffMembers"
BUSINESSES_AS_STAFF_ROUTE = "v1/bookingBusinessesUserAsStaff"

DEFAULT_RANGE = timedelta(days=7)
MAX_RANGE = timedelta(days=366)
LISTING_YEARS = (1900, 2999)  # a listing's start and end lie within these years (Python's dates end at 9999)
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 50  # each appointment on a page is one Graph read by id
MAX_CURSOR_CHARS, CURSOR_DIGEST_CHARS = 1024, 32
MAX_BODY_BYTES = 64 * 1024
# What a booking may be, checked before Graph is asked: one in year 1 or 100 years long is nobody's booking.
BOOKING_PAST = timedelta(days=1)  # the start at most a day ago (a flow catching up on yesterday's visit)
BOOKING_AHEAD = timedelta(days=730)  # at most two years ahead
MAX_DURATION = MAX_BOOKING_LENGTH
MAX_TEXT_CHARS = 4000
TEXT_LIMITS = {"customerName": 255, "customerEmail": 254, "customerPhone": 64, "customerTimeZone": 64,
               "customerNotes": MAX_TEXT_CHARS, "serviceNotes": MAX_TEXT_CHARS,
               "additionalInformation": MAX_TEXT_CHARS}
_MULTILINE = frozenset({"customerNotes", "serviceNotes", "additionalInformation"})
IDEMPOTENCY_HEADER, MAX_KEY_CHARS = "idempotency-key", 255


def _time(value: Any, name: str) -> datetime:
    """An ISO 8601 date and time; one without an offset is UTC."""
    moment = parse_graph_datetime(value) if isinstance(value, str) else None
    if moment is None:
        raise ApiError("InvalidRequest", reason=f"{name} must be a date and time in ISO 8601 "
                                                "(e.g. 2030-05-06T09:00:00Z)")
    return moment


def _listing_time(value: Any, name: str) -> datetime:
    moment = _time(value, name)
    if not LISTING_YEARS[0] <= moment.year <= LISTING_YEARS[1]:
        raise ApiError("InvalidRequest", reason=f"{name} must lie in the years {LISTING_YEARS[0]} to "
                                                f"{LISTING_YEARS[1]}")
    return moment


def _int(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    # ASCII digits only: str.isdigit() is also true of "²" and "١", which int() then refuses or reads.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not low <= int(raw) <= high:
        raise ApiError("InvalidRequest", reason=f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def _ids(value: Any, name: str) -> list[str]:
    """One id or a list of ids (a dropdown gives one; an expression may give several), each as Graph issues ids."""
    if value is None or value == "":
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values) or \
            not all(is_graph_id(v.strip(), 100) for v in values):
        raise ApiError("InvalidRequest", reason=f"{name} must be an id or a list of ids (pick them from the list)")
    return list(dict.fromkeys(v.strip() for v in values))


def _booking_times(document: dict[str, Any], now: datetime) -> tuple[datetime, datetime | None]:
    start = _time(document.get("startDateTime"), "startDateTime")
    if not now - BOOKING_PAST <= start <= now + BOOKING_AHEAD:
        raise ApiError("InvalidRequest", reason=f"startDateTime must lie between {BOOKING_PAST.days} day ago and "
                                                f"{BOOKING_AHEAD.days} days ahead")
    end = _time(document["endDateTime"], "endDateTime") if document.get("endDateTime") else None
    if end is not None and not start < end <= start + MAX_DURATION:
        raise ApiError("InvalidRequest", reason="endDateTime must be later than startDateTime, by at most "
                                                f"{int(MAX_DURATION.total_seconds() // 3600)} hours")
    return start, end


def parse_new_appointment(body: bytes, now: datetime | None = None) -> NewAppointment:
    """The booking a *Create an appointment* body asks for, within the bounds above; ``InvalidRequest`` naming
    the field otherwise."""
    document = json_object(body, MAX_BODY_BYTES)
    service = document.get("serviceId")
    if not isinstance(service, str) or not service.strip():
        raise ApiError("InvalidRequest", reason="serviceId is required (pick the service from the list)")
    if not is_graph_id(service.strip(), 100):
        raise ApiError("InvalidRequest", reason="serviceId is not a service id (pick the service from the list)")
    start, end = _booking_times(document, now or datetime.now(UTC))
    new: NewAppointment = {"serviceId": service.strip(), "start": start, "end": end,
                           "staffMemberIds": _ids(document.get("staffMemberIds", document.get("staffMemberId")),
                                                  "staffMemberId")}
    for name, limit in TEXT_LIMITS.items():
        value = document.get(name)
        if value is not None:
            new[name] = text_field(value, name, limit, multiline=name in _MULTILINE)  # type: ignore[literal-required]
    return new


def _cursor_digest(mailbox: str, start: datetime, end: datetime, top: int, fields: list[Any]) -> str:
    text = json.dumps([mailbox, start.isoformat(), end.isoformat(), top, *fields], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:CURSOR_DIGEST_CHARS]


def encode_cursor(mailbox: str, start: datetime, end: datetime, top: int, cursor: ListingCursor) -> str:
    """The ``after`` of a nextLink: opaque to callers, bound to the listing it continues (business, range, page
    size) by a digest, so a cursor moved to another listing or edited is refused, not followed."""
    fields = [cursor.start.isoformat(), cursor.after_id, int(cursor.window.total_seconds())]
    raw = json.dumps([*fields, _cursor_digest(mailbox, start, end, top, fields)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(raw: str, mailbox: str, start: datetime, end: datetime, top: int) -> ListingCursor:
    """The cursor ``encode_cursor`` wrote for this listing; ``InvalidRequest`` for anything else. Nothing in it
    grants more than the query does (the caller's role is checked on every page): the digest is a check that the
    link was followed as given, not a secret."""
    refused = ApiError("InvalidRequest", reason="after must be the value of the previous page's nextLink, unchanged")
    if not (0 < len(raw) <= MAX_CURSOR_CHARS) or not raw.isascii():
        raise refused
    try:
        fields = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
        raise refused from None
    if not (isinstance(fields, list) and len(fields) == 4 and all(isinstance(f, str) for f in fields[:2])
            and type(fields[2]) is int and isinstance(fields[3], str)) or \
            fields[3] != _cursor_digest(mailbox, start, end, top, fields[:3]):
        raise refused
    moment = parse_graph_datetime(fields[0])
    if moment is None or not LISTING_YEARS[0] <= moment.year <= LISTING_YEARS[1] or moment > end or \
            not MIN_WINDOW.total_seconds() <= fields[2] <= MAX_WINDOW.total_seconds() or \
            (fields[1] and not is_graph_id(fields[1])):
        raise refused
    return ListingCursor(moment, fields[1], timedelta(seconds=fields[2]))


def _next_link(mailbox: str, start: datetime, end: datetime, top: int, cursor: ListingCursor) -> str:
    query = urlencode({"startDateTime": start.isoformat().replace("+00:00", "Z"),
                       "endDateTime": end.isoformat().replace("+00:00", "Z"), "top": top,
                       "after": encode_cursor(mailbox, start, end, top, cursor)})
    path = APPOINTMENTS_ROUTE.replace("{smtp}", quote(mailbox, safe="@"))
    return f"{get_settings().public_base_url}/{ROUTE_PREFIX}/{path}?{query}"


async def _list(req: func.HttpRequest) -> func.HttpResponse:
    mailbox, _ = await staff_mailbox(req, READ)
    params = req.params
    start = _listing_time(params["startDateTime"], "startDateTime") if params.get("startDateTime") else \
        datetime.now(UTC).replace(microsecond=0)
    end = _listing_time(params["endDateTime"], "endDateTime") if params.get("endDateTime") else \
        start + DEFAULT_RANGE
    if end <= start or end - start > MAX_RANGE:
        raise ApiError("InvalidRequest", reason=f"endDateTime must be after startDateTime, at most "
                                                f"{MAX_RANGE.days} days later")
    top = _int(params.get("top"), "top", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    after = decode_cursor(params["after"], mailbox, start, end, top) if params.get("after") else None
    items, following = await Appointments(mailbox).page(start, end, top, after)
    body: dict[str, Any] = {"value": items}
    if following is not None:
        body["nextLink"] = _next_link(mailbox, start, end, top, following)
    return json_response(body)


def idempotency_key(raw: str | None) -> str | None:
    """The ``Idempotency-Key`` header (the IETF draft's): 1 to 255 visible ASCII characters, or None."""
    if raw is None:
        return None
    key = raw.strip()
    if not key:
        return None
    if len(key) > MAX_KEY_CHARS or not all(" " < c < "\x7f" for c in key):
        raise ApiError("InvalidRequest", reason=f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII "
                                                "characters")
    return key


async def _create(req: func.HttpRequest) -> func.HttpResponse:
    mailbox, caller = await staff_mailbox(req, WRITE)
    new = parse_new_appointment(req.get_body())
    key = idempotency_key(req.headers.get(IDEMPOTENCY_HEADER))
    created = await Appointments(mailbox).book(new, caller=caller.oid, key=key)
    log.info("appointment %s booked on %s by %s", created["AppointmentId"], mailbox, caller.oid,
             extra={"mailbox": mailbox})
    return json_response(created, 201)


@endpoint
async def appointments(req: func.HttpRequest) -> func.HttpResponse:
    """``GET`` lists appointments, ``POST`` books one (route ``APPOINTMENTS_ROUTE``)."""
    return await by_method(req, {"GET": _list, "POST": _create})


@endpoint
async def get_appointment(req: func.HttpRequest) -> func.HttpResponse:
    appointment_id = parse_appointment_id(req.route_params.get("appointmentId"))
    mailbox, _ = await staff_mailbox(req, READ)
    return json_response(await Appointments(mailbox).get(appointment_id))


@endpoint
async def list_services(req: func.HttpRequest) -> func.HttpResponse:
    mailbox, _ = await staff_mailbox(req, READ)
    return json_response({"value": await Appointments(mailbox).services()})


@endpoint
async def list_staff(req: func.HttpRequest) -> func.HttpResponse:
    mailbox, _ = await staff_mailbox(req, READ)
    return json_response({"value": await Appointments(mailbox).staff()})


@endpoint
async def businesses_as_staff(req: func.HttpRequest) -> func.HttpResponse:
    """``{"mailboxes": [{"displayName", "email"}]}``: fills the actions' business dropdown."""
    caller = await authenticate(req.headers.get("authorization"))
    businesses = await bookings_directory.get_directory().businesses_staffed_by(caller)
    mailboxes = sorted(({"displayName": b["displayName"], "email": b["email"].lower()} for b in businesses),
                       key=lambda b: (b["displayName"].lower(), b["email"]))
    return json_response({"mailboxes": mailboxes})
