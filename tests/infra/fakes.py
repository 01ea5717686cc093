"""Stand-ins for az, azd and paconn on PATH, for running the deployment scripts here: they answer what the
scripts ask of Entra and Power Platform as those services answer it, and log every call."""

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
if args[:2] == ["ad", "sp"] and "show" in args:
    query = args[args.index("--query") + 1]
    if query == "id":
        print(GRAPH_SP_ID)
    else:
        print("role-" + query.split("value=='")[1].split("'")[0])
    sys.exit(0)
if args[:4] == ["ad", "app", "permission", "admin-consent"]:
    sys.exit(0)
if args[:2] == ["ad", "app"] and "credential" in args:
    print("s3cr3t-value~" + "x" * 30)
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
import os, sys
from pathlib import Path
with open(Path(os.environ["FAKE_STATE"]) / "{name}.log", "a") as log:
    log.write(os.getcwd() + " | " + " ".join(sys.argv[1:]) + "\n")
if "{name}" == "paconn" and sys.argv[1:2] == ["create"]:
    print("b0c1d2e3-connector created successfully.")
'''


def install(bin_dir: Path, *names: str) -> None:
    """Write the fakes ``names`` (az, azd, paconn) into ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        body = (f"GRAPH_SP_ID = {GRAPH_SP_ID!r}\nNOT_REPLICATED = {NOT_REPLICATED!r}\nDENIED = {DENIED!r}\n" + _AZ
                if name == "az" else _LOGGER.replace("{name}", name))
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{body}")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


def path_with(bin_dir: Path) -> str:
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
