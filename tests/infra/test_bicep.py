"""The deployed configuration's security properties and its agreement with the app, read from the Bicep.

Settings, tables and queues come from the app's own code (shared/adapters/settings.py, shared/adapters/storage.py), so a
setting, table or queue added there without its infra counterpart fails here with what to add where.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from shared.adapters.settings import (
    RETIRED_SETTINGS,
    SPECS,
    STORAGE_CLIENT_ID,
    STORAGE_CONNECTION,
    STORAGE_QUEUE_URI,
    STORAGE_TABLE_URI,
)
from shared.adapters.storage import QUEUES, TABLES, poison_queue
from tests.infra.conftest import INFRA, ROOT, bicep_files, body, is_reference, lower_keys, parse, resources

# Built-in role definition ids.
ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": ("Storage Blob Data Owner", "storage"),
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": ("Storage Queue Data Contributor", "storage"),
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": ("Storage Table Data Contributor", "storage"),
    "3913510d-42f4-4e42-8a64-420c390055eb": ("Monitoring Metrics Publisher", "appInsights"),
}

SECRET_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"AccountKey=", r"SharedAccessSignature", r"(^|[?&;])sig=", r"InstrumentationKey=", r"password",
        r"client_?secret", r"secret=", r"eyJ[A-Za-z0-9_-]{5,}\.", r"[A-Za-z0-9+/]{40,}={0,2}",
    )
]


def test_every_bicep_file_parses() -> None:
    files = bicep_files()
    assert len(files) >= 8
    for path in files:
        parse(str(path.relative_to(INFRA)))  # raises on a syntax pycep cannot read


# --- storage ---------------------------------------------------------------------------------------


def test_storage_account_has_no_shared_keys_and_no_public_blobs() -> None:
    doc = parse("modules/storage.bicep")
    (account,) = resources(doc, "Microsoft.Storage/storageAccounts").values()
    props = account["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["defaultToOAuthAuthentication"] is True
    for container in resources(doc, "Microsoft.Storage/storageAccounts/blobServices/containers").values():
        assert container["properties"]["publicAccess"] == "None"


def _loop_names(doc: dict[str, Any], type_: str) -> list[str]:
    (res,) = [r for r in doc["resources"].values() if r["type"] == type_]
    array_name = res["config"]["loop_type"]["detail"]["array_name"]
    return doc["variables"][array_name]["value"]


def test_every_table_of_the_app_exists() -> None:
    declared = _loop_names(parse("modules/storage.bicep"), "Microsoft.Storage/storageAccounts/tableServices/tables")
    missing = sorted(set(TABLES) - set(declared))
    assert not missing, (f"add {missing} to tableNames in infra/modules/storage.bicep "
                         "(shared/adapters/storage.py TABLES)")
    assert sorted(declared) == sorted(TABLES), "infra/modules/storage.bicep declares tables the app does not use"


def test_every_queue_and_poison_queue_of_the_app_exists() -> None:
    declared = _loop_names(parse("modules/storage.bicep"), "Microsoft.Storage/storageAccounts/queueServices/queues")
    expected = {q for name in QUEUES for q in (name, poison_queue(name))}
    missing = sorted(expected - set(declared))
    assert not missing, (f"add {missing} to queueNames in infra/modules/storage.bicep "
                         "(shared/adapters/storage.py QUEUES)")
    assert set(declared) == expected, "infra/modules/storage.bicep declares queues the app does not use"


def test_deployment_container_is_the_one_the_function_app_reads(main_bicep: dict[str, Any]) -> None:
    storage = main_bicep["modules"]["storage"]["config"]["params"]
    function = main_bicep["modules"]["functionApp"]["config"]["params"]
    assert storage["deploymentContainerName"] == function["deploymentContainerName"] == "deploymentContainerName"


# --- monitoring ------------------------------------------------------------------------------------


def test_application_insights_and_log_analytics_disable_local_auth() -> None:
    doc = parse("modules/monitoring.bicep")
    (ai,) = resources(doc, "Microsoft.Insights/components").values()
    assert lower_keys(ai["properties"])["disablelocalauth"] is True
    (workspace,) = resources(doc, "Microsoft.OperationalInsights/workspaces").values()
    assert workspace["properties"]["features"]["disableLocalAuth"] is True


# --- identity and roles ----------------------------------------------------------------------------


def test_function_app_runs_as_the_user_assigned_identity_only(function_bicep: dict[str, Any]) -> None:
    (site,) = resources(function_bicep, "Microsoft.Web/sites").values()
    assert site["identity"]["type"] == "UserAssigned"
    auth = site["properties"]["functionAppConfig"]["deployment"]["storage"]["authentication"]
    assert auth == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}


def test_each_role_assignment_is_present_for_the_managed_identity(main_bicep: dict[str, Any]) -> None:
    doc = parse("modules/rbac.bicep")
    role_vars = {name: var["value"] for name, var in doc["variables"].items()}
    assigned = {}
    for name, res in resources(doc, "Microsoft.Authorization/roleAssignments").items():
        if name == "adminReaders":
            continue  # test_admins_may_be_granted_read_access_and_nothing_more
        props = res["properties"]
        assert props["principalId"] == "principalId"
        assert props["principalType"] == "ServicePrincipal"
        role_var = props["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        assigned[role_vars[role_var]] = res["scope"]
    for role_id, (role_name, scope) in ROLES.items():
        assert role_id in assigned, f"{role_name} is not assigned in infra/modules/rbac.bicep"
        assert assigned[role_id] == scope, f"{role_name} must be scoped to the {scope} resource, not wider"
    rbac_principal = main_bicep["modules"]["rbac"]["config"]["params"]["principalId"]
    assert json.dumps(rbac_principal).count('"principalId"') == 1 and "identity" in json.dumps(rbac_principal)


def test_admins_may_be_granted_read_access_and_nothing_more(main_bicep: dict[str, Any]) -> None:
    """Optional (ADMIN_PRINCIPAL_ID): read-only data roles on the storage account for a user or group, so the
    admin commands (`az storage ... --auth-mode login`) do not answer 403; none when the parameter is empty."""
    doc = parse("modules/rbac.bicep")
    readers = doc["resources"]["adminReaders"]
    assert readers["config"]["loop_type"]["detail"]["array_name"] == "adminAssignments"
    chosen = doc["variables"]["adminAssignments"]["value"]["operator"]["operands"]
    assert chosen["false_value"] == "adminReadRoles" and chosen["true_value"] == []
    assert "adminPrincipalId" in json.dumps(chosen["condition"])
    assert doc["variables"]["adminReadRoles"]["value"] == [
        "76199698-9eea-4c19-bc75-cec21354c6b6",  # Storage Table Data Reader
        "19e7f393-937e-4f77-808e-94535e297925",  # Storage Queue Data Reader
    ]
    props = body(readers)["properties"]
    assert (props["principalId"], props["principalType"], body(readers)["scope"]) == (
        "adminPrincipalId", "adminPrincipalType", "storage")
    assert doc["parameters"]["adminPrincipalId"]["default"] == ""
    passed = main_bicep["modules"]["rbac"]["config"]["params"]
    assert (passed["adminPrincipalId"], passed["adminPrincipalType"]) == ("adminPrincipalId", "adminPrincipalType")
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["adminPrincipalId"]["value"] == "${ADMIN_PRINCIPAL_ID=}"
    assert params["adminPrincipalType"]["value"] == "${ADMIN_PRINCIPAL_TYPE=User}"


# --- Function App ----------------------------------------------------------------------------------


def test_function_app_is_flex_consumption_python_311_with_scale_parameters(function_bicep: dict[str, Any],
                                                                           main_bicep: dict[str, Any]) -> None:
    (plan,) = resources(function_bicep, "Microsoft.Web/serverfarms").values()
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    (site,) = resources(function_bicep, "Microsoft.Web/sites").values()
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    scale = config["scaleAndConcurrency"]
    assert scale["instanceMemoryMB"] == "instanceMemoryMB"
    assert scale["maximumInstanceCount"] == "maximumInstanceCount"
    assert main_bicep["parameters"]["instanceMemoryMB"]["default"] == 2048
    # Explicit, so Graph's bursts share instances (and queue writes) instead of one instance per request.
    assert scale["triggers"]["http"]["perInstanceConcurrency"] == "httpPerInstanceConcurrency"
    assert main_bicep["parameters"]["httpPerInstanceConcurrency"]["default"] == 16
    assert site["properties"]["httpsOnly"] is True
    assert site["properties"]["siteConfig"]["minTlsVersion"] == "1.2"
    assert site["properties"]["siteConfig"]["ftpsState"] == "Disabled"
    assert site["tags"]["function"]["parameters"]["arg_2"]["'azd-service-name'"] == "api"
    basic = resources(function_bicep, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {r["name"]: r["properties"]["allow"] for r in basic.values()} == {"ftp": False, "scm": False}


def test_site_uses_the_declared_app_settings(function_bicep: dict[str, Any]) -> None:
    (site,) = resources(function_bicep, "Microsoft.Web/sites").values()
    assert site["properties"]["siteConfig"]["appSettings"] == "appSettingsList"
    loop = function_bicep["variables"]["appSettingsList"]["value"]["loop_type"]["detail"]["array_name"]
    assert loop == {"function": {"type": "items", "parameters": {"arg_1": "appSettings"}}}
    assert not resources(function_bicep, "Microsoft.Web/sites/config"), "declare app settings in one place"


def test_storage_settings_are_identity_based(app_settings: dict[str, Any]) -> None:
    assert STORAGE_CONNECTION not in app_settings, "no storage connection string on Azure"
    assert app_settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert app_settings[STORAGE_CLIENT_ID] == "identityClientId"
    assert app_settings["AzureWebJobsStorage__blobServiceUri"] == "blobEndpoint"
    assert app_settings[STORAGE_QUEUE_URI] == "queueEndpoint"
    assert app_settings[STORAGE_TABLE_URI] == "tableEndpoint"


def test_telemetry_settings_use_entra_auth(app_settings: dict[str, Any], main_bicep: dict[str, Any]) -> None:
    assert app_settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD;ClientId=${identityClientId}"
    assert app_settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == "applicationInsightsConnectionString"
    passed = main_bicep["modules"]["functionApp"]["config"]["params"]["applicationInsightsConnectionString"]
    assert "monitoring" in json.dumps(passed) and "connectionString" in json.dumps(passed)


def test_graph_uses_the_managed_identity(app_settings: dict[str, Any]) -> None:
    assert app_settings["GRAPH_CREDENTIAL"] == "managedidentity"
    assert app_settings["GRAPH_CLIENT_ID"] == "identityClientId"
    assert app_settings["ALLOW_LOOPBACK_CALLBACKS"] == "false"


def test_tokens_must_carry_the_apis_scope_and_come_from_the_connector(app_settings: dict[str, Any],
                                                                      main_bicep: dict[str, Any]) -> None:
    assert app_settings["AUTH_SCOPE"] == "apiScopeName"
    assert app_settings["AUTH_ALLOWED_CLIENT_IDS"] == "allowedClientIds"
    passed = main_bicep["modules"]["functionApp"]["config"]["params"]
    clients = json.dumps(passed["allowedClientIds"])
    assert "entra" in clients and "connectorAppId" in clients, "the connector's registration, from the Entra module"
    scope = json.dumps(passed["apiScopeName"])
    assert "entra" in scope and "apiScope" in scope and '"last"' in scope, "the scope's name, from its full URI"
    # The scope the registration exposes is the app's default, so the local stack and Azure agree.
    scope_value = parse("entra/graph.bicep")["variables"]["scopeValue"]["value"]
    assert scope_value == next(spec.default for spec in SPECS if spec.name == "AUTH_SCOPE")


def test_every_setting_the_app_reads_is_set(app_settings: dict[str, Any]) -> None:
    expected = {spec.name for spec in SPECS if not spec.secret}
    missing = sorted(expected - set(app_settings))
    assert not missing, (
        f"app settings {missing} (shared/adapters/settings.py SPECS) are not set on Azure: add them to appSettings in "
        "infra/modules/function.bicep (and a parameter in infra/main.bicep when the value is a choice)"
    )


def test_no_secret_setting_is_deployed(app_settings: dict[str, Any]) -> None:
    secrets = {spec.name for spec in SPECS if spec.secret}
    assert secrets, "SPECS marks GRAPH_CLIENT_SECRET secret"
    assert not secrets & set(app_settings), "secret settings must not be app settings: use the managed identity"
    for name in app_settings:
        upper = name.upper()
        assert not any(word in upper for word in ("SECRET", "PASSWORD", "ACCOUNTKEY", "SAS")), name
        if upper.endswith("CONNECTION_STRING") or upper.endswith("CONNECTIONSTRING"):
            assert name == "APPLICATIONINSIGHTS_CONNECTION_STRING", f"{name}: connection strings carry keys"


def test_no_secret_literal_in_app_settings(app_settings: dict[str, Any], function_bicep: dict[str, Any]) -> None:
    for name, value in app_settings.items():
        if is_reference(function_bicep, value):
            param = function_bicep["parameters"].get(value)
            if param is not None:
                assert not any(d["type"] == "secure" for d in param["decorators"]), f"{name} comes from a @secure()"
            continue
        text = json.dumps(value)
        for pattern in SECRET_PATTERNS:
            assert not pattern.search(text), f"app setting {name} looks like it holds a secret: {text}"


def test_no_key_is_read_anywhere_in_infra() -> None:
    for path in bicep_files():
        text = path.read_text()
        assert not re.search(r"\blist[A-Z]\w*\(", text), f"{path.name} reads keys or secrets with list*()"
        assert "@secure()" not in text, f"{path.name} takes a secret parameter"
        assert "connectionString:" not in text.replace("applicationInsightsConnectionString", ""), path.name


def _spec_default_on_azure(name: str, value: Any, function_bicep: dict[str, Any], main_bicep: dict[str, Any]) -> Any:
    """The value a fresh `azd up` gives setting ``name``, when it is a literal or a main.bicep default."""
    if isinstance(value, dict) and value.get("function", {}).get("type") == "string":
        value = value["function"]["parameters"]["value_to_convert"]
    if not is_reference(function_bicep, value):
        return value if isinstance(value, str) and "${" not in value else None
    if value not in function_bicep["parameters"]:
        return None
    passed = main_bicep["modules"]["functionApp"]["config"]["params"].get(value)
    if not (isinstance(passed, str) and passed in main_bicep["parameters"]):
        return None
    default = main_bicep["parameters"][passed]["default"]
    return None if default is None else str(default)


def test_azure_defaults_match_the_app_defaults(app_settings: dict[str, Any], function_bicep: dict[str, Any],
                                               main_bicep: dict[str, Any]) -> None:
    compared = 0
    for spec in SPECS:
        if spec.name not in app_settings or spec.default is None:
            continue
        on_azure = _spec_default_on_azure(spec.name, app_settings[spec.name], function_bicep, main_bicep)
        if on_azure is None:
            continue  # derived from a resource (identity, tenant, endpoints): checked elsewhere
        compared += 1
        assert on_azure == spec.default, f"{spec.name}: Azure default {on_azure!r} != app default {spec.default!r}"
    assert compared >= 8


def test_resync_spread_is_a_parameter_checked_against_the_schedule(app_settings: dict[str, Any],
                                                                   function_bicep: dict[str, Any],
                                                                   main_bicep: dict[str, Any]) -> None:
    # A deployer who makes resyncSchedule more frequent must be able to shorten the spread with it: the app
    # refuses to start when RESYNC_SPREAD_MINUTES is not shorter than the gap between two runs.
    setting = app_settings["RESYNC_SPREAD_MINUTES"]["function"]
    assert setting == {"type": "string", "parameters": {"value_to_convert": "resyncSpreadMinutes"}}
    assert function_bicep["parameters"]["resyncSpreadMinutes"]["type"] == "int"
    assert main_bicep["modules"]["functionApp"]["config"]["params"]["resyncSpreadMinutes"] == "resyncSpreadMinutes"
    param = main_bicep["parameters"]["resyncSpreadMinutes"]
    assert (param["type"], param["default"]) == ("int", 50)
    decorators = {d["type"]: d["argument"] for d in param["decorators"]}
    assert decorators["min_value"] == 0
    assert "shorter than the shortest gap between two resyncSchedule runs" in decorators["description"]


def test_retired_settings_are_not_deployed(app_settings: dict[str, Any]) -> None:
    assert RETIRED_SETTINGS, "ENTRA_TOKEN_URL is retired"
    assert not set(RETIRED_SETTINGS) & set(app_settings)


def test_no_flex_consumption_forbidden_settings(app_settings: dict[str, Any]) -> None:
    forbidden = {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
                 "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE", "SCM_DO_BUILD_DURING_DEPLOYMENT"}
    assert not forbidden & set(app_settings)


# --- azd -------------------------------------------------------------------------------------------


def test_azure_yaml_deploys_this_folder_as_a_python_function() -> None:
    text = (ROOT / "azure.yaml").read_text()
    assert re.search(r"^services:\n  api:\n    project: \.\n    language: python\n    host: function$", text, re.M)
    assert "./scripts/postprovision.sh" in text
    assert (ROOT / "scripts" / "postprovision.sh").exists()


def test_azure_yaml_requires_an_azd_that_bundles_bicep_for_graph_and_honours_funcignore() -> None:
    import yaml

    doc = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert doc["requiredVersions"] == {"azd": ">= 1.18.0"}
    assert "1.18.0 or later" in (INFRA / "README.md").read_text()
    # What an older azd would upload and 1.18.0 leaves out because .funcignore says so.
    ignored = (ROOT / ".funcignore").read_text().split()
    assert {"tests", "testing", "node_modules", "local.settings.json"} <= set(ignored)


def test_parameters_file_feeds_only_declared_parameters(main_bicep: dict[str, Any]) -> None:
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    unknown = sorted(set(params) - set(main_bicep["parameters"]))
    assert not unknown, f"main.parameters.json sets parameters main.bicep does not declare: {unknown}"


@pytest.mark.parametrize("output", ["FUNCTION_URL", "NOTIFICATION_URL", "LIFECYCLE_URL", "API_APP_CLIENT_ID",
                                    "API_SCOPE", "CONNECTOR_CLIENT_APP_ID", "MANAGED_IDENTITY_CLIENT_ID",
                                    "SERVICE_API_NAME", "AZURE_FUNCTION_APP_NAME", "AZURE_RESOURCE_GROUP"])
def test_outputs_azd_and_the_readme_use(main_bicep: dict[str, Any], output: str) -> None:
    assert output in main_bicep["outputs"]


def test_notification_urls_are_the_app_routes(main_bicep: dict[str, Any]) -> None:
    assert main_bicep["outputs"]["NOTIFICATION_URL"]["value"] == "${baseUrl}/api/graph/notifications"
    assert main_bicep["outputs"]["LIFECYCLE_URL"]["value"] == "${baseUrl}/api/graph/lifecycle"


def test_every_module_is_declared_in_this_repository(main_bicep: dict[str, Any]) -> None:
    for name, module in main_bicep["modules"].items():
        assert module["type"] == "local", f"module {name} comes from a registry: checkov cannot see into it"
        assert (INFRA / module["detail"]["path"]).exists()
    assert body(main_bicep["resources"]["rg"])["name"] == "rg-${environmentName}"


# --- network isolation (off by default) ----------------------------------------------------------------------


def test_network_isolation_is_a_parameter_off_by_default(main_bicep: dict[str, Any]) -> None:
    assert main_bicep["parameters"]["networkIsolation"]["default"] is False
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["networkIsolation"]["value"] == "${NETWORK_ISOLATION=false}"
    network = main_bicep["modules"]["network"]
    assert network["config"]["condition"] == "networkIsolation"
    assert network["detail"]["path"] == "modules/network.bicep"
    subnet = main_bicep["modules"]["functionApp"]["config"]["params"]["virtualNetworkSubnetId"]["operator"]
    assert subnet["operands"]["condition"] == "networkIsolation" and subnet["operands"]["false_value"] == ""
    assert "appSubnetId" in str(subnet["operands"]["true_value"])
    # Private from the first step only when it already was; tests/infra/test_network_order.py checks the second step.
    private = main_bicep["modules"]["storage"]["config"]["params"]["privateOnly"]["operator"]
    assert private == {"type": "and", "operands": {"operand_1": "networkIsolation",
                                                    "operand_2": "storageAlreadyPrivate"}}


def test_isolated_storage_refuses_public_traffic() -> None:
    storage = parse("modules/storage.bicep")
    props = body(storage["resources"]["account"])["properties"]
    access = props["publicNetworkAccess"]["operator"]["operands"]
    assert (access["condition"], access["true_value"], access["false_value"]) == ("privateOnly", "Disabled", "Enabled")
    acls = props["networkAcls"]["operator"]["operands"]
    assert acls["true_value"] == {"bypass": "None", "defaultAction": "Deny"}
    assert storage["parameters"]["privateOnly"]["default"] is False


def test_the_app_subnet_is_delegated_to_flex_consumption_and_storage_has_private_endpoints() -> None:
    network = parse("modules/network.bicep")
    app, endpoints_subnet = body(network["resources"]["vnet"])["properties"]["subnets"]
    assert app["name"] == "app"
    assert [d["properties"]["serviceName"] for d in app["properties"]["delegations"]] == ["Microsoft.App/environments"]
    assert endpoints_subnet["properties"]["privateEndpointNetworkPolicies"] == "Disabled"
    assert all("nsg" in str(s["properties"]["networkSecurityGroup"]) for s in (app, endpoints_subnet))
    # Every storage service the app and the Functions runtime use: a private endpoint and its DNS zone.
    services = network["variables"]["storageServices"]["value"]
    assert services == ["blob", "queue", "table"]
    for name in ("endpoints", "dnsZones", "dnsLinks", "dnsGroups"):
        assert network["resources"][name]["config"]["loop_type"]["detail"]["array_name"] == "storageServices", name
    (connection,) = body(network["resources"]["endpoints"])["properties"]["privateLinkServiceConnections"]
    assert connection["properties"] == {"privateLinkServiceId": "storageAccountId", "groupIds": ["service"]}
    assert body(network["resources"]["dnsZones"])["name"] == "privatelink.${service}.${environment().suffixes.storage}"
    function = parse("modules/function.bicep")
    site = body(function["resources"]["site"])["properties"]
    assert "virtualNetworkSubnetId" in str(site["virtualNetworkSubnetId"])


def test_the_outbound_path_to_graph_entra_and_application_insights_is_allowed() -> None:
    # Flex Consumption sends all outbound traffic through the integration subnet, so its security group decides;
    # HTTPS to the internet is allowed by a named rule ahead of any deny-outbound rule (infra/README.md).
    network = parse("modules/network.bicep")
    rules = {r["name"]: r["properties"] for r in body(network["resources"]["nsg"])["properties"]["securityRules"]}
    https = rules["allow-https-outbound"]
    assert (https["direction"], https["access"], https["protocol"]) == ("Outbound", "Allow", "Tcp")
    assert (https["destinationAddressPrefix"], https["destinationPortRange"]) == ("Internet", "443")
    assert https["priority"] == min(r["priority"] for r in rules.values())
    assert not [n for n, r in rules.items() if r["direction"] == "Outbound" and r["access"] == "Deny"]
    # No private link scope: Application Insights ingestion stays public (the app's connection string is used as is).
    assert not any("privateLinkScopes" in r["type"] for doc in map(parse, ("main.bicep", "modules/network.bicep",
                                                                           "modules/monitoring.bicep"))
                   for r in doc.get("resources", {}).values())
