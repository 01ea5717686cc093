"""The connector's life after `azd up`: import with pac (the documented path) or paconn (the fallback), apply a
changed definition to the connector imported before, rotate its client secret with an overlap. Against fake
az, azd, pac and paconn (tests/infra/fakes.py) that keep the app registration's secrets and the azd values.

pac's connector commands are those of https://learn.microsoft.com/power-platform/developer/cli/reference/connector
(create, update --connector-id; no client-secret option), paconn's those of
https://learn.microsoft.com/connectors/custom-connectors/paconn-cli (create/update with --secret, settings.json).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra import fakes as fake
from tests.infra.conftest import ROOT
from tests.infra.test_scripts import OUTPUTS

TENANT = "72f988bf-0000-4000-8000-0000000000aa"


@pytest.fixture
def env_name() -> Iterator[str]:
    name = f"t{os.getpid()}lc"
    yield name
    shutil.rmtree(ROOT / ".azure" / name, ignore_errors=True)


def _run(tmp_path: Path, env_name: str, script: str, *args: str, tools: tuple[str, ...] = ("az", "azd", "pac"),
         **extra: str) -> subprocess.CompletedProcess[str]:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    state.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(bin_dir, ignore_errors=True)
    fake.install(bin_dir, *tools)
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", "FAKE_STATE": str(state), "AZURE_ENV_NAME": env_name,
           "AZURE_TENANT_ID": TENANT, "AZURE_RESOURCE_GROUP": "rg-dev", **OUTPUTS, **extra}
    return subprocess.run([str(ROOT / "scripts" / script), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def _log(tmp_path: Path, name: str) -> list[str]:
    path = tmp_path / "state" / f"{name}.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return lines if name == "az" else [line.split(" | ", 1)[1] for line in lines]  # the others log "cwd | args"


def _state(tmp_path: Path, name: str) -> dict:
    path = tmp_path / "state" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_pac_imports_then_updates_the_same_connector(tmp_path: Path, env_name: str) -> None:
    created = _run(tmp_path, env_name, "import-connector.sh", "--env", "0a1b2c3d-0000-4000-8000-00000000e0e0")
    assert created.returncode == 0, created.stderr
    out = ROOT / ".azure" / env_name / "connector"
    (create,) = _log(tmp_path, "pac")
    assert create == (f"connector create --api-definition-file .azure/{env_name}/connector/apiDefinition.swagger.json "
                      f"--api-properties-file .azure/{env_name}/connector/apiProperties.json "
                      "--environment 0a1b2c3d-0000-4000-8000-00000000e0e0")
    # The id pac answers with, recorded for --update.
    assert _state(tmp_path, "azd")["POWER_PLATFORM_CONNECTOR_ID"] == "b0c1d2e3-0000-4000-8000-00000000c0de"
    # pac takes no secret: one is shown once for the Security tab, and its expiry is recorded.
    (secret,) = _state(tmp_path, "app")["passwordCredentials"]
    assert secret["secretText"] in created.stdout and "Security tab" in created.stdout
    assert _state(tmp_path, "azd")["CONNECTOR_CREDENTIAL_EXPIRES_AT"] == secret["endDateTime"]
    assert _state(tmp_path, "appsettings")["CONNECTOR_CREDENTIAL_EXPIRES_AT"] == secret["endDateTime"]
    assert json.loads((out / "apiProperties.json").read_text())["properties"]["connectionParameters"]["token"][
        "oAuthSettings"]["customParameters"]["tenantId"]["value"] == TENANT

    # A changed definition, applied to the connector imported above (its id recorded in the azd environment).
    recorded = _state(tmp_path, "azd")["POWER_PLATFORM_CONNECTOR_ID"]
    updated = _run(tmp_path, env_name, "import-connector.sh", "--update", POWER_PLATFORM_CONNECTOR_ID=recorded)
    assert updated.returncode == 0, updated.stderr
    assert _log(tmp_path, "pac")[1].startswith(f"connector update --api-definition-file .azure/{env_name}/connector/"
                                               "apiDefinition.swagger.json --api-properties-file ")
    assert _log(tmp_path, "pac")[1].endswith(f"--connector-id {recorded}")
    assert len(_state(tmp_path, "app")["passwordCredentials"]) == 1, "an update leaves the secret alone"


def test_update_needs_to_know_which_connector(tmp_path: Path, env_name: str) -> None:
    run = _run(tmp_path, env_name, "import-connector.sh", "--update")
    assert run.returncode == 1 and "--connector-id" in run.stderr and _log(tmp_path, "pac") == []


def test_pac_is_preferred_and_paconn_is_the_fallback(tmp_path: Path, env_name: str) -> None:
    both = _run(tmp_path, env_name, "import-connector.sh", tools=("az", "azd", "pac", "paconn"))
    assert both.returncode == 0 and _log(tmp_path, "pac") and not _log(tmp_path, "paconn")
    neither = _run(tmp_path / "n", env_name, "import-connector.sh", tools=("az", "azd"))
    assert neither.returncode == 1 and "pac auth create" in neither.stderr and "paconn" in neither.stderr


def test_paconn_imports_updates_and_rotation_hands_it_the_new_secret(tmp_path: Path, env_name: str) -> None:
    tools = ("az", "azd", "paconn")
    assert _run(tmp_path, env_name, "import-connector.sh", tools=tools).returncode == 0
    assert (ROOT / ".azure" / env_name / "connector" / "settings.json").exists()
    rotated = _run(tmp_path, env_name, "rotate-connector-secret.sh", tools=tools, FAKE_NOW="2026-12-07T06:00:00Z")
    assert rotated.returncode == 0, rotated.stderr
    create, update = _log(tmp_path, "paconn")
    assert create.startswith("create ") and update.startswith("update --settings settings.json --api-def ")
    first, second = _state(tmp_path, "app")["passwordCredentials"]
    assert update.endswith(f"--secret {second['secretText']}")
    for secret in (first, second):
        assert secret["secretText"] not in rotated.stdout + rotated.stderr, "handed over, never printed"
    assert _state(tmp_path, "azd")["CONNECTOR_CREDENTIAL_EXPIRES_AT"] == second["endDateTime"]


def test_rotation_keeps_both_secrets_through_the_overlap_then_removes_the_old(tmp_path: Path, env_name: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    old = {"keyId": "k-old", "displayName": "power-automate-connector", "endDateTime": "2026-12-20T00:00:00Z",
           "startDateTime": "2026-06-20T00:00:00Z", "secretText": "old"}
    other = {"keyId": "k-other", "displayName": "someone-elses", "endDateTime": "2027-01-01T00:00:00Z",
             "startDateTime": "2026-01-01T00:00:00Z", "secretText": "other"}
    (state / "app.json").write_text(json.dumps({"web": {"redirectUris": []}, "passwordCredentials": [old, other]}))
    rotated = _run(tmp_path, env_name, "rotate-connector-secret.sh", FAKE_NOW="2999-01-01T00:00:00Z")
    assert rotated.returncode == 0, rotated.stderr
    new = _state(tmp_path, "app")["passwordCredentials"][-1]
    assert new["secretText"] in rotated.stdout and "--remove-old" in rotated.stdout
    assert [c["keyId"] for c in _state(tmp_path, "app")["passwordCredentials"]] == ["k-old", "k-other", new["keyId"]]

    early = _run(tmp_path, env_name, "rotate-connector-secret.sh", "--remove-old")
    assert early.returncode == 1 and "not yet" in early.stderr
    assert len(_state(tmp_path, "app")["passwordCredentials"]) == 3

    app = _state(tmp_path, "app")
    app["passwordCredentials"][-1]["startDateTime"] = "2026-12-01T00:00:00.1234567Z"  # the overlap is over
    (state / "app.json").write_text(json.dumps(app))
    done = _run(tmp_path, env_name, "rotate-connector-secret.sh", "--remove-old")
    assert done.returncode == 0, done.stderr
    assert [c["keyId"] for c in _state(tmp_path, "app")["passwordCredentials"]] == ["k-other", new["keyId"]]
    assert f"ad app credential delete --id {OUTPUTS['CONNECTOR_CLIENT_APP_ID']} --key-id k-old" in _log(tmp_path, "az")


@pytest.mark.parametrize("script,options", [
    ("connector-secret", {"--months": "$Months", "--secret-only": "$SecretOnly", "--redirect-uri": "$RedirectUri",
                          "--adopt-redirect-uris": "$AdoptRedirectUris"}),
    ("import-connector", {"--env": "$Environment", "--tool": "$Tool", "--update": "$Update",
                          "--connector-id": "$ConnectorId"}),
    ("rotate-connector-secret", {"--months": "$Months", "--remove-old": "$RemoveOld",
                                 "--overlap-hours": "$OverlapHours"}),
])
def test_each_connector_script_has_a_powershell_twin_with_the_same_options(script: str, options: dict) -> None:
    posix = (ROOT / "scripts" / f"{script}.sh").read_text()
    twin = (ROOT / "scripts" / f"{script}.ps1").read_text()
    assert "$ErrorActionPreference = 'Stop'" in twin
    param_line = next(line for line in twin.splitlines() if line.startswith("param("))
    for option, parameter in options.items():
        assert option in posix and parameter in param_line, (script, option, parameter)
    for name in ("CONNECTOR_REDIRECT_URIS", "CONNECTOR_CREDENTIAL_EXPIRES_AT", "POWER_PLATFORM_CONNECTOR_ID"):
        assert (f"azd env set {name}" in posix) == (f"azd env set {name}" in twin), (script, name)
