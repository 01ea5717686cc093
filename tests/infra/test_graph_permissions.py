"""The Microsoft Graph permissions: what infra/entra/graph.bicep and scripts/grant-graph-permissions.sh grant,
what infra/README.md says, and what the Graph sandbox enforces (graph_sandbox/permissions.py, the v1.0 pages'
tables) agree. A permission the app's calls need and nobody grants, or a grant no call needs, fails here."""

from __future__ import annotations

import re
from typing import Any

import pytest

from graph_sandbox.config import APP_CANCEL_ROLES, APP_READ_ROLES, DEFAULT_APP_ROLES
from graph_sandbox.permissions import ROUTES, Readings, Route
from tests.infra.conftest import ROOT, parse, resources

APP_CALLS = [r for r in ROUTES if r.call]
NOT_GRANTED = {"users/{oid}"}  # the app-only way to read the caller's addresses: User.Read.All, not chosen
WRITE_CALLS = {"cancel_appointment", "create_appointment", "create_customer"}  # granted with ENABLE_CANCEL_WITH_REASON


@pytest.fixture(scope="module")
def graph() -> dict[str, Any]:
    return parse("entra/graph.bicep")


def variable(graph: dict[str, Any], name: str) -> list[str]:
    return list(graph["variables"][name]["value"])


def readme_rows() -> dict[str, dict[str, str]]:
    """The "Microsoft Graph permissions" table of infra/README.md, by call."""
    text = (ROOT / "infra" / "README.md").read_text()
    section = text.split("### Microsoft Graph permissions", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`"):
            call, request, made_with, documented, page, why = cells
            rows[call.strip("`")] = {"request": request, "made_with": made_with, "documented": documented,
                                     "page": page, "why": why}
    return rows


def shape(path: str) -> str:
    """A request path with its parameters and query left out: ``/users/{}/events/{}``."""
    return re.sub(r"\{[^}]*\}", "{}", path.split("?", 1)[0])


def test_the_app_read_roles_are_what_bicep_grants(graph: dict[str, Any]) -> None:
    assert set(variable(graph, "readRoles")) == set(APP_READ_ROLES)
    assert set(variable(graph, "cancelRoles")) == set(APP_CANCEL_ROLES)
    roles = graph["variables"]["graphRoles"]["value"]["operator"]["operands"]
    assert roles["condition"] == "enableCancelWithReason"
    assert roles["true_value"]["function"]["parameters"] == {"arg_1": "readRoles", "arg_2": "cancelRoles"}
    assert roles["false_value"] == "readRoles"
    # The local stack (the sandbox's app registration) has the cancel action on.
    assert set(DEFAULT_APP_ROLES) == set(APP_READ_ROLES) | set(APP_CANCEL_ROLES)


@pytest.mark.parametrize("route", [r for r in APP_CALLS if r.made_with == "application"], ids=lambda r: r.call)
def test_every_app_only_call_is_allowed_by_the_grant_and_only_by_it(route: Route) -> None:
    if route.call in NOT_GRANTED:
        assert not set(DEFAULT_APP_ROLES) & set(route.application)
        return
    granted = set(APP_CANCEL_ROLES if route.call in WRITE_CALLS else APP_READ_ROLES)
    assert granted & set(route.accepted_application(Readings())), "the grant does not cover the call"


def test_cancel_works_under_both_readings_and_reads_need_no_write_permission() -> None:
    cancel = next(r for r in ROUTES if r.call == "cancel_appointment")
    assert set(APP_CANCEL_ROLES) & set(cancel.application)  # the cancel page: Bookings.ReadWrite.All
    # what the other appointment pages name least privileged, granted before
    assert "BookingsAppointment.ReadWrite.All" in APP_CANCEL_ROLES
    assert not {r for r in APP_READ_ROLES if "ReadWrite" in r or "Manage" in r}


def test_every_app_role_granted_is_needed_by_a_call() -> None:
    for role in DEFAULT_APP_ROLES:
        assert any(role in r.application for r in APP_CALLS if r.made_with == "application"), role


def test_delegated_calls_are_covered_by_the_api_registration_and_its_consent(graph: dict[str, Any]) -> None:
    scopes = set(variable(graph, "delegatedScopes"))
    assert scopes == {"Bookings.Read.All", "User.Read"}
    for route in (r for r in APP_CALLS if r.made_with == "delegated"):
        assert scopes & set(route.delegated), route.call
    api = resources(graph, "Microsoft.Graph/applications")["apiApp"]
    (access,) = api["requiredResourceAccess"]
    assert access["resourceAppId"] == "graphAppId"
    assert access["resourceAccess"]["loop_type"]["detail"]["array_name"] == "delegatedScopes"
    assert access["resourceAccess"]["config"]["type"] == "Scope"
    consent = graph["resources"]["apiConsent"]["config"]
    assert consent["condition"] == "assignGraphAppRoles"
    assert consent["config"]["consentType"] == "AllPrincipals"
    assert consent["config"]["scope"]["function"]["parameters"]["input_array"] == "delegatedScopes"
    assert "apiSp" in str(consent["config"]["clientId"])


def test_listing_businesses_is_made_on_behalf_of_the_user() -> None:
    listing = next(r for r in ROUTES if r.call == "list_businesses")
    assert listing.made_with == "delegated" and listing.application == ()  # the stricter reading, by default


def test_the_readme_table_is_the_sandbox_table() -> None:
    rows = readme_rows()
    assert set(rows) == {r.call for r in APP_CALLS}
    for route in APP_CALLS:
        row = rows[route.call]
        method, _, path = row["request"].strip("`").partition(" ")
        path = path.split("`")[0].strip()
        assert (method, shape(path)) == (route.method, shape(route.template)), route.call
        assert f"({route.url})" in row["page"], route.call
        kind, permission = re.match(r"(application|delegated) `([^`]+)`", row["made_with"]).groups()
        assert kind == route.made_with, route.call
        accepted = route.accepted_application(Readings()) if kind == "application" else (
            *route.delegated, *route.delegated_self)
        assert permission in accepted, (route.call, permission)
        granted = DEFAULT_APP_ROLES if kind == "application" else ("Bookings.Read.All", "User.Read")
        assert (permission in granted) == (route.call not in NOT_GRANTED), route.call
        assert "not granted" in row["made_with"].lower() or route.call not in NOT_GRANTED
        least = (route.accepted_application(Readings()) or route.application_if_reading or route.delegated)[0]
        assert least in row["documented"] or "as `get_business`" in row["documented"], route.call


def test_the_admin_script_grants_what_bicep_grants(graph: dict[str, Any]) -> None:
    script = (ROOT / "scripts" / "grant-graph-permissions.sh").read_text()
    read = re.search(r"^roles=\(([^)]*)\)", script, re.MULTILINE).group(1).split()
    cancel = re.search(r"^\s+roles\+=\(([^)]*)\)", script, re.MULTILINE).group(1).split()
    assert set(read) == set(variable(graph, "readRoles"))
    assert set(cancel) == set(variable(graph, "cancelRoles"))
    # Consent to the delegated permissions of both registrations (their requiredResourceAccess).
    assert 'admin-consent --id "$API_APP_CLIENT_ID"' in script
    assert 'admin-consent --id "$CONNECTOR_CLIENT_APP_ID"' in script
