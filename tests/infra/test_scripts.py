"""The azd hook and admin scripts under scripts/: they run, read azd outputs, and print no secret."""

from __future__ import annotations

import os
import subprocess

from tests.infra.conftest import ROOT, parse

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
    for name in re.findall(r"`([A-Z][A-Z_]{6,})`", text):
        if name.startswith(("FUNCTION_INSTANCE", "FUNCTION_MAXIMUM", "FUNCTION_HTTP", "ASSIGN_", "ENABLE_", "MAX_",
                            "ALERT_", "LOG_")):
            assert f"${{{name}" in (ROOT / "infra" / "main.parameters.json").read_text(), name
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
