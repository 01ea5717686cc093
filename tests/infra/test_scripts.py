"""The azd hook and admin scripts under scripts/: they run, read azd outputs, and print no secret."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.infra import fakes as fake
from tests.infra.conftest import INFRA, ROOT, body, parse

OUTPUTS = {
    "AZURE_FUNCTION_APP_NAME": "func-bookings-abc",
    "FUNCTION_URL": "https://func-bookings-abc.azurewebsites.net",
    "NOTIFICATION_URL": "https://func-bookings-abc.azurewebsites.net/api/graph/notifications",
    "LIFECYCLE_URL": "https://func-bookings-abc.azurewebsites.net/api/graph/lifecycle",
    "API_APP_CLIENT_ID": "11111111-1111-1111-1111-111111111111",
    "API_APP_ID_URI": "api://tenant/bookings-triggers-abc",
    "API_SCOPE": "api://tenant/bookings-triggers-abc/user_impersonation",
    "CONNECTOR_CLIENT_APP_ID": "22222222-2222-2222-2222-222222222222",
}


def _run(script: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], **OUTPUTS, **extra}
    return subprocess.run([str(ROOT / "scripts" / script)], env=env, capture_output=True, text=True, timeout=30,
                          check=False)


def test_postprovision_prints_the_urls_and_next_steps() -> None:
    run = _run("postprovision.sh", GRAPH_APP_ROLES_ASSIGNED="true")
    assert run.returncode == 0, run.stderr
    assert OUTPUTS["NOTIFICATION_URL"] in run.stdout and OUTPUTS["CONNECTOR_CLIENT_APP_ID"] in run.stdout
    assert "scripts/connector-secret.sh" in run.stdout
    assert "ACTION NEEDED" not in run.stdout


def test_postprovision_asks_for_the_admin_grants_when_they_were_not_made() -> None:
    run = _run("postprovision.sh", GRAPH_APP_ROLES_ASSIGNED="false")
    assert run.returncode == 0, run.stderr
    assert "ACTION NEEDED" in run.stdout and "scripts/grant-graph-permissions.sh" in run.stdout


def test_scripts_use_only_outputs_the_bicep_declares() -> None:
    outputs = set(parse("main.bicep")["outputs"])
    for name in ("MANAGED_IDENTITY_PRINCIPAL_ID", "GRAPH_APP_ROLES_ASSIGNED", "ENABLE_CANCEL_WITH_REASON",
                 "HEALTH_URL", *OUTPUTS):
        assert name in outputs, name
    for script in ("postprovision.sh", "grant-graph-permissions.sh", "connector-secret.sh", "connector-files.sh"):
        path = ROOT / "scripts" / script
        assert os.access(path, os.X_OK), f"{script} is not executable"
        assert "set -e" in path.read_text()


def test_bash_scripts_have_valid_syntax() -> None:
    for script in ("grant-graph-permissions.sh", "connector-secret.sh", "connector-files.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], check=True, timeout=30)
    subprocess.run(["sh", "-n", str(ROOT / "scripts" / "postprovision.sh")], check=True, timeout=30)


def test_deployment_readme_covers_the_journey_and_names_real_files() -> None:
    import re

    text = (ROOT / "infra" / "README.md").read_text()
    for step in ("azd auth login", "azd up", "azd down --purge", "scripts/grant-graph-permissions.sh",
                 "scripts/connector-secret.sh", "ASSIGN_GRAPH_APP_ROLES"):
        assert step in text, step
    for kql in set(re.findall(r"`([\w-]+\.kql)`", text)):
        assert (ROOT / "infra" / "queries" / kql).exists(), kql
    outputs = set(parse("main.bicep")["outputs"])
    recorded_by_scripts = {name for script in (ROOT / "scripts").glob("*.sh")
                           for name in re.findall(r"azd env set (\w+)", script.read_text())}
    for name in re.findall(r"`([A-Z][A-Z_]{6,})`", text):
        if name.startswith(("FUNCTION_INSTANCE", "FUNCTION_MAXIMUM", "FUNCTION_HTTP", "ASSIGN_", "ENABLE_", "MAX_",
                            "ALERT_", "LOG_", "CONNECTOR_REDIRECT_", "CONNECTOR_CREDENTIAL_", "ADMIN_", "MONTHLY_",
                            "STORAGE_DELETE_")):
            assert f"${{{name}" in (ROOT / "infra" / "main.parameters.json").read_text(), name
        elif name in recorded_by_scripts:
            continue  # an azd value a script sets (azd env set), e.g. POWER_PLATFORM_CONNECTOR_ID
        elif name not in ("AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_JWKS_URL", "AUTH_SCOPE", "AUTH_ALLOWED_CLIENT_IDS"):
            assert name in outputs, f"README names {name}, which main.bicep does not output"


def test_connector_files_sign_in_against_the_deployments_tenant(tmp_path) -> None:
    import json
    import re

    properties = json.loads((ROOT / "connector" / "apiProperties.json").read_text())["properties"]
    custom = properties["connectionParameters"]["token"]["oAuthSettings"]["customParameters"]
    # Both registrations are single-tenant: Entra refuses "common" for them (AADSTS50194).
    assert custom["tenantId"]["value"] == "<AZURE_TENANT_ID>"

    tenant = "72f988bf-0000-4000-8000-0000000000aa"
    env = {"PATH": os.environ["PATH"], **OUTPUTS, "AZURE_TENANT_ID": tenant}
    run = subprocess.run([str(ROOT / "scripts" / "connector-files.sh"), str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=30, check=False)
    assert run.returncode == 0, run.stderr
    filled = json.loads((tmp_path / "apiProperties.json").read_text())["properties"]
    oauth = filled["connectionParameters"]["token"]["oAuthSettings"]
    assert oauth["customParameters"]["tenantId"]["value"] == tenant
    assert oauth["clientId"] == OUTPUTS["CONNECTOR_CLIENT_APP_ID"]
    assert oauth["scopes"] == [OUTPUTS["API_SCOPE"]]
    assert oauth["customParameters"]["resourceUri"]["value"] == OUTPUTS["API_APP_ID_URI"]
    assert oauth["properties"]["AzureActiveDirectoryResourceId"] == OUTPUTS["API_APP_ID_URI"]
    swagger = json.loads((tmp_path / "apiDefinition.swagger.json").read_text())
    assert swagger["host"] == "func-bookings-abc.azurewebsites.net" and swagger["basePath"] == "/api"
    assert all(f"/{tenant}/" in url for s in swagger["securityDefinitions"].values()
               for url in (s["authorizationUrl"], s["tokenUrl"]))
    for name in ("apiProperties.json", "apiDefinition.swagger.json"):
        text = (tmp_path / name).read_text()
        assert "/common/" not in text and not re.search(r"<[A-Z_]+>", text), name
    assert tenant in run.stdout and "paconn create" in run.stdout


def test_connector_files_refuse_to_run_without_the_tenant(tmp_path) -> None:
    env = {"PATH": os.environ["PATH"], **OUTPUTS}
    run = subprocess.run([str(ROOT / "scripts" / "connector-files.sh"), str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=30, check=False)
    assert run.returncode != 0 and "AZURE_TENANT_ID" in run.stderr
    assert not (tmp_path / "apiProperties.json").exists()


# --- the deployment traps (infra/README.md "Deployment traps"), against fake az / azd / paconn -------------

MI = "3f1c0000-0000-4000-8000-00000000mi01"


def _hook(script: str, tmp_path: Path, fakes: tuple[str, ...] = ("az", "azd"), stdin: Any = subprocess.DEVNULL,
          **extra: str) -> subprocess.CompletedProcess[str]:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    state.mkdir(parents=True, exist_ok=True)
    fake.install(bin_dir, *fakes)
    env = {"PATH": fake.path_with(bin_dir), "FAKE_STATE": str(state), "AZURE_ENV_NAME": "dev",
           "MANAGED_IDENTITY_PRINCIPAL_ID": MI, "GRANT_RETRY_SECONDS": "0", "ALERT_EMAIL": "ops@contoso.test",
           **OUTPUTS, **extra}
    return subprocess.run([str(ROOT / "scripts" / script)], env=env, capture_output=True, text=True, timeout=60,
                          check=False, stdin=stdin)


def _log(tmp_path: Path, name: str) -> list[str]:
    path = tmp_path / "state" / f"{name}.log"
    return path.read_text().splitlines() if path.exists() else []


def test_preprovision_stops_on_soft_deleted_registrations_with_the_commands_that_fix_it(tmp_path: Path) -> None:
    deleted = "0bd1e7ed-0000-4000-8000-000000000001\tBookings triggers API (dev)\t2026-11-20T10:00:00Z"
    run = _hook("preprovision.sh", tmp_path, FAKE_AZ_DELETED=deleted)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "deleted less than 30 days ago" in run.stdout
    graph = "https://graph.microsoft.com/v1.0/directory/deletedItems/0bd1e7ed-0000-4000-8000-000000000001"
    assert f"az rest --method POST --url {graph}/restore" in run.stdout
    assert f"az rest --method DELETE --url {graph}" in run.stdout
    # It looked for this environment's display names, as infra/entra/graph.bicep sets them.
    (query,) = [c for c in _log(tmp_path, "az") if "deletedItems" in c]
    assert "Bookings triggers API (dev)" in query and "Bookings triggers connector (dev)" in query
    graph_bicep = (INFRA / "entra" / "graph.bicep").read_text()
    assert "'Bookings triggers API (${environmentName})'" in graph_bicep
    assert "'Bookings triggers connector (${environmentName})'" in graph_bicep


def test_preprovision_turns_the_admin_grants_off_for_a_deployer_without_the_role(tmp_path: Path) -> None:
    run = _hook("preprovision.sh", tmp_path, FAKE_AZ_ROLES="88d8e3e3-8f55-4a1e-953a-9b9898b8876b")  # Directory Readers
    assert run.returncode == 0, run.stderr
    assert [c.split(" | ")[1] for c in _log(tmp_path, "azd")] == ["env set ASSIGN_GRAPH_APP_ROLES false"]
    assert "ASSIGN_GRAPH_APP_ROLES is now false" in run.stdout
    # ... which the parameters file hands to Bicep, where it gates every admin grant.
    assert "${ASSIGN_GRAPH_APP_ROLES=true}" in (INFRA / "main.parameters.json").read_text()


def test_preprovision_leaves_the_grants_on_for_a_privileged_role_administrator(tmp_path: Path) -> None:
    run = _hook("preprovision.sh", tmp_path, FAKE_AZ_ROLES="e8611ab8-c189-46e8-94e1-60213ab1f814")
    assert run.returncode == 0, run.stderr
    assert _log(tmp_path, "azd") == [] and "ok: you may make the admin grants" in run.stdout


def test_preprovision_asks_nothing_when_the_grants_are_off_and_warns_without_az(tmp_path: Path) -> None:
    run = _hook("preprovision.sh", tmp_path, ASSIGN_GRAPH_APP_ROLES="false")
    assert run.returncode == 0 and not any("transitiveMemberOf" in c for c in _log(tmp_path, "az"))
    signed_out = _hook("preprovision.sh", tmp_path / "signed-out", FAKE_AZ_SIGNED_OUT="1")
    assert signed_out.returncode == 0 and "azd env set ASSIGN_GRAPH_APP_ROLES false" in signed_out.stdout


def test_first_provision_grants_the_new_identity_once_entra_knows_it(tmp_path: Path) -> None:
    run = _hook("postprovision.sh", tmp_path, GRAPH_APP_ROLES_ASSIGNED="true",
                MANAGED_IDENTITY_GRAPH_ROLES_ASSIGNED="false", FAKE_AZ_NOT_REPLICATED="2")
    assert run.returncode == 0, run.stderr
    calls = _log(tmp_path, "az")
    assert sum(c.endswith("/appRoleAssignments --query value[?resourceId=='9a1f0000-0000-4000-8000-00000000gsp1']"
                          ".appRoleId -o tsv") for c in calls) == 3  # two "does not exist", then found
    posts = [c for c in calls if c.endswith("--output none") and "/appRoleAssignedTo" in c]
    granted = [p.split('"appRoleId": "')[1].split('"')[0] for p in posts]
    assert granted == ["role-Calendars.Read", "role-Bookings.Read.All"]
    assert all(f'"principalId": "{MI}"' in p for p in posts)
    assert f"ad app permission admin-consent --id {OUTPUTS['CONNECTOR_CLIENT_APP_ID']}" in calls
    assert f"ad app permission admin-consent --id {OUTPUTS['API_APP_CLIENT_ID']}" in calls
    assert "waiting for Entra to replicate" in run.stderr and "ACTION NEEDED" not in run.stdout


def test_a_grant_the_deployer_may_not_make_still_deploys_and_prints_the_commands(tmp_path: Path) -> None:
    run = _hook("postprovision.sh", tmp_path, GRAPH_APP_ROLES_ASSIGNED="true",
                MANAGED_IDENTITY_GRAPH_ROLES_ASSIGNED="false", FAKE_AZ_DENY="1")
    assert run.returncode == 0, run.stderr  # azd goes on to deploy the app
    assert "ACTION NEEDED" in run.stdout and "Authorization_RequestDenied" in run.stderr
    assert "scripts/grant-graph-permissions.sh" in run.stdout
    assert f"az ad app permission admin-consent --id {OUTPUTS['API_APP_CLIENT_ID']}" in run.stdout
    assert sum("/appRoleAssignedTo" in c for c in _log(tmp_path, "az")) == 1  # a 403 is not retried


def test_grants_left_to_an_administrator_are_printed_not_attempted(tmp_path: Path) -> None:
    run = _hook("postprovision.sh", tmp_path, GRAPH_APP_ROLES_ASSIGNED="false",
                MANAGED_IDENTITY_GRAPH_ROLES_ASSIGNED="false")
    assert run.returncode == 0, run.stderr
    assert _log(tmp_path, "az") == []
    for command in ("scripts/grant-graph-permissions.sh",
                    f"az ad app permission admin-consent --id {OUTPUTS['CONNECTOR_CLIENT_APP_ID']}",
                    f"az ad app permission admin-consent --id {OUTPUTS['API_APP_CLIENT_ID']}", MI):
        assert command in run.stdout, command


def test_bicep_grants_the_identity_only_once_it_existed_before(main_bicep: dict[str, Any]) -> None:
    graph = parse("entra/graph.bicep")
    assigned = graph["variables"]["assignedRoles"]["value"]["operator"]
    assert assigned["type"] == "conditional" and assigned["operands"]["false_value"] == []
    assert str(assigned["operands"]["condition"]).count("assign") == 2  # both switches
    gate = str(main_bicep["modules"]["entra"]["config"]["params"]["assignManagedIdentityRoles"])
    assert "previousManagedIdentityPrincipalId" in gate and "principalId" in gate and "assignGraphAppRoles" in gate
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["previousManagedIdentityPrincipalId"]["value"] == "${MANAGED_IDENTITY_PRINCIPAL_ID=}"
    assert "MANAGED_IDENTITY_GRAPH_ROLES_ASSIGNED" in main_bicep["outputs"]


def test_connector_imports_in_one_command_with_a_secret_nobody_sees(tmp_path: Path) -> None:
    tenant = "72f988bf-0000-4000-8000-0000000000aa"
    run = _hook("import-connector.sh", tmp_path, fakes=("az", "paconn"), AZURE_TENANT_ID=tenant,
                AZURE_ENV_NAME=f"t{os.getpid()}")
    out = ROOT / ".azure" / f"t{os.getpid()}" / "connector"
    try:
        assert run.returncode == 0, run.stderr
        (call,) = _log(tmp_path, "paconn")
        cwd, args = call.split(" | ")
        assert Path(cwd) == out  # paconn writes its settings.json there, git-ignored
        assert args.startswith("create --api-def apiDefinition.swagger.json --api-prop apiProperties.json --secret ")
        properties = json.loads((out / "apiProperties.json").read_text())["properties"]
        oauth = properties["connectionParameters"]["token"]["oAuthSettings"]
        assert oauth["customParameters"]["tenantId"]["value"] == tenant
        assert oauth["clientId"] == OUTPUTS["CONNECTOR_CLIENT_APP_ID"]
        assert "s3cr3t-value" in args and "s3cr3t-value" not in run.stdout + run.stderr
        assert not list(out.glob("*secret*")) and "s3cr3t" not in "".join(p.read_text() for p in out.glob("*.json"))
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def test_connector_title_fits_power_platforms_limit() -> None:
    # paconn create names the connector by info.title; Power Platform refuses names over 30 characters.
    title = json.loads((ROOT / "connector" / "apiDefinition.swagger.json").read_text())["info"]["title"]
    assert 0 < len(title) <= 30, title


def test_every_hook_has_a_powershell_twin_and_the_twins_read_declared_outputs(main_bicep: dict[str, Any]) -> None:
    import yaml

    hooks = yaml.safe_load((ROOT / "azure.yaml").read_text())["hooks"]
    assert set(hooks) == {"preprovision", "postprovision"}
    for name, hook in hooks.items():
        assert hook["posix"]["shell"] == "sh" and hook["windows"]["shell"] == "pwsh", name
        assert hook["posix"]["run"] == f"./scripts/{name}.sh" and hook["windows"]["run"] == f"./scripts/{name}.ps1"
        assert hook["windows"]["continueOnError"] is False
    outputs = set(main_bicep["outputs"])
    for script in ("preprovision", "postprovision", "grant-graph-permissions", "import-connector"):
        twin = ROOT / "scripts" / f"{script}.ps1"
        text = twin.read_text()
        assert "$ErrorActionPreference = 'Stop'" in text, script
        for required in re.findall(r"Require-AzdValue @\(([^)]*)\)", text):
            names = set(re.findall(r"'([A-Z_]+)'", required))
            assert names <= outputs, f"{twin.name} requires {names - outputs}, which main.bicep does not output"


# --- alerts reach a person: ALERT_EMAIL is asked for, or the deployment stops (scripts/preprovision.*) ---------


def test_preprovision_without_a_terminal_stops_until_alert_email_is_set(tmp_path: Path) -> None:
    run = _hook("preprovision.sh", tmp_path, ALERT_EMAIL="")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "STOP: ALERT_EMAIL is not set" in run.stdout
    assert "azd env set ALERT_EMAIL ops@contoso.com" in run.stdout
    assert _log(tmp_path, "azd") == [] and _log(tmp_path, "az") == []  # nothing else ran


def test_preprovision_refuses_what_is_not_an_address_list(tmp_path: Path) -> None:
    for i, value in enumerate(("nobody", "ops@contoso", "ops@contoso.com,", "a@b.com,,c@d.com", "a b@c.com")):
        run = _hook("preprovision.sh", tmp_path / str(i), ALERT_EMAIL=value)
        assert run.returncode == 1 and "is not a comma-separated list" in run.stdout, value
    ok = _hook("preprovision.sh", tmp_path / "ok", ALERT_EMAIL="a@contoso.com,b@fabrikam.co.jp",
               ASSIGN_GRAPH_APP_ROLES="false")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert _log(tmp_path / "ok", "azd") == []  # already set: not written again


def test_preprovision_at_a_terminal_asks_and_saves_alert_email(tmp_path: Path) -> None:
    import pty

    # azd runs the hook with the console's stdin (azure.yaml: interactive: true): a terminal.
    assert all(hook["interactive"] is True for hook in _hooks()["preprovision"].values())
    controller, terminal = pty.openpty()
    try:
        os.write(controller, b"ops@contoso.test\n")
        run = _hook("preprovision.sh", tmp_path, stdin=terminal, ALERT_EMAIL="", ASSIGN_GRAPH_APP_ROLES="false")
    finally:
        os.close(terminal)
        os.close(controller)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "E-mail address(es) that receive them" in run.stdout
    assert [c.split(" | ")[1] for c in _log(tmp_path, "azd")] == ["env set ALERT_EMAIL ops@contoso.test"]


def _hooks() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((ROOT / "azure.yaml").read_text())["hooks"]


def test_no_deployment_has_an_action_group_without_a_receiver(main_bicep: dict[str, Any]) -> None:
    # The parameter has no default and refuses an empty value; azd hands it ALERT_EMAIL, with no default either.
    param = main_bicep["parameters"]["alertEmail"]
    assert param.get("default") is None
    assert {"type": "min_length", "argument": 3} in param["decorators"]
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["alertEmail"]["value"] == "${ALERT_EMAIL}"
    # What main hands the alerts module comes from it, and the module refuses an empty list ...
    assert main_bicep["modules"]["alerts"]["config"]["params"]["alertRecipients"] == "alertRecipients"
    assert "alertEmail" in json.dumps(main_bicep["variables"]["alertRecipients"])
    alerts = parse("modules/alerts.bicep")
    decorators = alerts["parameters"]["alertRecipients"]["decorators"]
    assert any(d["type"] == "min_length" and d["argument"] == 1 for d in decorators)
    # ... whose one action group has a receiver per recipient, unconditionally, and every rule notifies it.
    (group,) = [r for r in alerts["resources"].values() if r["type"].lower() == "microsoft.insights/actiongroups"]
    receivers = group["config"]["properties"]["emailReceivers"]
    assert receivers["loop_type"]["detail"]["array_name"] == "alertRecipients" and receivers["condition"] is None
    assert receivers["config"]["emailAddress"] == "address"
    for name, res in alerts["resources"].items():
        if res["type"].lower() in ("microsoft.insights/scheduledqueryrules", "microsoft.insights/metricalerts"):
            actions = body(res)["properties"]["actions"]
            notified = actions["actionGroups"] if "actionGroups" in actions else [a["actionGroupId"] for a in actions]
            assert notified == [{"operator": {"type": "property_accessor",
                                              "operands": {"operand_1": "actionGroup", "operand_2": "id"}}}], name


def test_the_powershell_twin_asks_for_alert_email_too() -> None:
    text = (ROOT / "scripts" / "preprovision.ps1").read_text()
    assert "[Console]::IsInputRedirected" in text and "Read-Host" in text
    assert "azd env set ALERT_EMAIL $alertEmail" in text and "azd env set ALERT_EMAIL ops@contoso.com" in text
    assert text.index("ALERT_EMAIL") < text.index("Get-Command az")  # before, and whatever, the az checks


# --- network isolation needs the Microsoft.App resource provider (scripts/preprovision.*) ------------------------

SUBSCRIPTION = "0b5c0000-0000-4000-8000-0000000000sb"
REGISTER = f"az provider register --namespace Microsoft.App --subscription {SUBSCRIPTION} --wait"


def _isolated(tmp_path: Path, answer: bytes | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
    import pty

    env = {"NETWORK_ISOLATION": "true", "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION, "ASSIGN_GRAPH_APP_ROLES": "false",
           **extra}
    if answer is None:
        return _hook("preprovision.sh", tmp_path, **env)
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer)
        return _hook("preprovision.sh", tmp_path, stdin=terminal, **env)
    finally:
        os.close(terminal)
        os.close(controller)


def _provider_calls(tmp_path: Path) -> list[str]:
    return [c for c in _log(tmp_path, "az") if c.startswith("provider ")]


def test_isolation_without_a_terminal_stops_when_microsoft_app_is_not_registered(tmp_path: Path) -> None:
    run = _isolated(tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "STOP: NETWORK_ISOLATION is on" in run.stdout and f"    {REGISTER}" in run.stdout
    assert "azd env set NETWORK_ISOLATION false" in run.stdout
    # It looked in azd's subscription, and registered nothing without being asked.
    assert _provider_calls(tmp_path) == [f"provider show --namespace Microsoft.App --subscription {SUBSCRIPTION} "
                                         "--query registrationState --output tsv"]


def test_isolation_at_a_terminal_registers_microsoft_app_when_the_user_agrees(tmp_path: Path) -> None:
    run = _isolated(tmp_path, b"y\n")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Register it now" in run.stdout and "ok: registered the Microsoft.App resource provider" in run.stdout
    assert _provider_calls(tmp_path)[-1] == REGISTER.removeprefix("az ")
    assert (tmp_path / "state" / "provider-Microsoft.App").read_text() == "Registered"
    # The next run finds it registered and asks nothing.
    again = _isolated(tmp_path)
    assert again.returncode == 0 and "ok: the Microsoft.App resource provider is registered" in again.stdout


def test_isolation_at_a_terminal_stops_when_the_user_declines(tmp_path: Path) -> None:
    for i, answer in enumerate((b"n\n", b"\n")):
        run = _isolated(tmp_path / str(i), answer)
        assert run.returncode == 1 and f"    {REGISTER}" in run.stdout, run.stdout
        assert not any(c.startswith("provider register") for c in _provider_calls(tmp_path / str(i)))


def test_isolation_stops_with_the_command_when_registering_is_not_allowed(tmp_path: Path) -> None:
    run = _isolated(tmp_path, b"y\n", FAKE_AZ_PROVIDER_DENY="1")
    assert run.returncode == 1 and "registering Microsoft.App failed" in run.stdout and REGISTER in run.stdout
    assert "AuthorizationFailed" in run.stderr


def test_a_registration_under_way_is_not_taken_for_done(tmp_path: Path) -> None:
    run = _isolated(tmp_path, FAKE_AZ_PROVIDER_STATE="Registering")
    assert run.returncode == 1 and "(Registering)" in run.stdout


def test_no_provider_check_without_isolation_and_a_warning_when_az_is_signed_out(tmp_path: Path) -> None:
    run = _hook("preprovision.sh", tmp_path, ASSIGN_GRAPH_APP_ROLES="false")
    assert run.returncode == 0 and _provider_calls(tmp_path) == []
    registered = _isolated(tmp_path / "registered", FAKE_AZ_PROVIDER_STATE="Registered")
    assert registered.returncode == 0 and not any("register " in c for c in _provider_calls(tmp_path / "registered"))
    signed_out = _isolated(tmp_path / "signed-out", FAKE_AZ_SIGNED_OUT="1")
    assert signed_out.returncode == 0
    assert "az provider show --namespace Microsoft.App --query registrationState" in signed_out.stdout


def test_the_powershell_twin_checks_microsoft_app_too() -> None:
    text = (ROOT / "scripts" / "preprovision.ps1").read_text()
    assert "az provider show --namespace Microsoft.App" in text and "--query registrationState" in text
    assert "az provider register --namespace Microsoft.App" in text and "--wait" in text
    assert "$env:NETWORK_ISOLATION" in text and "$env:AZURE_SUBSCRIPTION_ID" in text
    block = text[text.index("# 3."):]
    assert "[Console]::IsInputRedirected" in block and "Read-Host" in block and "exit 1" in block
