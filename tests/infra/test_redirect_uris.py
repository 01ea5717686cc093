"""A second `azd provision` keeps every redirect URL of the connector client (issue: AADSTS50011 after it).

The Microsoft Graph Bicep extension deploys declared state: every provision makes the connector client's
web.redirectUris exactly what infra/entra/graph.bicep declares (msgraph-bicep-types#197;
https://learn.microsoft.com/graph/templates/concept-uniquely-named-resources). ``_provision`` below plays that
part: it resolves infra/main.parameters.json from the azd environment as azd does (``${NAME=default}``,
https://learn.microsoft.com/azure/developer/azure-developer-cli/manage-environment-variables), evaluates the
expressions main.bicep and graph.bicep give the list (tests/infra/bicep_eval.py) and replaces the fake app
registration's list with the result. The script runs against fake az and azd (tests/infra/fakes.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from tests.infra import fakes as fake
from tests.infra.bicep_eval import evaluate
from tests.infra.conftest import INFRA, ROOT, parse

GLOBAL = "https://global.consent.azure-apim.net/redirect"
PER_CONNECTOR = "https://europe-002.consent.azure-apim.net/redirect/bookings-5f-2dtriggers-5f1234567890abcdef"
APP_ID = "22222222-2222-2222-2222-222222222222"


def _azd_values(state: Path) -> dict[str, str]:
    path = state / "azd.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _app(state: Path) -> dict:
    return json.loads((state / "app.json").read_text())


def _parameters(azd_env: dict[str, str]) -> dict[str, str]:
    """main.parameters.json with ``${NAME}`` / ``${NAME=default}`` replaced from the azd environment."""
    def value(match: re.Match[str]) -> str:
        name, _, default = match.group(1).partition("=")
        return azd_env.get(name, default)

    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    return {name: re.sub(r"\$\{([^}]+)\}", value, spec["value"]) for name, spec in params.items()}


def _declared_redirect_uris(azd_env: dict[str, str]) -> list[str]:
    main, graph = parse("main.bicep"), parse("entra/graph.bicep")
    main_scope = {name: p.get("default") for name, p in main["parameters"].items()} | _parameters(azd_env)
    passed = main["modules"]["entra"]["config"]["params"]
    graph_scope = {name: p.get("default") for name, p in graph["parameters"].items()}
    graph_scope |= {name: evaluate(value, main_scope) for name, value in passed.items()
                    if name == "connectorRedirectUris"}
    for name in ("connectorRedirectUri", "perConnectorRedirectUris"):  # in the file's order
        graph_scope[name] = evaluate(graph["variables"][name]["value"], graph_scope)
    connector = graph["resources"]["connectorApp"]["config"]
    return evaluate(connector["web"]["redirectUris"], graph_scope)


def _provision(state: Path) -> None:
    """What `azd provision` does to the app registration: its redirect URLs become the declared ones."""
    app_file = state / "app.json"
    app = json.loads(app_file.read_text()) if app_file.exists() else {"web": {}, "passwordCredentials": []}
    app["web"]["redirectUris"] = _declared_redirect_uris(_azd_values(state))
    app_file.write_text(json.dumps(app))


def _script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    fake.install(bin_dir, "az", "azd")
    env = {"PATH": fake.path_with(bin_dir), "FAKE_STATE": str(state), "AZURE_FUNCTION_APP_NAME": "func-bookings-abc",
           "CONNECTOR_CLIENT_APP_ID": APP_ID, "AZURE_ENV_NAME": "dev"}
    return subprocess.run([str(ROOT / "scripts" / "connector-secret.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=30, check=False)


def test_a_fresh_environment_declares_the_global_redirect_only(tmp_path: Path) -> None:
    assert _declared_redirect_uris({}) == [GLOBAL]
    assert _declared_redirect_uris({"CONNECTOR_REDIRECT_URIS": " , "}) == [GLOBAL], "no empty redirect URL"


def test_a_second_provision_keeps_the_per_connector_redirect_url(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    _provision(state)  # the first azd up
    assert _app(state)["web"]["redirectUris"] == [GLOBAL]

    run = _script(tmp_path, "--redirect-uri", PER_CONNECTOR)
    assert run.returncode == 0, run.stderr
    assert _app(state)["web"]["redirectUris"] == [GLOBAL, PER_CONNECTOR]  # sign-ins work at once
    assert _azd_values(state)["CONNECTOR_REDIRECT_URIS"] == PER_CONNECTOR

    _provision(state)  # the second azd up
    assert _app(state)["web"]["redirectUris"] == [GLOBAL, PER_CONNECTOR]
    # A second connector (another Power Platform environment) adds to the list; the same URL twice does not.
    other = "https://unitedstates-002.consent.azure-apim.net/redirect/bookings-5f-2dtriggers-5fffff"
    assert _script(tmp_path, "--redirect-uri", other).returncode == 0
    assert _script(tmp_path, "--redirect-uri", PER_CONNECTOR).returncode == 0
    _provision(state)
    assert _app(state)["web"]["redirectUris"] == [GLOBAL, PER_CONNECTOR, other]


def test_redirect_urls_added_by_an_earlier_version_are_adopted_before_the_next_provision(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # The earlier script added the URL to the registration only: the next provision would remove it.
    (state / "app.json").write_text(json.dumps({"web": {"redirectUris": [GLOBAL, PER_CONNECTOR]},
                                                "passwordCredentials": []}))
    assert _declared_redirect_uris(_azd_values(state)) == [GLOBAL]
    run = _script(tmp_path, "--adopt-redirect-uris")
    assert run.returncode == 0, run.stderr
    _provision(state)
    assert _app(state)["web"]["redirectUris"] == [GLOBAL, PER_CONNECTOR]


def test_a_redirect_url_must_be_https_and_recording_it_needs_azd(tmp_path: Path) -> None:
    assert _script(tmp_path, "--redirect-uri", "http://example.com/redirect").returncode == 2
    assert _script(tmp_path, "--redirect-uri", "https://a.example/x,https://b.example/y").returncode == 2
    bin_dir, state = tmp_path / "only-az", tmp_path / "state2"
    fake.install(bin_dir, "az")
    run = subprocess.run([str(ROOT / "scripts" / "connector-secret.sh"), "--redirect-uri", PER_CONNECTOR],
                         env={"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", "FAKE_STATE": str(state),
                              "AZURE_FUNCTION_APP_NAME": "f", "CONNECTOR_CLIENT_APP_ID": APP_ID},
                         capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 1 and "CONNECTOR_REDIRECT_URIS" in run.stderr
    assert not (state / "app.json").exists(), "not added out of band when it cannot be recorded"


def test_the_preprovision_hook_adopts_them_on_an_upgrade_and_only_then(tmp_path: Path) -> None:
    from tests.infra.test_scripts import _hook

    upgraded = tmp_path / "upgrade"
    (upgraded / "state").mkdir(parents=True)
    # An earlier version's script added the URL to the registration only, and recorded nothing.
    (upgraded / "state" / "app.json").write_text(json.dumps({"web": {"redirectUris": [GLOBAL, PER_CONNECTOR]},
                                                             "passwordCredentials": []}))
    run = _hook("preprovision.sh", upgraded, ASSIGN_GRAPH_APP_ROLES="false")
    assert run.returncode == 0, run.stdout + run.stderr
    assert _azd_values(upgraded / "state")["CONNECTOR_REDIRECT_URIS"] == PER_CONNECTOR
    _provision(upgraded / "state")  # the provision that follows the hook keeps it
    assert _app(upgraded / "state")["web"]["redirectUris"] == [GLOBAL, PER_CONNECTOR]

    # Once declared (even as nothing), the hook leaves the list to the environment: a URL removed from
    # CONNECTOR_REDIRECT_URIS on purpose is not brought back.
    declared = tmp_path / "declared"
    (declared / "state").mkdir(parents=True)
    (declared / "state" / "app.json").write_text((upgraded / "state" / "app.json").read_text())
    run = _hook("preprovision.sh", declared, ASSIGN_GRAPH_APP_ROLES="false", CONNECTOR_REDIRECT_URIS="")
    assert run.returncode == 0 and "CONNECTOR_REDIRECT_URIS" not in _azd_values(declared / "state")
