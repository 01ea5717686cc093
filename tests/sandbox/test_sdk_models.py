"""Every property the sandbox serves is a property of Graph's v1.0 model.

The msgraph-sdk models are generated from Graph's v1.0 metadata, so parsing our JSON with them and
finding nothing left in ``additional_data`` proves the field names and casing are Graph's, and that the
values have the types the SDK expects (enums, durations, dateTimeTimeZone).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from kiota_serialization_json.json_parse_node import JsonParseNode
from msgraph.generated.models.booking_appointment import BookingAppointment
from msgraph.generated.models.booking_business import BookingBusiness
from msgraph.generated.models.booking_custom_question import BookingCustomQuestion
from msgraph.generated.models.booking_customer import BookingCustomer
from msgraph.generated.models.booking_service import BookingService
from msgraph.generated.models.booking_staff_member import BookingStaffMember
from msgraph.generated.models.booking_staff_role import BookingStaffRole
from msgraph.generated.models.event import Event
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.subscription import Subscription

from graph_sandbox import SandboxServer
from graph_sandbox.testing import NotificationReceiver

B = "/solutions/bookingBusinesses/clinic@contoso.test"


def unknown_properties(obj: Any, path: str = "$") -> list[str]:
    """Keys the model did not recognise, anywhere in the object tree (``@odata.*`` annotations aside)."""
    found = [f"{path}.{k}" for k in (getattr(obj, "additional_data", None) or {}) if not k.startswith("@odata")]
    for name in dir(obj):
        if name.startswith("_") or name in ("additional_data", "backing_store", "odata_type"):
            continue
        value = getattr(obj, name, None)
        if hasattr(value, "additional_data"):
            found += unknown_properties(value, f"{path}.{name}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if hasattr(item, "additional_data"):
                    found += unknown_properties(item, f"{path}.{name}[{i}]")
    return found


def parse(model: Any, data: dict[str, Any]) -> Any:
    return JsonParseNode(data).get_object_value(model)


def _appointments(graph: httpx.Client) -> list[dict[str, Any]]:
    return graph.get(f"{B}/appointments").json()["value"]


@pytest.mark.parametrize(
    ("model", "fetch"),
    [
        (BookingBusiness, lambda g: g.get(B).json()),
        (BookingStaffMember, lambda g: g.get(f"{B}/staffMembers").json()["value"][2]),
        (BookingService, lambda g: g.get(f"{B}/services").json()["value"][1]),
        (BookingCustomer, lambda g: g.get(f"{B}/customers").json()["value"][0]),
        (BookingCustomQuestion, lambda g: g.get(f"{B}/customQuestions").json()["value"][1]),
        (BookingAppointment, lambda g: _appointments(g)[0]),
        (BookingAppointment, lambda g: g.get(f"{B}/appointments/{_appointments(g)[0]['id']}").json()),
        (BookingAppointment, lambda g: g.get(f"{B}/appointments/{_appointments(g)[2]['id']}").json()),
        (Event, lambda g: g.get("/users/clinic@contoso.test/events").json()["value"][0]),
        (ODataError, lambda g: g.get(f"{B}/appointments/nope").json()),
    ],
    ids=[
        "business",
        "staff",
        "service",
        "customer",
        "question",
        "appt-list",
        "appt-1to1",
        "appt-group",
        "event",
        "error",
    ],
)
def test_payloads_parse_into_graph_models_without_leftovers(graph: httpx.Client, model: Any, fetch: Any) -> None:
    data = fetch(graph)
    obj = parse(model, data)
    assert unknown_properties(obj) == []


def test_typed_values_parse(graph: httpx.Client) -> None:
    staff = graph.get(f"{B}/staffMembers", headers={"Prefer": "include-unknown-enum-members"}).json()["value"]
    assert {parse(BookingStaffMember, s).role for s in staff} == {
        BookingStaffRole.Administrator,
        BookingStaffRole.Viewer,
        BookingStaffRole.Scheduler,
        BookingStaffRole.TeamMember,
    }
    appt = parse(BookingAppointment, graph.get(f"{B}/appointments/{_appointments(graph)[0]['id']}").json())
    assert appt.duration.total_seconds() == 1800
    assert appt.start_date_time.time_zone == "UTC"
    assert appt.customers[0].custom_question_answers[0].answer


def test_subscription_parses(sb: SandboxServer, graph: httpx.Client) -> None:
    with NotificationReceiver() as receiver:
        body = {
            "changeType": "created,updated,deleted",
            "notificationUrl": receiver.url,
            "lifecycleNotificationUrl": receiver.url,
            "resource": "/users/clinic@contoso.test/events",
            "expirationDateTime": "2100-01-01T00:00:00Z",
            "clientState": "x",
        }
        sb.sandbox.config.max_event_subscription_minutes = 10**8  # only the shape matters here
        try:
            created = graph.post("/subscriptions", json=body).json()
        finally:
            sb.sandbox.config.max_event_subscription_minutes = 4230
    assert unknown_properties(parse(Subscription, created)) == []
