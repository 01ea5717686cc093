"""The permissions Microsoft Graph documents for every route the sandbox serves, and the check of a token
against them (``graph_sandbox.gate`` runs it before any handler).

One row per route: the **application** permissions and the **delegated** permissions its v1.0 API page
lists (least privileged first, then the higher privileged ones, as the page orders them), the page, and a
note where pages or their revisions disagree. An app token is checked by its ``roles``, a delegated token by
its ``scp`` (space-separated; a delegated token has no ``roles``). A token holding none of a route's
permissions gets the route's 403 (``ErrorAccessDenied`` for Bookings and calendars, as Exchange answers);
an empty tuple means "Not supported" for that kind of token.

Where Microsoft's documentation disagrees with itself the sandbox follows the stricter reading by default and
has a switch for the other (``Readings``, ``POST /_sandbox/permissions``):

* ``GET /solutions/bookingBusinesses`` app-only: revisions of the page and the permissions include say
  "Application: Not supported" (a Microsoft Q&A answer confirms app-only calls fail); the page as published
  now lists ``Bookings.Read.All``. Refused by default; ``appCanListBusinesses`` allows it.

The rows with a ``call`` are the requests the app makes (``shared/adapters/graph.py``; ``me`` and
``users/{oid}`` are the two ways to read the caller's addresses) and ``made_with`` how; infra/README.md
("Microsoft Graph permissions") shows them, and tests/infra checks that table and the grants in
infra/entra/graph.bicep against these rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DOCS = "https://learn.microsoft.com/en-us/graph/api/"
ACCESS_DENIED = (403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
DIRECTORY_DENIED = (403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
ME_NEEDS_A_USER = (400, "BadRequest", "/me request is only valid with delegated authentication flow.")


def _subscription_denied(operation: str) -> tuple[int, str, str]:
    # What Graph answers for an Outlook subscription without the resource's read permission.
    return (403, "ExtensionError", f"Operation: {operation}; Exception: [Status Code: Forbidden; Reason: Access is "
            "denied. Check credentials and try again.]")


@dataclass(frozen=True)
class Readings:
    """Which reading of Microsoft's documentation the sandbox follows where pages disagree."""

    app_can_list_businesses: bool = False


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # the path after /v1.0; {name} is one segment
    application: tuple[str, ...]  # accepted app roles, least privileged first; () = not supported
    delegated: tuple[str, ...]  # accepted delegated scopes on any object
    doc: str  # the v1.0 API page
    call: str = ""  # the shared/adapters/graph.py request this is ("" = the app does not make it)
    made_with: str = "application"  # how the app makes it: "application" (app-only) or "delegated"
    delegated_self: tuple[str, ...] = ()  # delegated scopes that reach only the signed-in user's own object
    denied: tuple[int, str, str] = ACCESS_DENIED
    denied_app: tuple[int, str, str] | None = None  # when app tokens are refused otherwise than ``denied``
    # Accepted app roles under the other reading, when ``Readings.<reading>`` is on.
    reading: str = ""
    application_if_reading: tuple[str, ...] = ()
    note: str = ""
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template))
        object.__setattr__(self, "pattern", re.compile(f"^/v1\\.0{regex}/?$", re.IGNORECASE))

    def accepted_application(self, readings: Readings) -> tuple[str, ...]:
        if self.reading and getattr(readings, self.reading):
            return self.application_if_reading
        return self.application

    @property
    def url(self) -> str:
        if self.doc.startswith("https://"):  # a concept page, not an API reference page
            return self.doc
        return f"{DOCS}{self.doc}?view=graph-rest-1.0"


# Bookings: the sets the v1.0 pages list.
_READ_DELEGATED = ("Bookings.Read.All", "Bookings.Manage.All", "Bookings.ReadWrite.All",
                   "BookingsAppointment.ReadWrite.All")
# "Least privileged: BookingsAppointment.ReadWrite.All; higher: Bookings.Manage.All, Bookings.Read.All,
# Bookings.ReadWrite.All" on the business, staff, service, customer and appointment reads.
_READ_APPLICATION = ("BookingsAppointment.ReadWrite.All", "Bookings.Manage.All", "Bookings.Read.All",
                     "Bookings.ReadWrite.All")
_WRITE = ("BookingsAppointment.ReadWrite.All", "Bookings.Manage.All", "Bookings.ReadWrite.All")
_QUESTIONS_APPLICATION = ("Bookings.Read.All", "Bookings.Manage.All", "Bookings.ReadWrite.All")
# Calendars: user-list-events, event-get, user-list-calendarview. Delegated scopes reach the signed-in user's
# own mailbox (another user's needs a shared calendar, which the sandbox does not model).
_CALENDAR = ("Calendars.ReadBasic", "Calendars.Read", "Calendars.ReadWrite")
# Subscriptions on /users/{id}/events: "Calendars.Read" for creating and for managing (getting, updating,
# deleting) them; subscriptions refuse write permissions where read suffices.
_SUBSCRIPTION = ("Calendars.Read",)
_USER_DELEGATED = ("User.ReadBasic.All", "User.Read.All", "User.ReadWrite.All", "Directory.Read.All",
                   "Directory.ReadWrite.All")
_USER_APPLICATION = ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")
_B = "/solutions/bookingBusinesses/{business}"

ROUTES: tuple[Route, ...] = (
    Route("GET", "/solutions/bookingBusinesses", (), _READ_DELEGATED, "bookingbusiness-list",
          call="list_businesses", made_with="delegated", reading="app_can_list_businesses", application_if_reading=(
              "Bookings.Read.All", "Bookings.Manage.All", "Bookings.ReadWrite.All"),
          note="Application: revisions of the page and its permissions include say 'Not supported' (and a "
               "Microsoft Q&A answer confirms app-only calls fail); the page as published now lists "
               "Bookings.Read.All. The app lists businesses on behalf of the signed-in user, which works "
               "under both readings."),
    Route("GET", _B, _READ_APPLICATION, _READ_DELEGATED, "bookingbusiness-get", call="get_business"),
    Route("GET", _B + "/staffMembers", _READ_APPLICATION, _READ_DELEGATED, "bookingbusiness-list-staffmembers",
          call="list_staff"),
    Route("GET", _B + "/staffMembers/{item}", _READ_APPLICATION, _READ_DELEGATED, "bookingstaffmember-get"),
    Route("GET", _B + "/services", _READ_APPLICATION, _READ_DELEGATED, "bookingbusiness-list-services",
          call="list_services"),
    Route("GET", _B + "/services/{item}", _READ_APPLICATION, _READ_DELEGATED, "bookingservice-get"),
    Route("GET", _B + "/customers", _READ_APPLICATION, _READ_DELEGATED, "bookingbusiness-list-customers",
          call="list_customers"),
    Route("POST", _B + "/customers", _WRITE, _WRITE, "bookingbusiness-post-customers", call="create_customer"),
    Route("GET", _B + "/customers/{item}", _READ_APPLICATION, _READ_DELEGATED, "bookingcustomer-get"),
    Route("GET", _B + "/customQuestions", _QUESTIONS_APPLICATION, _READ_DELEGATED,
          "bookingbusiness-list-customquestions", call="list_custom_questions",
          note="Application: BookingsAppointment.ReadWrite.All is not among them (it is on the other Bookings "
               "reads); a revision of the permissions include says 'Not supported' as least privileged with the "
               "same higher ones."),
    Route("GET", _B + "/customQuestions/{item}", _QUESTIONS_APPLICATION, _READ_DELEGATED,
          "bookingcustomquestion-get"),
    Route("GET", _B + "/calendarView", ("Bookings.Read.All", "Bookings.Manage.All", "Bookings.ReadWrite.All",
                                         "BookingsAppointment.ReadWrite.All"), _READ_DELEGATED,
          "bookingbusiness-list-calendarview", call="calendar_view"),
    Route("GET", _B + "/appointments", _READ_APPLICATION, _READ_DELEGATED, "bookingbusiness-list-appointments"),
    Route("POST", _B + "/appointments", _WRITE, _WRITE, "bookingbusiness-post-appointments",
          call="create_appointment",
          note="Application: the page also lists Bookings.Read.All, a read permission; not honoured. With "
               "application permissions Bookings applies the business rules an administrator could override "
               "(bookingsbusiness-business-rules); the sandbox does not model them."),
    Route("GET", _B + "/appointments/{appointment}", _READ_APPLICATION, _READ_DELEGATED,
          "bookingappointment-get", call="get_appointment"),
    Route("PATCH", _B + "/appointments/{appointment}", _WRITE, _WRITE, "bookingappointment-update",
          note="Application: the page also lists Bookings.Read.All, a read permission; not honoured."),
    Route("DELETE", _B + "/appointments/{appointment}", _WRITE, _WRITE, "bookingappointment-delete",
          note="Application: the page also lists Bookings.Read.All, a read permission; not honoured."),
    Route("POST", _B + "/appointments/{appointment}/cancel", ("Bookings.ReadWrite.All", "Bookings.Manage.All"),
          _WRITE, "bookingappointment-cancel", call="cancel_appointment",
          note="Application: BookingsAppointment.ReadWrite.All (least privileged for every other appointment "
               "request) is not listed; a revision of the include says 'Not supported' as least privileged "
               "with the same higher ones."),
    Route("GET", "/me", (), ("User.Read", "User.ReadWrite", *_USER_DELEGATED), "user-get", denied=DIRECTORY_DENIED,
          denied_app=ME_NEEDS_A_USER, call="me", made_with="delegated",
          note="/me needs a signed-in user: application permissions are not supported."),
    Route("GET", "/users/{user}", _USER_APPLICATION, _USER_DELEGATED, "user-get",
          delegated_self=("User.Read", "User.ReadWrite"), denied=DIRECTORY_DENIED,
          call="users/{oid}",
          note="User.ReadBasic.All reads only the basic profile (no proxyAddresses), so it is not enough for "
               "the addresses; the sandbox does not model per-property access."),
    Route("GET", "/users/{user}/events", _CALENDAR, (), "user-list-events", delegated_self=_CALENDAR),
    Route("GET", "/users/{user}/calendar/events", _CALENDAR, (), "calendar-list-events", delegated_self=_CALENDAR),
    Route("GET", "/users/{user}/events/{event}", _CALENDAR, (), "event-get", delegated_self=_CALENDAR,
          call="get_event", note="An earlier revision of the page lists only Calendars.Read."),
    Route("GET", "/users/{user}/calendar/events/{event}", _CALENDAR, (), "event-get", delegated_self=_CALENDAR),
    Route("GET", "/users/{user}/calendarView", _CALENDAR, (), "user-list-calendarview", delegated_self=_CALENDAR),
    Route("GET", "/users/{user}/calendarView/delta", ("Calendars.Read", "Calendars.ReadBasic", "Calendars.ReadWrite"),
          (), "event-delta", delegated_self=("Calendars.Read", "Calendars.ReadBasic", "Calendars.ReadWrite"),
          call="calendar_view_delta"),
    Route("POST", "/subscriptions", _SUBSCRIPTION, _SUBSCRIPTION, "subscription-post-subscriptions",
          denied=_subscription_denied("Create"), call="create_subscription",
          note="The permission of the resource (event: Calendars.Read); write permissions are refused where read "
               "suffices."),
    Route("GET", "/subscriptions", _SUBSCRIPTION, _SUBSCRIPTION, "subscription-list",
          denied=_subscription_denied("List"), call="list_subscriptions",
          note="Lists the subscriptions this app created."),
    Route("GET", "/subscriptions/{subscription}", _SUBSCRIPTION, _SUBSCRIPTION, "subscription-get",
          denied=_subscription_denied("Get")),
    Route("PATCH", "/subscriptions/{subscription}", _SUBSCRIPTION, _SUBSCRIPTION, "subscription-update",
          denied=_subscription_denied("Update"), call="renew_subscription"),
    Route("DELETE", "/subscriptions/{subscription}", _SUBSCRIPTION, _SUBSCRIPTION, "subscription-delete",
          denied=_subscription_denied("Delete"), call="delete_subscription"),
    Route("POST", "/subscriptions/{subscription}/reauthorize", _SUBSCRIPTION, _SUBSCRIPTION,
          "subscription-reauthorize", denied=_subscription_denied("Reauthorize"), call="reauthorize_subscription"),
)
# JSON batching: the batch itself needs only a Graph token (any permission the sandbox knows); each of its requests
# is checked as if sent alone (graph_sandbox.batching). The app sends calendar_view_delta rounds this way.
_EVERY_ROLE = tuple(sorted({p for r in ROUTES for p in r.application}))
_EVERY_SCOPE = tuple(sorted({p for r in ROUTES for p in (*r.delegated, *r.delegated_self)}))
ROUTES += (Route("POST", "/$batch", _EVERY_ROLE, _EVERY_SCOPE, "https://learn.microsoft.com/en-us/graph/json-batching",
                 note="Only a token: each request of the batch is checked on its own."),)


def find(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The row for a request (``path`` decoded, starting ``/v1.0``) and its path parameters."""
    for route in ROUTES:
        if route.method == method.upper():
            match = route.pattern.match(path)
            if match:
                return route, match.groupdict()
    return None


def is_delegated(claims: Mapping[str, Any]) -> bool:
    """Delegated tokens carry ``scp``; app tokens carry ``roles`` and no ``scp``."""
    return "scp" in claims


def granted(claims: Mapping[str, Any]) -> set[str]:
    if is_delegated(claims):
        return set(str(claims.get("scp") or "").split())
    roles = claims.get("roles") or []
    return {str(r) for r in roles} if isinstance(roles, list) else set()


def check(route: Route, claims: Mapping[str, Any], readings: Readings,
          is_caller: Callable[[str], bool]) -> tuple[int, str, str] | None:
    """``None`` when the token may make the request, else the (status, code, message) Graph answers.
    ``is_caller(name)`` says whether path parameter ``name`` names the signed-in user."""
    have = granted(claims)
    if is_delegated(claims):
        accepted = set(route.delegated)
        if route.delegated_self and is_caller("user"):
            accepted |= set(route.delegated_self)
        return None if have & accepted else route.denied
    if have & set(route.accepted_application(readings)):
        return None
    return route.denied_app or route.denied


def table(readings: Readings) -> list[dict[str, Any]]:
    """The rows as JSON (``GET /_sandbox/permissions``)."""
    return [{"method": r.method, "path": "/v1.0" + r.template, "application": list(r.accepted_application(readings)),
             "delegated": list(r.delegated), "delegatedOwnObjectOnly": list(r.delegated_self), "doc": r.url,
             "appCall": r.call or None, "madeWith": r.made_with if r.call else None, "note": r.note or None}
            for r in ROUTES]
