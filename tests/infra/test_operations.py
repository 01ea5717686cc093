"""docs/operations.md, the runbook: every `az`/`azd` command in it runs, against stand-ins that know what
`azd up` deploys (the names derived here from the Bicep, as azd would output them) and what each `az` command
requires (its reference page); every query it sends runs over the columns Application Insights stores; every
alert of infra/modules/alerts.bicep has its section."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import INFRA, ROOT, body, parse

RUNBOOK = ROOT / "docs" / "operations.md"
TOKEN, ENV = "abc123xyz", "dev"
SUBSCRIPTION = "00000000-0000-4000-8000-0000000000s1"
PRINCIPAL = "3f1c0000-0000-4000-8000-00000000mi01"


def _resolve(template: str, names: dict[str, str]) -> str:
    """A Bicep string as pycep renders it ('rg-${environmentName}'), with the names filled in."""
    return re.sub(r"\$\{(\w+)\}", lambda m: names[m.group(1)], template.strip("'"))


def deployed() -> dict[str, Any]:
    """What `azd up` creates, by kind, named as the Bicep names it (resourceToken = TOKEN)."""
    main = parse("main.bicep")
    names = {"resourceToken": TOKEN, "environmentName": ENV}
    names["functionAppName"] = _resolve(main["variables"]["functionAppName"]["value"], names)
    modules = {name: body(mod)["params"] for name, mod in main["modules"].items()}
    alerts = parse("modules/alerts.bicep")
    prefix = _resolve(modules["alerts"]["namePrefix"], names)
    rules = [f"{prefix}-{rule['name']}" for rule in alerts["variables"]["rules"]["value"]]
    by_prefix = {"namePrefix": prefix}
    resources = alerts["resources"]
    storage = parse("modules/storage.bicep")
    return {
        "group": _resolve(main["resources"]["rg"]["config"]["name"], names),
        "functionapp": [_resolve(modules["functionApp"]["name"], names)],
        "appinsights": [_resolve(modules["monitoring"]["applicationInsightsName"], names)],
        "workspace": [_resolve(modules["monitoring"]["logAnalyticsName"], names)],
        "storage": [_resolve(modules["storage"]["name"], names)],
        "queues": storage["variables"]["queueNames"]["value"],
        # pycep renders a conditional resource without its name: read it from the text.
        "lock": re.search(r"resource lock [^\n]*\n\s*name: '([^']+)'",
                          (INFRA / "modules" / "storage.bicep").read_text())[1],
        "scheduled-query": rules,
        "metric-alert": [_resolve(resources["healthAlert"]["config"]["name"], by_prefix)],
        "web-test": [_resolve(resources["healthTest"]["config"]["name"], by_prefix)],
        "action-group": [_resolve(resources["actionGroup"]["config"]["name"], by_prefix)],
        "principal": PRINCIPAL,
        "subscription": SUBSCRIPTION,
    }


def outputs(where: dict[str, Any]) -> dict[str, str]:
    """`azd env get-values` after `azd up`: the outputs the runbook reads, with the deployed names."""
    base = f"https://{where['functionapp'][0]}.azurewebsites.net"
    return {
        "AZURE_ENV_NAME": ENV, "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION, "AZURE_RESOURCE_GROUP": where["group"],
        "AZURE_FUNCTION_APP_NAME": where["functionapp"][0], "APPLICATIONINSIGHTS_NAME": where["appinsights"][0],
        "LOG_ANALYTICS_NAME": where["workspace"][0],
        "STORAGE_ACCOUNT_NAME": where["storage"][0], "ALERT_NAME_PREFIX": f"bookings-{TOKEN}",
        "ACTION_GROUP_NAME": f"bookings-{TOKEN}-admins", "AVAILABILITY_TEST_NAME": f"bookings-{TOKEN}-health",
        "HEALTH_URL": f"{base}/api/health", "FUNCTION_URL": base, "MANAGED_IDENTITY_PRINCIPAL_ID": PRINCIPAL,
    }


# The stand-in for az. Each command takes what its reference page (learn.microsoft.com/cli/azure/<group>) says it
# requires, and answers ResourceNotFound, as Azure does, for a name the deployment does not have.
_AZ = r'''
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
where = json.loads(os.environ["FAKE_DEPLOYED"])
state = Path(os.environ["FAKE_STATE"])
with open(state / "az.log", "a") as log:
    log.write(json.dumps(args) + "\n")

def fail(code, text):
    print(text, file=sys.stderr)
    sys.exit(code)

def opt(*flags):
    for i, a in enumerate(args):
        if a in flags:
            if i + 1 >= len(args):
                fail(2, f"argument {a}: expected one argument")
            return args[i + 1]
    return None

def need(*flags):
    value = opt(*flags)
    if value is None:
        fail(2, "the following arguments are required: " + "/".join(flags))
    return value

def exists(kind, name):
    if name not in where[kind]:
        fail(3, f"(ResourceNotFound) The Resource '{name}' ({kind}) under resource group "
                f"'{where['group']}' was not found.")

def group():
    if need("-g", "--resource-group") != where["group"]:
        fail(3, f"(ResourceGroupNotFound) Resource group '{opt('-g', '--resource-group')}' could not be found.")

words = [a for a in args if not a.startswith("-")][:4]
verb = " ".join(words)
def starts(text):
    return verb.startswith(text)

storage_id = (f"/subscriptions/{where['subscription']}/resourceGroups/{where['group']}/providers/"
              f"Microsoft.Storage/storageAccounts/{where['storage'][0]}")
tsv = opt("-o", "--output") == "tsv"
if starts("login"):
    pass
elif starts("functionapp config appsettings"):
    group(); exists("functionapp", need("-n", "--name"))
    if "delete" in words:
        need("--setting-names")
    print("[]")
elif starts("functionapp show") or starts("functionapp start") or starts("functionapp restart"):
    group(); exists("functionapp", need("-n", "--name"))
    print("{}")
elif starts("monitor app-insights query"):
    group(); exists("appinsights", need("--app", "-a"))
    need("--offset")  # else the last hour only
    count = len(list(state.glob("kql-*.txt")))
    (state / f"kql-{count}.txt").write_text(need("--analytics-query", "-q"))
    print('{"tables": []}')
elif starts("monitor log-analytics workspace show"):
    group(); exists("workspace", need("-n", "--workspace-name"))
    print("{}")
elif starts("monitor scheduled-query show"):
    group(); exists("scheduled-query", need("-n", "--name"))
    print("{}")
elif starts("monitor action-group show"):
    group(); exists("action-group", need("-n", "--name"))
    print("[]")
elif starts("monitor activity-log list"):
    group(); need("--offset")
    print("[]")
elif starts("role assignment create"):
    need("--role")
    if need("--scope") != storage_id:
        fail(3, f"(InvalidResourceId) scope {opt('--scope')}")
    if not (opt("--assignee") or opt("--assignee-object-id")):
        fail(2, "the following arguments are required: --assignee/--assignee-object-id")
    print("{}")
elif starts("role assignment list"):
    if need("--assignee") != where["principal"]:
        fail(3, "no such principal")
    print("[]")
elif starts("ad signed-in-user show"):
    print("5e1f0000-0000-4000-8000-0000000000me" if tsv else '{"id": "5e1f0000-0000-4000-8000-0000000000me"}')
elif starts("storage account show"):
    group(); exists("storage", need("-n", "--name"))
    print(storage_id if tsv else "{}")
elif starts("storage message peek"):
    exists("storage", need("--account-name"))
    exists("queues", need("--queue-name", "-q"))
    # Shared keys are off on the account (allowSharedKeyAccess: false): only an Entra sign-in reads it.
    if opt("--auth-mode") != "login":
        fail(1, "Key based authentication is not permitted on this storage account.")
    print("[]")
elif starts("storage blob download"):
    exists("storage", need("--account-name"))
    if need("--container-name") != "flow-backups" or opt("--auth-mode") != "login":
        fail(1, "Key based authentication is not permitted on this storage account.")
    need("--name"); need("--file", "-f")
elif starts("lock delete"):
    group(); exists("storage", need("--resource"))
    if need("--name") != where["lock"] or need("--resource-type") != "Microsoft.Storage/storageAccounts":
        fail(3, "(LockNotFound)")
elif starts("resource show"):
    group(); exists("functionapp", need("-n", "--name"))
    if need("--resource-type") != "Microsoft.Web/sites":
        fail(3, "(ResourceNotFound)")
    print("{}")
elif starts("rest"):
    url = need("--url", "--uri", "-u")
    if "/servicePrincipals/" in url and f"/servicePrincipals/{where['principal']}/" not in url:
        fail(1, "Not Found(Request_ResourceNotFound)")
    print('{"value": []}')
else:
    fail(2, "fake az: no such command in the runbook's stand-in: " + " ".join(args))
'''

_AZD = r'''
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
state = Path(os.environ["FAKE_STATE"])
with open(state / "azd.log", "a") as log:
    log.write(json.dumps(args) + "\n")
if args[:2] == ["env", "get-values"]:
    for name, value in json.loads(os.environ["FAKE_OUTPUTS"]).items():
        print(f'{name}="{value}"')
elif args[:2] == ["env", "set"]:
    if len(args) != 4:
        sys.exit("usage: azd env set <key> <value>")
    if args[2] not in json.loads(os.environ["FAKE_PARAMETERS"]):
        sys.exit(f"{args[2]} reaches no Bicep parameter (infra/main.parameters.json)")
elif args[:2] == ["env", "select"] and len(args) == 3:
    pass
elif args[:1] in (["up"], ["provision"], ["deploy"]) and len(args) == 1:
    pass
elif args == ["down", "--purge"]:
    pass
else:
    sys.exit("fake azd: unexpected " + " ".join(args))
'''


def commands() -> list[str]:
    """The runbook's fenced sh blocks, and its inline `az ...` / `azd ...` commands."""
    text = RUNBOOK.read_text()
    blocks = [b for b in re.findall(r"```sh\n(.*?)```", text, re.S)]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    inline = [c for c in re.findall(r"`((?:az|azd) [^`]+)`", prose)]
    return blocks + inline


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("runbook")
    bin_dir, state = tmp / "bin", tmp / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, script in (("az", _AZ), ("azd", _AZD)):
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{script}")
        path.chmod(0o755)
    where = deployed()
    parameters = re.findall(r"\$\{([A-Z_]+)", (INFRA / "main.parameters.json").read_text())
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_STATE": str(state),
           "FAKE_DEPLOYED": json.dumps(where), "FAKE_OUTPUTS": json.dumps(outputs(where)),
           "FAKE_PARAMETERS": json.dumps(parameters), "HOME": str(tmp)}
    failures = []
    found = commands()
    for command in found:
        command = command.replace("<env>", ENV)
        assert not re.search(r"<[\w -]+>", command), f"a placeholder nobody can run: {command}"
        script = f'set -euo pipefail\neval "$(azd env get-values)"\n{command}'
        run = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=60, check=False)
        if run.returncode != 0:
            failures.append(f"{command}\n  -> {run.returncode}: {run.stderr.strip()}")
    az = [json.loads(line) for line in (state / "az.log").read_text().splitlines()]
    azd = [json.loads(line) for line in (state / "azd.log").read_text().splitlines()]
    kql = [p.read_text() for p in sorted(state.glob("kql-*.txt"))]
    return {"failures": failures, "commands": found, "az": az, "azd": azd, "kql": kql}


def test_every_command_of_the_runbook_runs_against_the_deployed_names(ran: dict[str, Any]) -> None:
    assert not ran["failures"], "\n".join(ran["failures"])
    assert len(ran["commands"]) >= 30
    called = {" ".join(a for a in call if not a.startswith("-"))[:40] for call in ran["az"]}
    for group in ("functionapp show", "monitor app-insights query", "monitor scheduled-query show",
                  "storage message peek", "role assignment create"):
        assert any(c.startswith(group) for c in called), group
    assert ["down", "--purge"] in ran["azd"] and ["up"] in ran["azd"]


def test_a_stand_in_that_accepts_anything_would_be_caught(tmp_path: Path) -> None:
    # The stand-ins refuse a name the deployment does not have, and a read of storage with keys.
    where = deployed()
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    (bin_dir / "az").write_text(f"#!{sys.executable}\n{_AZ}")
    (bin_dir / "az").chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_STATE": str(state),
           "FAKE_DEPLOYED": json.dumps(where)}
    wrong = [["monitor", "scheduled-query", "show", "-g", where["group"], "-n", "bookings-abc123xyz-no-such-rule"],
             ["storage", "message", "peek", "--account-name", where["storage"][0], "--queue-name", "deliveries-poison"],
             ["storage", "message", "peek", "--account-name", where["storage"][0], "--queue-name", "nope",
              "--auth-mode", "login"],
             ["functionapp", "show", "-g", "rg-other", "-n", where["functionapp"][0]]]
    for args in wrong:
        run = subprocess.run(["az", *args], env=env, capture_output=True, text=True, timeout=30, check=False)
        assert run.returncode != 0, args


def test_every_query_the_runbook_sends_runs_over_the_stored_columns(ran: dict[str, Any]) -> None:
    from tests.app_insights import Captured
    from tests.infra.test_observability import InMemoryLogs, InMemoryMetrics, InMemorySpans

    empty = Captured(InMemorySpans(), InMemoryLogs(), InMemoryMetrics())
    assert len(ran["kql"]) >= 15
    for kql in ran["kql"]:
        empty.query(kql)  # a misspelt column or table is an error here


def test_the_functions_and_settings_the_runbook_names_exist() -> None:
    text = RUNBOOK.read_text()
    functions = set(re.findall(r"^async def (\w+)\(", (ROOT / "function_app.py").read_text(), re.M))
    for name in re.findall(r"AzureWebJobs\.(\w+)\.Disabled", text):
        assert name in functions, name
    for name in re.findall(r'operation_Name == "(\w+)"', text):
        assert name in functions, name
    for name in re.findall(r"azd env set (\w+)", text):
        assert f"${{{name}" in (INFRA / "main.parameters.json").read_text(), name
    for kql in re.findall(r"infra/queries/([\w-]+\.kql)", text):
        assert (INFRA / "queries" / kql).exists(), kql


def test_the_outputs_the_runbook_reads_are_what_main_bicep_outputs(main_bicep: dict[str, Any]) -> None:
    declared = main_bicep["outputs"]
    used = set(re.findall(r"\$(?:\{)?([A-Z][A-Z_]+)", "\n".join(commands())))
    assert used <= set(declared), used - set(declared)
    # ... named as the resources are: the stand-in's names come from the resources, the outputs from main.bicep.
    assert declared["ALERT_NAME_PREFIX"]["value"] == "bookings-${resourceToken}"
    assert declared["ACTION_GROUP_NAME"]["value"] == "bookings-${resourceToken}-admins"
    alerts = parse("modules/alerts.bicep")
    assert alerts["resources"]["actionGroup"]["config"]["name"] == "${namePrefix}-admins"
    assert main_bicep["modules"]["alerts"]["config"]["params"]["namePrefix"] == "bookings-${resourceToken}"


def test_every_alert_has_its_section() -> None:
    alerts = parse("modules/alerts.bicep")
    names = {rule["name"] for rule in alerts["variables"]["rules"]["value"]}
    names.add(alerts["resources"]["healthAlert"]["config"]["name"].split("}-", 1)[1])  # app-unavailable
    sections = set(re.findall(r"^### ([\w-]+)$", RUNBOOK.read_text(), re.M))
    assert names <= sections, names - sections
    for name in names:
        section = RUNBOOK.read_text().split(f"### {name}\n", 1)[1].split("\n### ", 1)[0]
        for part in ("**Means.**", "**Look first.**", "**Resolve.**"):
            assert part in section, (name, part)
        assert section.count("az monitor app-insights query") + section.count("](#") >= 2, name


def test_the_procedures_and_the_warning_before_removing() -> None:
    text = RUNBOOK.read_text()
    for heading in ("## Upgrade", "## Rotate", "## Restore", "## Scale", "## Remove"):
        assert f"\n{heading}\n" in text, heading
    assert "see the restore procedure (scripts/restore-flows.*)" in text
    assert "scripts/rotate-connector-secret.sh" in text
    remove = text.split("\n## Remove\n", 1)[1]
    assert remove.index("**Warning: `azd down --purge` deletes every flow registration.**") \
        < remove.index("azd down --purge\n```")
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Where to read on", 1)[1]
    assert "[docs/operations.md](docs/operations.md)" in table
