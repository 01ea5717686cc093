"""The custom connector definition: valid Swagger 2.0, served by our routes, the contract of DESIGN §2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV2SpecValidator, validate

from shared.endpoints.appointments import (
    APPOINTMENT_ROUTE,
    APPOINTMENTS_ROUTE,
    BUSINESSES_AS_STAFF_ROUTE,
    SERVICES_ROUTE,
    STAFF_ROUTE,
)
from shared.endpoints.cancellation import ROUTE as CANCEL_ROUTE
from shared.endpoints.flow_deliveries import DELIVERIES_ROUTE, REPLAY_ROUTE
from shared.endpoints.flow_webhooks import (
    BUSINESSES_ROUTE,
    ROUTE_PREFIX,
    WEBHOOK_ROUTE,
    WEBHOOKS_ROUTE,
    parse_registration_body,
    parse_trigger,
)
from shared.endpoints.test_events import ROUTE as TEST_EVENT_ROUTE
from shared.services.bookings_directory import AdministeredBusiness

CONNECTOR = Path(__file__).resolve().parents[2] / "connector"

# The routes function_app.py registers for the registration API, with their methods (see the report
# of issue 5 / registration_api's docstring). A connector path must match one of these.
SERVED: dict[str, set[str]] = {
    f"/{ROUTE_PREFIX}/{WEBHOOK_ROUTE}": {"post", "delete"},
    f"/{ROUTE_PREFIX}/{WEBHOOKS_ROUTE}": {"get"},
    f"/{ROUTE_PREFIX}/{BUSINESSES_ROUTE}": {"get"},
    f"/{ROUTE_PREFIX}/{BUSINESSES_AS_STAFF_ROUTE}": {"get"},
    f"/{ROUTE_PREFIX}/{APPOINTMENTS_ROUTE}": {"get", "post"},
    f"/{ROUTE_PREFIX}/{APPOINTMENT_ROUTE}": {"get"},
    f"/{ROUTE_PREFIX}/{CANCEL_ROUTE}": {"post"},
    f"/{ROUTE_PREFIX}/{SERVICES_ROUTE}": {"get"},
    f"/{ROUTE_PREFIX}/{STAFF_ROUTE}": {"get"},
    f"/{ROUTE_PREFIX}/{TEST_EVENT_ROUTE}": {"post"},
    f"/{ROUTE_PREFIX}/{DELIVERIES_ROUTE}": {"get"},
    f"/{ROUTE_PREFIX}/{REPLAY_ROUTE}": {"post"},
}
# The actions beyond Microsoft's connector (which has none), by operationId: summary, method.
ACTIONS = {
    "GetAppointment": ("Get an appointment", "get"),
    "ListAppointments": ("List appointments", "get"),
    "CreateBookingAppointment": ("Create an appointment", "post"),
    "CancelAppointmentWithReason": ("Cancel an appointment", "post"),
    "ListServices": ("List services", "get"),
    "ListStaffMembers": ("List staff members", "get"),
    "SendTestEvent": ("Send a test event to this flow", "post"),
    "ListFlowDeliveries": ("List deliveries of a flow", "get"),
    "ReplayFlowDeadLetters": ("Replay failed deliveries of a flow", "post"),
}
ADMIN_ACTIONS = {"CancelAppointmentWithReason", "SendTestEvent", "ListFlowDeliveries", "ReplayFlowDeadLetters"}

# DESIGN §2: the field names flows reference. Written out here because they are the contract: Microsoft's
# fields, never renamed or dropped, plus our additions (ADDED).
ADDED = {"AppointmentId", "CancelledBy", "ChangedFields", "IsTest", "Previous"}
APPOINTMENT_DATA = ADDED | {
    "AdditionalInfo", "CancelReason", "CustomerEmail", "CustomerId", "CustomerLocation", "CustomerName",
    "CustomerNotes", "CustomerPhone", "CustomerTimeZone", "CustomQuestionAnswers", "Customers", "Duration",
    "EndTime", "FilledAttendeesCount", "Id", "IsSMSNotificationsEnabled", "JoinWebURL", "MaxAttendeesCount",
    "SelfServiceAppointmentId", "ServiceId", "ServiceName", "ServiceNotes", "StaffMembers", "StartTime",
    "TrackingData",
}
CUSTOMER_DATA = {"Email", "Id", "Location", "Name", "Notes", "TimeZone", "Answers"}
CUSTOM_QUESTION = {"Answer", "AnswerOptions", "IsRequired", "Question", "QuestionID", "SelectedOptions"}
STAFF_MEMBER = {"DisplayName", "EmailAddress", "Id"}
PHYSICAL_ADDRESS = {"City", "CountryOrRegion", "PostalCode", "State", "Street"}
TRIGGERS = {
    "CreateAppointment": ("When an appointment is created", "Created"),
    "UpdateAppointment": ("When an appointment is updated", "Updated"),
    "CancelAppointment": ("When an appointment is cancelled", "Deleted"),
    "AppointmentAboutToStart": ("When an appointment is about to start", "Starting"),
    "AppointmentEnded": ("When an appointment has ended", "Ended"),
}
# The time-relative triggers: their payload (AppointmentData and ScheduledFor), and their offset's range.
TIME_TRIGGERS = {"AppointmentAboutToStart": (5, 10_080), "AppointmentEnded": (0, 10_080)}


@pytest.fixture(scope="module")
def swagger() -> dict[str, Any]:
    return json.loads((CONNECTOR / "apiDefinition.swagger.json").read_text())


def resolve(swagger: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = swagger["definitions"][schema["$ref"].removeprefix("#/definitions/")]
    return schema


def operations(swagger: dict[str, Any]):
    for path, item in swagger["paths"].items():
        for method, operation in item.items():
            if not method.startswith("x-"):
                yield path, method, item, operation


def served_route(path: str) -> str | None:
    """The served route template a connector path falls under: literal segments must be equal, a route
    parameter accepts anything, a connector parameter needs a route parameter."""
    segments = path.strip("/").split("/")
    for route in SERVED:
        route_segments = route.strip("/").split("/")
        if len(route_segments) == len(segments) and all(
            r.startswith("{") or (not s.startswith("{") and s.lower() == r.lower())
            for s, r in zip(segments, route_segments, strict=True)
        ):
            return route
    return None


def test_valid_swagger_2(swagger: dict[str, Any]) -> None:
    validate(swagger, cls=OpenAPIV2SpecValidator)
    assert swagger["swagger"] == "2.0" and swagger["schemes"] == ["https"]


def test_every_path_is_a_route_we_serve(swagger: dict[str, Any]) -> None:
    for path, method, _, _ in operations(swagger):
        full = swagger["basePath"].rstrip("/") + path
        route = served_route(full)
        assert route is not None, f"{full} is not served"
        assert method in SERVED[route], f"{method.upper()} {full} is not served"
        if route.endswith("{name}") and method == "post":
            parse_trigger(full.rsplit("/", 1)[1])  # the literal trigger name is one the handler accepts


def test_served_route_matcher_can_fail() -> None:
    assert served_route("/api/v1/bookingBusinesses/{SMTPAddress}/hooks/AppointmentCreated") is None
    assert served_route("/api/v1/bookingBusinesses/x/webhooks/y/z") is None


def test_the_three_triggers(swagger: dict[str, Any]) -> None:
    found = {}
    for path, method, item, operation in operations(swagger):
        if operation.get("x-ms-trigger"):
            found[operation["operationId"]] = operation
            summary, change = TRIGGERS[operation["operationId"]]
            assert method == "post" and operation["x-ms-trigger"] == "single"
            assert operation["summary"] == summary
            content = item["x-ms-notification-content"]
            body = next(p for p in operation["parameters"] if p["in"] == "body")["schema"]
            if operation["operationId"] in TIME_TRIGGERS:
                assert content["schema"] == {"$ref": "#/definitions/AppointmentReminderData"}
                offset = body["properties"]["offsetMinutes"]
                assert (offset["minimum"], offset["maximum"]) == TIME_TRIGGERS[operation["operationId"]]
                assert offset["type"] == "integer" and offset["x-ms-visibility"] == "important"
                assert ("offsetMinutes" in body["required"]) == (offset["minimum"] > 0)
            else:
                assert content["schema"] == {"$ref": "#/definitions/AppointmentData"}
            url_fields = [n for n, p in body["properties"].items() if p.get("x-ms-notification-url") is True]
            assert url_fields == ["notificationURL"]
            assert body["properties"]["changeType"]["default"] == [change]
            # What Power Automate will send, built from the schema, is accepted by our parser.
            sample = {name: prop.get("default", "https://a.logic.azure.com/x") for name, prop in
                      body["properties"].items()}
            parse_registration_body(json.dumps(sample).encode(), parse_trigger(path.rsplit("/", 1)[1]))
            assert set(operation["responses"]) >= {"201", "401", "403", "429", "500"}
    assert set(found) == set(TRIGGERS)


def test_reminder_data_is_appointment_data_and_when_it_was_due(swagger: dict[str, Any]) -> None:
    reminder = swagger["definitions"]["AppointmentReminderData"]["properties"]
    assert set(reminder) == APPOINTMENT_DATA | {"ScheduledFor"}
    assert {k: v for k, v in reminder.items() if k != "ScheduledFor"} == \
        swagger["definitions"]["AppointmentData"]["properties"]
    assert reminder["ScheduledFor"]["format"] == "date-time" and reminder["ScheduledFor"]["description"]


def test_appointment_data_is_the_contract(swagger: dict[str, Any]) -> None:
    data = swagger["definitions"]["AppointmentData"]["properties"]
    assert set(data) == APPOINTMENT_DATA
    assert data["Duration"]["type"] == "integer"
    for name in ADDED:  # a flow maker sees what an addition is
        assert data[name]["description"] and data[name]["x-ms-summary"] == data[name]["title"]
    assert data["ChangedFields"]["items"]["type"] == "string" and data["IsTest"]["type"] == "boolean"
    assert set(data["Previous"]["properties"]) == {"StartTime", "EndTime", "Duration", "ServiceId", "ServiceName",
                                                   "StaffMembers"}
    assert data["AppointmentId"]["title"] == data["AppointmentId"]["x-ms-summary"] == "Appointment ID"
    assert set(resolve(swagger, data["Customers"]["items"])["properties"]) == CUSTOMER_DATA
    assert set(resolve(swagger, data["CustomQuestionAnswers"]["items"])["properties"]) == CUSTOM_QUESTION
    assert set(resolve(swagger, data["StaffMembers"]["items"])["properties"]) == STAFF_MEMBER
    assert set(data["CustomerLocation"]["properties"]) == {"DisplayName", "PhysicalAddress"}
    assert set(data["CustomerLocation"]["properties"]["PhysicalAddress"]["properties"]) == PHYSICAL_ADDRESS
    customer = resolve(swagger, data["Customers"]["items"])["properties"]
    assert set(customer["Location"]["properties"]["PhysicalAddress"]["properties"]) == PHYSICAL_ADDRESS
    assert set(resolve(swagger, customer["Answers"]["items"])["properties"]) == CUSTOM_QUESTION
    question = resolve(swagger, data["CustomQuestionAnswers"]["items"])["properties"]
    assert question["SelectedOptions"]["items"]["type"] == "integer"
    assert question["AnswerOptions"]["items"]["type"] == "string"


async def test_dropdown_is_wired_to_the_businesses_operation(swagger: dict[str, Any]) -> None:
    by_id = {op["operationId"]: (path, op) for path, _, _, op in operations(swagger)}
    for operation_id in TRIGGERS:
        smtp = next(p for p in by_id[operation_id][1]["parameters"] if p["name"] == "SMTPAddress")
        dynamic = smtp["x-ms-dynamic-values"]
        path, source = by_id[dynamic["operationId"]]
        assert served_route(swagger["basePath"] + path) == f"/{ROUTE_PREFIX}/{BUSINESSES_ROUTE}"
        # The names the dropdown reads are the ones the handler writes.
        schema = resolve(swagger, source["responses"]["200"]["schema"])
        item = schema["properties"][dynamic["value-collection"]]["items"]["properties"]
        assert {dynamic["value-path"], dynamic["value-title"]} <= set(item)
        assert {dynamic["value-path"], dynamic["value-title"]} <= set(
            AdministeredBusiness.__annotations__)


def test_delete_operation_is_internal(swagger: dict[str, Any]) -> None:
    deletes = [op for _, method, _, op in operations(swagger) if method == "delete"]
    assert len(deletes) == 1 and deletes[0]["x-ms-visibility"] == "internal"
    assert "204" in deletes[0]["responses"]


def test_oauth_with_entra_id() -> None:
    swagger = json.loads((CONNECTOR / "apiDefinition.swagger.json").read_text())
    assert [s["type"] for s in swagger["securityDefinitions"].values()] == ["oauth2"]
    properties = json.loads((CONNECTOR / "apiProperties.json").read_text())["properties"]
    oauth = properties["connectionParameters"]["token"]
    assert oauth["type"] == "oauthSetting" and oauth["oAuthSettings"]["identityProvider"] == "aad"


def test_the_actions(swagger: dict[str, Any]) -> None:
    by_id = {op["operationId"]: (path, method, op) for path, method, _, op in operations(swagger)}
    for operation_id, (summary, method) in ACTIONS.items():
        _, found_method, operation = by_id[operation_id]
        assert (operation["summary"], found_method) == (summary, method), operation_id
        assert not operation.get("x-ms-trigger") and operation["x-ms-visibility"] in ("important", "advanced")
        # What a flow maker reads: a sentence, not an echo of the summary.
        assert operation["description"].endswith(".") and len(operation["description"]) > len(summary) + 20
        smtp = next(p for p in operation["parameters"] if p["name"] == "SMTPAddress")
        # Reading and booking: every staff role that may; cancelling and a flow's actions: administrators (and
        # the flow's creator), the triggers' dropdown.
        expected = "GetBusinessesAsAdmin" if operation_id in ADMIN_ACTIONS else "GetBusinessesAsStaff"
        assert smtp["x-ms-dynamic-values"]["operationId"] == expected, operation_id
        for code, response in operation["responses"].items():
            if int(code) >= 400:  # every error in the project's JSON shape
                assert response["schema"] == {"$ref": "#/definitions/ErrorResponse"}, (operation_id, code)
        assert {"401", "403", "500"} <= set(operation["responses"]), operation_id


def test_create_offers_the_idempotency_key_the_endpoint_reads(swagger: dict[str, Any]) -> None:
    from shared.endpoints.appointments import IDEMPOTENCY_HEADER

    by_id = {op["operationId"]: op for _, _, _, op in operations(swagger)}
    (header,) = [p for p in by_id["CreateBookingAppointment"]["parameters"] if p["in"] == "header"]
    assert header["name"].lower() == IDEMPOTENCY_HEADER and not header["required"]


def test_operation_ids_are_unique_and_summaries_short(swagger: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, _, op in operations(swagger)]
    assert len(ids) == len(set(ids))
    for _, _, _, operation in operations(swagger):
        # Power Platform's connector guidelines: a summary is a short title without a full stop.
        assert len(operation["summary"]) <= 80 and not operation["summary"].endswith(".")


def _dynamic_values(node: Any):
    if isinstance(node, dict):
        if "x-ms-dynamic-values" in node:
            yield node["x-ms-dynamic-values"]
        for value in node.values():
            yield from _dynamic_values(value)
    elif isinstance(node, list):
        for value in node:
            yield from _dynamic_values(value)


def test_every_dropdown_names_a_listing_operation_and_its_fields(swagger: dict[str, Any]) -> None:
    by_id = {op["operationId"]: op for _, _, _, op in operations(swagger)}
    found = list(_dynamic_values(swagger))
    assert len(found) > len(TRIGGERS)
    for dynamic in found:
        source = by_id[dynamic["operationId"]]
        names = {p["name"] for p in source["parameters"]}
        assert set(dynamic.get("parameters", {})) <= names, dynamic
        assert {p["name"] for p in source["parameters"] if p.get("required")} <= set(dynamic.get("parameters", {}))
        schema = resolve(swagger, source["responses"]["200"]["schema"])
        item = resolve(swagger, schema["properties"][dynamic["value-collection"]]["items"])["properties"]
        assert {dynamic["value-path"], dynamic["value-title"]} <= set(item), dynamic


def test_the_listing_is_paged_as_power_automate_expects(swagger: dict[str, Any]) -> None:
    operation = swagger["paths"]["/v1/bookingBusinesses/{SMTPAddress}/appointments"]["get"]
    next_link = operation["x-ms-pageable"]["nextLinkName"]
    page = resolve(swagger, operation["responses"]["200"]["schema"])["properties"]
    assert next_link in page and page["value"]["items"] == {"$ref": "#/definitions/AppointmentData"}


def test_a_flows_deliveries_are_paged_and_name_the_flow_as_the_test_event_does(swagger: dict[str, Any]) -> None:
    paths = swagger["paths"]
    listing = paths["/v1/bookingBusinesses/{SMTPAddress}/webhooks/{WebhookId}/deliveries"]["get"]
    page = resolve(swagger, listing["responses"]["200"]["schema"])["properties"]
    assert listing["x-ms-pageable"]["nextLinkName"] in page
    assert page["value"]["items"] == {"$ref": "#/definitions/Delivery"}
    test_event = paths["/v1/bookingBusinesses/{SMTPAddress}/webhooks/{WebhookId}/test"]["post"]
    replay = paths["/v1/bookingBusinesses/{SMTPAddress}/webhooks/{WebhookId}/deadletters/replay"]["post"]
    for operation in (listing, replay):
        flow = next(p for p in operation["parameters"] if p["name"] == "WebhookId")
        assert flow["x-ms-dynamic-values"] == test_event["parameters"][1]["x-ms-dynamic-values"]
