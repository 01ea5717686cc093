"""Mailbox calendars: each Bookings appointment is mirrored as an event in the business mailbox, and
every create/update/delete of an event is reported to the notifier (that is what Graph change
notifications watch: ``/users/{id}/events``). Also serves ``/v1.0/users/{id|upn}`` and its events.

Event ids are Exchange-style and deliberately differ from appointment ids.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import odata
from .errors import GraphError
from .state import graph_timestamp, outlook_id

if TYPE_CHECKING:
    from .app import Sandbox
    from .state import Business


def _event_time(bookings_time: dict[str, Any]) -> dict[str, str]:
    # Outlook writes dateTimeTimeZone without the trailing "Z" that Bookings adds.
    return {"dateTime": bookings_time["dateTime"].rstrip("Z"), "timeZone": bookings_time["timeZone"]}


def event_from_appointment(
    business: Business, appt: dict[str, Any], event_id: str, created: str | None
) -> dict[str, Any]:
    smtp = business.smtp
    attendees = [
        {
            "type": "required",
            "status": {"response": "none", "time": "0001-01-01T00:00:00Z"},
            "emailAddress": {"name": c.get("name"), "address": c.get("emailAddress")},
        }
        for c in appt.get("customers", [])
    ]
    for staff_id in appt.get("staffMemberIds", []):
        staff = business.staff.get(staff_id)
        if staff:
            attendees.append(
                {
                    "type": "required",
                    "status": {"response": "accepted", "time": "0001-01-01T00:00:00Z"},
                    "emailAddress": {"name": staff["displayName"], "address": staff["emailAddress"]},
                }
            )
    change_key = uuid.uuid4().hex[:24]
    now = graph_timestamp()
    online = bool(appt.get("isLocationOnline"))
    return {
        "@odata.etag": f'W/"{change_key}"',
        "id": event_id,
        "createdDateTime": created or now,
        "lastModifiedDateTime": now,
        "changeKey": change_key,
        "categories": [],
        "originalStartTimeZone": "UTC",
        "originalEndTimeZone": "UTC",
        "iCalUId": "040000008200E00074C5B7101A82E008" + uuid.uuid5(uuid.NAMESPACE_URL, event_id).hex,
        "subject": appt.get("serviceName") or "Booking",
        "bodyPreview": "",
        "body": {"contentType": "html", "content": ""},
        "importance": "normal",
        "sensitivity": "normal",
        "isAllDay": False,
        "isCancelled": False,
        "isOrganizer": True,
        "showAs": "busy",
        "type": "singleInstance",
        "isOnlineMeeting": online,
        "onlineMeetingProvider": "teamsForBusiness" if online else "unknown",
        "onlineMeeting": {"joinUrl": appt.get("joinWebUrl")} if online else None,
        "start": _event_time(appt["startDateTime"]),
        "end": _event_time(appt["endDateTime"]),
        "location": {"displayName": (appt.get("serviceLocation") or {}).get("displayName") or ""},
        "attendees": attendees,
        "organizer": {"emailAddress": {"name": business.data.get("displayName"), "address": smtp}},
    }


class Calendars:
    """Event writes that notify subscribers."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def _calendar(self, mailbox: str) -> dict[str, dict[str, Any]]:
        return self.sandbox.state.calendars.setdefault(mailbox.lower(), {})

    def mirror_appointment(self, business: Business, appt: dict[str, Any]) -> str:
        """Create or update the appointment's event; returns the event id."""
        cal = self._calendar(business.smtp)
        event_id = business.event_of.get(appt["id"])
        existing = cal.get(event_id) if event_id else None
        event_id = event_id or outlook_id()
        business.event_of[appt["id"]] = event_id
        cal[event_id] = event_from_appointment(
            business, appt, event_id, existing["createdDateTime"] if existing else None
        )
        self.sandbox.notifier.event_changed(business.smtp, event_id, "updated" if existing else "created")
        return event_id

    def remove_appointment(self, business: Business, appointment_id: str) -> None:
        event_id = business.event_of.pop(appointment_id, None)
        if event_id:
            self.delete_event(business.smtp, event_id)

    def add_plain_event(self, mailbox: str, subject: str, start: str, end: str) -> dict[str, Any]:
        """An event that is not a booking (e.g. a staff meeting): it notifies like any other."""
        event_id = outlook_id()
        now = graph_timestamp()
        event = {
            "@odata.etag": 'W/"0"',
            "id": event_id,
            "createdDateTime": now,
            "lastModifiedDateTime": now,
            "subject": subject,
            "isCancelled": False,
            "type": "singleInstance",
            "start": {"dateTime": start, "timeZone": "UTC"},
            "end": {"dateTime": end, "timeZone": "UTC"},
            "attendees": [],
            "organizer": {"emailAddress": {"address": mailbox}},
        }
        self._calendar(mailbox)[event_id] = event
        self.sandbox.notifier.event_changed(mailbox, event_id, "created")
        return event

    def delete_event(self, mailbox: str, event_id: str) -> bool:
        if self._calendar(mailbox).pop(event_id, None) is None:
            return False
        self.sandbox.notifier.event_changed(mailbox, event_id, "deleted")
        return True


def _utc(value: str) -> datetime:
    """An ISO date-time (offset, ``Z`` or none = UTC, as events are stored) as an aware UTC datetime."""
    try:
        dt = datetime.fromisoformat(value.replace(" ", "+"))
    except ValueError as exc:
        raise GraphError(400, "ErrorInvalidParameter", f"The value '{value}' is not a valid date-time.") from exc
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def _user(request: Request) -> Any:
    key = request.path_params["user"]
    user = request.app.state.sandbox.state.find_user(key)
    if user is None:
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.",
        )
    return user


def _user_body(request: Request, user: Any) -> dict[str, Any]:
    """Graph's default properties, or exactly those ``$select`` names (proxyAddresses only that way)."""
    select = request.query_params.get("$select")
    if not select:
        return user.to_graph()
    everything = user.selectable()
    return {name: everything.get(name) for name in (s.strip() for s in select.split(",")) if name in everything}


async def get_user(request: Request) -> Response:
    user = _user(request)
    return JSONResponse({"@odata.context": odata.context(request, "users/$entity"), **_user_body(request, user)})


async def get_me(request: Request) -> Response:
    """``GET /me``: the signed-in user of a delegated token (an app-only token has no "me")."""
    claims = request.scope.get("sandbox.app") or {}
    if claims.get("idtyp") == "app" or not claims.get("oid"):
        raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
    user = request.app.state.sandbox.state.find_user(str(claims["oid"]))
    if user is None:
        raise GraphError(404, "Request_ResourceNotFound", f"Resource '{claims['oid']}' does not exist.")
    return JSONResponse({"@odata.context": odata.context(request, "users/$entity"), **_user_body(request, user)})


async def list_events(request: Request) -> Response:
    user = _user(request)
    cal = request.app.state.sandbox.state.calendars.get(user.user_principal_name.lower(), {})
    items = sorted(cal.values(), key=lambda e: e["start"]["dateTime"])
    return JSONResponse(
        odata.page(request, items, odata.context(request, f"users('{user.user_principal_name}')/events"))
    )


async def get_event(request: Request) -> Response:
    user = _user(request)
    cal = request.app.state.sandbox.state.calendars.get(user.user_principal_name.lower(), {})
    event = cal.get(request.path_params["event_id"])
    if event is None:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    ctx = odata.context(request, f"users('{user.user_principal_name}')/events/$entity")
    return JSONResponse({"@odata.context": ctx, **event})


async def calendar_view(request: Request) -> Response:
    user = _user(request)
    start, end = request.query_params.get("startDateTime"), request.query_params.get("endDateTime")
    if not start or not end:
        raise GraphError(
            400,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters StartDateTime and "
            "EndDateTime.",
        )
    cal = request.app.state.sandbox.state.calendars.get(user.user_principal_name.lower(), {})
    window_start, window_end = _utc(start), _utc(end)
    items = sorted(
        (
            ev
            for ev in cal.values()
            if _utc(ev["start"]["dateTime"]) < window_end and _utc(ev["end"]["dateTime"]) > window_start
        ),
        key=lambda ev: ev["start"]["dateTime"],
    )
    return JSONResponse(
        odata.page(request, items, odata.context(request, f"users('{user.user_principal_name}')/calendarView"))
    )


routes = [
    Route("/v1.0/me", get_me, methods=["GET"]),
    Route("/v1.0/users/{user}", get_user, methods=["GET"]),
    Route("/v1.0/users/{user}/events", list_events, methods=["GET"]),
    Route("/v1.0/users/{user}/calendar/events", list_events, methods=["GET"]),
    Route("/v1.0/users/{user}/events/{event_id}", get_event, methods=["GET"]),
    Route("/v1.0/users/{user}/calendar/events/{event_id}", get_event, methods=["GET"]),
    Route("/v1.0/users/{user}/calendarView", calendar_view, methods=["GET"]),
]
