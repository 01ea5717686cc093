"""Stand-ins for az, azd, pac and paconn on PATH, for running the deployment scripts here: they answer what the
scripts ask of Entra and Power Platform as those services answer it, and log every call.

State they keep in FAKE_STATE: ``provider-<namespace>`` (a resource provider's registration state),
``app.json`` (the connector client app registration: web.redirectUris and
passwordCredentials, as Graph's application resource names them), ``appsettings.json`` (the Function App's
app settings set with az) and ``azd.json`` (the azd environment's values: `azd env set`, `azd env get-value`,
`azd env get-values`, which the azd CLI reference documents,
https://learn.microsoft.com/azure/developer/azure-developer-cli/reference#azd-env)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

# The error Graph gives while a new managed identity is not replicated yet (msgraph-bicep-types issue 193).
NOT_REPLICATED = ("ERROR: Not Found({\"error\":{\"code\":\"Request_ResourceNotFound\",\"message\":\"Resource "
                  "'3f1c0000-0000-4000-8000-00000000mi01' does not exist or one of its queried reference-property "
                  "objects are not present.\"}})")
DENIED = ("ERROR: Forbidden({\"error\":{\"code\":\"Authorization_RequestDenied\",\"message\":\"Insufficient "
          "privileges to complete the operation.\"}})")
GRAPH_SP_ID = "9a1f0000-0000-4000-8000-00000000gsp1"

_AZ = r'''
import os, sys
from pathlib import Path
args = sys.argv[1:]
line = " ".join(args)
state = Path(os.environ["FAKE_STATE"])
with open(state / "az.log", "a") as log:
    log.write(line + "\n")
def count(name):
    path = state / name
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n
if args[:2] == ["account", "show"]:
    sys.exit(1 if os.environ.get("FAKE_AZ_SIGNED_OUT") else 0)
if args[:1] == ["provider"]:
    # az provider show/register (learn.microsoft.com/cli/azure/provider): a subscription's registration of a
    # resource provider, NotRegistered until registered (FAKE_AZ_PROVIDER_STATE sets where it starts).
    namespace = args[args.index("--namespace") + 1]
    registered = state / f"provider-{namespace}"
    if args[1] == "show":
        assert args[args.index("--query") + 1] == "registrationState", line
        start = os.environ.get("FAKE_AZ_PROVIDER_STATE", "NotRegistered")
        print(registered.read_text() if registered.exists() else start)
        sys.exit(0)
    if args[1] == "register":
        if os.environ.get("FAKE_AZ_PROVIDER_DENY"):
            print("ERROR: (AuthorizationFailed) The client does not have authorization to perform action "
                  f"'{namespace}/register/action' over scope '/subscriptions/...'", file=sys.stderr)
            sys.exit(1)
        # Without --wait the command returns while the registration is still under way.
        registered.write_text("Registered" if "--wait" in args else "Registering")
        sys.exit(0)
if args[:2] == ["ad", "sp"] and "show" in args:
    query = args[args.index("--query") + 1]
    if query == "id":
        print(GRAPH_SP_ID)
    else:
        print("role-" + query.split("value=='")[1].split("'")[0])
    sys.exit(0)
if args[:4] == ["ad", "app", "permission", "admin-consent"]:
    sys.exit(0)
import json
app_file = state / "app.json"
app = json.loads(app_file.read_text()) if app_file.exists() else {
    "web": {"redirectUris": ["https://global.consent.azure-apim.net/redirect"]}, "passwordCredentials": []}
def save():
    app_file.write_text(json.dumps(app))
def option(name):
    return args[args.index(name) + 1]
if args[:3] == ["ad", "app", "show"]:
    assert args[args.index("--query") + 1] == "web.redirectUris[]" and option("-o") == "tsv", line
    print("\n".join(app["web"]["redirectUris"]))
    sys.exit(0)
if args[:3] == ["ad", "app", "update"]:
    # az ad app update --web-redirect-uris: space-separated values, the whole new list (PATCH web.redirectUris).
    start = args.index("--web-redirect-uris") + 1
    end = next((i for i in range(start, len(args)) if args[i].startswith("--")), len(args))
    app["web"]["redirectUris"] = args[start:end]
    save()
    sys.exit(0)
if args[:4] == ["ad", "app", "credential", "reset"]:
    assert "--append" in args, "without --append az removes every other secret of the app"
    n = len(app["passwordCredentials"]) + 1
    app["passwordCredentials"].append({"keyId": f"k{n}", "displayName": option("--display-name"),
                                       "endDateTime": option("--end-date"),
                                       "startDateTime": os.environ.get("FAKE_NOW", "2026-12-07T06:00:00.5Z"),
                                       "secretText": f"s3cr3t-value~{n}" + "x" * 30})
    save()
    print(app["passwordCredentials"][-1]["secretText"])
    sys.exit(0)
if args[:4] == ["ad", "app", "credential", "list"]:
    # The query the rotation uses: [?displayName=='<name>'].[startDateTime, keyId], as tsv.
    name = option("--query").split("displayName=='")[1].split("'")[0]
    print("\n".join(f"{c['startDateTime']}\t{c['keyId']}" for c in app["passwordCredentials"]
                    if c["displayName"] == name))
    sys.exit(0)
if args[:4] == ["ad", "app", "credential", "delete"]:
    key = option("--key-id")
    app["passwordCredentials"] = [c for c in app["passwordCredentials"] if c["keyId"] != key]
    save()
    sys.exit(0)
if args[:4] == ["functionapp", "config", "appsettings", "set"]:
    settings_file = state / "appsettings.json"
    settings = json.loads(settings_file.read_text()) if settings_file.exists() else {}
    name, _, value = option("--settings").partition("=")
    settings[name] = value
    settings_file.write_text(json.dumps(settings))
    sys.exit(0)
if args[:3] == ["functionapp", "keys", "list"]:
    # `az functionapp keys list` answers {"functionKeys": {...}, "masterKey": "...", "systemKeys": {...}}.
    print(os.environ.get("FAKE_AZ_MASTER_KEY", "fake-master-key") if "masterKey" in args else "")
    sys.exit(0)
if args[0] == "rest":
    url = args[args.index("--url") + 1]
    if "/directory/deletedItems/" in url:
        print(os.environ.get("FAKE_AZ_DELETED", ""))
        sys.exit(0)
    if "/me/transitiveMemberOf/" in url:
        if os.environ.get("FAKE_AZ_ROLES_FAIL"):
            sys.exit(1)
        print(os.environ.get("FAKE_AZ_ROLES", ""))
        sys.exit(0)
    if url.endswith("/appRoleAssignments"):
        if count("assignments-get") <= int(os.environ.get("FAKE_AZ_NOT_REPLICATED", "0")):
            print(NOT_REPLICATED, file=sys.stderr)
            sys.exit(1)
        print("")
        sys.exit(0)
    if url.endswith("/appRoleAssignedTo"):
        if os.environ.get("FAKE_AZ_DENY"):
            print(DENIED, file=sys.stderr)
            sys.exit(1)
        sys.exit(0)
print("fake az: unexpected call " + line, file=sys.stderr)
sys.exit(2)
'''

_LOGGER = r'''
import json, os, sys
from pathlib import Path
state = Path(os.environ["FAKE_STATE"])
args = sys.argv[1:]
with open(state / "{name}.log", "a") as log:
    log.write(os.getcwd() + " | " + " ".join(args) + "\n")
if "{name}" == "paconn" and args[:1] == ["create"]:
    Path("settings.json").write_text(json.dumps({"connectorId": "b0c1d2e3-connector"}))
    print("b0c1d2e3-connector created successfully.")
if "{name}" == "pac" and args[:2] == ["connector", "create"]:
    print("Connector created with ID b0c1d2e3-0000-4000-8000-00000000c0de")
if "{name}" == "azd" and args[:1] == ["env"]:
    env_file = state / "azd.json"
    values = json.loads(env_file.read_text()) if env_file.exists() else {}
    if args[1] == "set":
        values[args[2]] = args[3]
        env_file.write_text(json.dumps(values))
    elif args[1] == "get-value":
        if args[2] not in values:
            print(f"ERROR: key '{args[2]}' not found in the environment values", file=sys.stderr)
            sys.exit(1)
        print(values[args[2]])
    elif args[1] == "get-values":
        print("\n".join(f'{k}="{v}"' for k, v in values.items()))
'''


def install(bin_dir: Path, *names: str) -> None:
    """Write the fakes ``names`` (az, azd, pac, paconn) into ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        body = (f"GRAPH_SP_ID = {GRAPH_SP_ID!r}\nNOT_REPLICATED = {NOT_REPLICATED!r}\nDENIED = {DENIED!r}\n" + _AZ
                if name == "az" else _LOGGER.replace("{name}", name))
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{body}")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


def path_with(bin_dir: Path) -> str:
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
