"""The Entra ID objects declared with the Microsoft Graph Bicep extension (infra/entra/graph.bicep).

checkov's pinned parser cannot read the `extension` keyword, so checkov skips infra/entra; these tests
parse it with pycep-parser 0.7 (which can) and check what it declares.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.conftest import parse, resources


@pytest.fixture(scope="module")
def graph() -> dict[str, Any]:
    return parse("entra/graph.bicep")


def test_uses_the_microsoft_graph_extension(graph: dict[str, Any]) -> None:
    assert "microsoftGraphV1" in str(graph["extensions"])
    assert all(r["type"].startswith("Microsoft.Graph/") for r in graph["resources"].values())
    assert all(r["api_version"] == "v1.0" for r in graph["resources"].values())


def test_api_app_registration_exposes_a_v2_user_scope(graph: dict[str, Any]) -> None:
    (api,) = [r for name, r in resources(graph, "Microsoft.Graph/applications").items() if name == "apiApp"]
    assert api["signInAudience"] == "AzureADMyOrg"
    # api://<tenant id>/<name>: an Entra secure identifier URI pattern, no verified domain needed.
    assert api["identifierUris"] == ["api://${tenant().tenantId}/bookings-triggers-${resourceToken}"]
    assert api["api"]["requestedAccessTokenVersion"] == 2
    (scope,) = api["api"]["oauth2PermissionScopes"]
    assert scope["value"] == "scopeValue" and graph["variables"]["scopeValue"]["value"] == "user_impersonation"
    assert scope["type"] == "User" and scope["isEnabled"] is True
    (pre,) = api["api"]["preAuthorizedApplications"]
    assert pre["delegatedPermissionIds"] == ["scopeId"], "the connector needs no consent prompt for the scope"


def test_connector_client_has_the_power_platform_redirect_and_no_secret(graph: dict[str, Any]) -> None:
    connector = resources(graph, "Microsoft.Graph/applications")["connectorApp"]
    # The global URL and the per-connector ones recorded in the azd environment (test_redirect_uris.py).
    assert connector["web"]["redirectUris"] == {"function": {"type": "union", "parameters": {
        "arg_1": ["connectorRedirectUri"], "arg_2": "perConnectorRedirectUris"}}}
    assert graph["variables"]["connectorRedirectUri"]["value"] == "https://global.consent.azure-apim.net/redirect"
    assert "passwordCredentials" not in connector, "secrets are made by scripts/connector-secret.sh, never in Bicep"


def test_service_principals_exist_for_both_apps(graph: dict[str, Any]) -> None:
    sps = resources(graph, "Microsoft.Graph/servicePrincipals")
    app_ids = {str(sp["appId"]) for sp in sps.values()}
    assert any("apiApp" in a for a in app_ids) and any("connectorApp" in a for a in app_ids)


def test_managed_identity_gets_exactly_the_graph_application_permissions(graph: dict[str, Any]) -> None:
    # Which roles, and why: tests/infra/test_graph_permissions.py against the sandbox's permission table.
    assert graph["variables"]["readRoles"]["value"] == ["Calendars.Read", "Bookings.Read.All"]
    assert graph["variables"]["cancelRoles"]["value"] == ["Bookings.ReadWrite.All", "BookingsAppointment.ReadWrite.All"]
    cancel = str(graph["variables"]["graphRoles"]["value"])
    assert "cancelRoles" in cancel and "enableCancelWithReason" in cancel
    (assignment,) = resources(graph, "Microsoft.Graph/appRoleAssignedTo").values()
    assert assignment["principalId"] == "managedIdentityPrincipalId"
    loop = graph["resources"]["graphAppRoles"]["config"]["loop_type"]["detail"]
    assert loop["array_name"] == "assignedRoles"
    assert graph["variables"]["graphAppId"]["value"] == "00000003-0000-0000-c000-000000000000"


def test_main_deploys_the_entra_module_and_feeds_the_audience(main_bicep: dict[str, Any]) -> None:
    module = main_bicep["modules"]["entra"]
    assert module["detail"]["path"] == "entra/graph.bicep"
    audience = str(main_bicep["modules"]["functionApp"]["config"]["params"]["apiAudience"])
    assert "entra" in audience and "apiAppId" in audience


def test_connector_sign_in_scopes_are_admin_consented_with_the_admin_switch(graph: dict[str, Any]) -> None:
    assert graph["variables"]["signInScopes"]["value"] == ["openid", "offline_access", "User.Read"]
    grant = graph["resources"]["connectorConsent"]["config"]
    assert grant["condition"] == "assignGraphAppRoles"
    assert grant["config"]["consentType"] == "AllPrincipals"
    connector = resources(graph, "Microsoft.Graph/applications")["connectorApp"]
    (access,) = connector["requiredResourceAccess"]
    assert access["resourceAppId"] == "graphAppId"


def test_the_api_registration_trusts_the_managed_identity_and_has_no_secret(graph: dict[str, Any]) -> None:
    """On-behalf-of on Azure is keyless: a federated identity credential on the API registration whose
    subject is the Function App's managed identity (its token for api://AzureADTokenExchange)."""
    (fic,) = resources(graph, "Microsoft.Graph/applications/federatedIdentityCredentials").values()
    assert fic["name"].startswith("${apiApp.uniqueName}/") and fic["subject"] == "managedIdentityPrincipalId"
    assert fic["audiences"] == ["api://AzureADTokenExchange"]
    assert fic["issuer"] == "${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0"
    assert "passwordCredentials" not in str(graph) and "keyCredentials" not in str(graph)


def test_the_delegated_permissions_match_what_the_app_asks_for(graph: dict[str, Any]) -> None:
    """The sandbox consents exactly what infra consents (DEFAULT_DELEGATED_SCOPES), and that is what the
    app's on-behalf-of calls need: Bookings.Read.All (list businesses), User.Read (/me)."""
    from graph_sandbox.config import DEFAULT_DELEGATED_SCOPES

    declared = graph["variables"]["delegatedScopes"]["value"]
    assert sorted(declared) == sorted(DEFAULT_DELEGATED_SCOPES) == ["Bookings.Read.All", "User.Read"]
