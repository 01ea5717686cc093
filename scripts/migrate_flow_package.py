"""Move the flows of a package exported from Power Automate (Export → Package (.zip)) from Microsoft's Bookings
connector to this app's connector, and list the expressions that read fields whose values differ (docs/migration.md).

    python -m scripts.migrate_flow_package PACKAGE.zip --api-name shared_... [--output OUT.zip] [--json] [--dry-run]

Each trigger and action of Microsoft's connector (api ``shared_microsoftbookings``) gets this connector's api name,
connection reference and operation id (the triggers keep theirs: CreateAppointment, UpdateAppointment,
CancelAppointment); its parameters (``SMTPAddress``) are kept as they are. An operation this connector does not have
is reported and left as it was, on Microsoft's connector, never dropped. The package's manifest and maps get a
connector and a connection resource for this connector, shaped as an export of a flow that uses it would have them.
The input file is only read; the new package is written beside it (or to --output).

Exit codes: 0 written (or nothing to move); 1 written, but some operation was left on Microsoft's connector;
2 wrong arguments; 3 the file is not a flow package this tool can read.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scripts.flow_expressions import KINDS, scan_definition
from scripts.flow_package import FlowAsset, Package, PackageError, read_package, write_package

ROOT = Path(__file__).resolve().parents[1]
SWAGGER = ROOT / "connector" / "apiDefinition.swagger.json"
MICROSOFT_API = "shared_microsoftbookings"
APIS = "/providers/Microsoft.PowerApps/apis/"
# Microsoft's operation id -> this connector's. Microsoft's triggers: microsoft/PowerPlatformConnectors,
# certified-connectors/Microsoft Bookings/apiDefinition.swagger.json; its business listing (the trigger's dropdown,
# {"mailboxes": [{"displayName", "email"}]} as ours): https://azure.github.io/Connectors-NodeJS-SDK/
# (MicrosoftBookingsExtensions, ListMailboxResponse).
OPERATIONS = {
    "CreateAppointment": "CreateAppointment",
    "UpdateAppointment": "UpdateAppointment",
    "CancelAppointment": "CancelAppointment",
    "ListBookingsBusinessUserAsAdmin": "GetBusinessesAsAdmin",
}
API_NAME = re.compile(r"^shared_[A-Za-z0-9][A-Za-z0-9._-]*$")
RESOURCE_IDS = uuid.UUID("8f1c52a4-7f43-4a8e-9f5b-0d2c6f1e3a90")  # namespace of the new resources' GUIDs
EXIT_OK, EXIT_LEFT_BEHIND, EXIT_USAGE, EXIT_NOT_A_PACKAGE = 0, 1, 2, 3


@dataclass
class Target:
    """This connector as the user's environment names it, and what its operations declare."""

    api_name: str
    display_name: str
    parameters: dict[str, set[str]]  # operation id -> parameter keys ("SMTPAddress", "body/serviceId", ...)

    @property
    def api_id(self) -> str:
        return APIS + self.api_name


@dataclass
class Operation:
    kind: str  # trigger | action
    name: str
    where: str
    operation: str
    becomes: str = ""
    undeclared_parameters: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass
class FlowReport:
    asset: str
    display_name: str
    moved: list[Operation] = field(default_factory=list)
    left: list[Operation] = field(default_factory=list)
    connections: dict[str, str] = field(default_factory=dict)  # Microsoft's connection key -> this connector's
    findings: list[dict[str, str]] = field(default_factory=list)


def load_target(api_name: str, display_name: str | None, swagger: Path = SWAGGER) -> Target:
    definition = json.loads(swagger.read_text())
    parameters: dict[str, set[str]] = {}
    for path in definition["paths"].values():
        for operation in path.values():
            if isinstance(operation, dict) and "operationId" in operation:
                parameters[operation["operationId"]] = _parameter_keys(operation.get("parameters", []))
    return Target(api_name, display_name or definition["info"]["title"], parameters)


def _parameter_keys(parameters: list[dict[str, Any]]) -> set[str]:
    """How a flow definition names each parameter: by name, a body's properties as "body/<property>"."""
    keys = set()
    for parameter in parameters:
        properties = parameter.get("schema", {}).get("properties") if parameter.get("in") == "body" else None
        keys |= {f"{parameter['name']}/{name}" for name in properties} if properties else {parameter["name"]}
    return keys


# ---- one flow: its definition.json --------------------------------------------------------------------------


def _operations(definition: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(kind, name, where, operation) of every trigger and action, nested ones (scopes, loops, branches) too."""
    triggers = definition.get("triggers") if isinstance(definition.get("triggers"), dict) else {}
    found = [("trigger", name, f"triggers.{name}", op) for name, op in triggers.items() if isinstance(op, dict)]

    def actions(container: Any, where: str) -> None:
        for name, op in (container or {}).items() if isinstance(container, dict) else ():
            if not isinstance(op, dict):
                continue
            here = f"{where}.{name}"
            found.append(("action", name, here, op))
            actions(op.get("actions"), f"{here}.actions")
            actions((op.get("else") or {}).get("actions") if isinstance(op.get("else"), dict) else None,
                    f"{here}.else.actions")
            actions((op.get("default") or {}).get("actions") if isinstance(op.get("default"), dict) else None,
                    f"{here}.default.actions")
            for case, body in (op.get("cases") or {}).items() if isinstance(op.get("cases"), dict) else ():
                actions(body.get("actions") if isinstance(body, dict) else None, f"{here}.cases.{case}.actions")

    actions(definition.get("actions"), "actions")
    return found


def _is_microsoft_reference(key: str, reference: Any) -> bool:
    if key == MICROSOFT_API or key.startswith(MICROSOFT_API + "_"):
        return True
    if not isinstance(reference, dict):
        return False
    api = reference.get("api") if isinstance(reference.get("api"), dict) else {}
    names = (str(reference.get("id", "")).rsplit("/", 1)[-1], reference.get("apiName"), api.get("name"))
    return MICROSOFT_API in names


def _text(host: dict[str, Any], name: str) -> str:
    """A host field that should be a string ("" when it is anything else)."""
    return host[name] if isinstance(host.get(name), str) else ""


def _uses_microsoft(host: dict[str, Any], keys: set[str]) -> bool:
    connection = host.get("connection") if isinstance(host.get("connection"), dict) else {}
    return (_text(host, "apiId").lower().endswith("/" + MICROSOFT_API) or _text(host, "connectionName") in keys
            or any(f"['{key}']" in _text(connection, "name") for key in keys))


def _new_key(key: str, target: Target) -> str:
    return target.api_name + key[len(MICROSOFT_API):] if key.startswith(MICROSOFT_API) else target.api_name


def _move(kind: str, name: str, where: str, op: dict[str, Any], keys: set[str], target: Target) -> Operation:
    """Point one operation of Microsoft's connector at this connector, or say why it stays (``reason``)."""
    host = op["inputs"]["host"]
    operation = _text(host, "operationId")
    entry = Operation(kind, name, where, operation or "(none)")
    if not operation:
        entry.reason = "it names no operationId (a path-based ApiConnection): recreate it by hand"
        return entry
    if operation not in OPERATIONS:
        entry.reason = "this connector has no such operation"
        return entry
    key = _text(host, "connectionName") if _text(host, "connectionName") in keys else MICROSOFT_API
    host["apiId"] = target.api_id
    host["connectionName"] = _new_key(key, target)
    if isinstance(host.get("connection"), dict) and _text(host["connection"], "name"):
        # the other spelling: "@parameters('$connections')['shared_microsoftbookings']['connectionId']"
        for old in keys:
            new = _new_key(old, target)
            host["connection"]["name"] = host["connection"]["name"].replace(f"['{old}']", f"['{new}']")
    host["operationId"] = entry.becomes = OPERATIONS[operation]
    parameters = op["inputs"].get("parameters") if isinstance(op["inputs"].get("parameters"), dict) else {}
    entry.undeclared_parameters = sorted(set(parameters) - target.parameters.get(entry.becomes, set()))
    return entry


def _new_reference(reference: Any, target: Target) -> dict[str, Any]:
    """Microsoft's connection reference, re-pointed: the connection itself is chosen again when importing."""
    new = copy.deepcopy(reference) if isinstance(reference, dict) else {"source": "Invoker", "tier": "NotSpecified"}
    new["id"] = target.api_id
    for name in ("apiName", "displayName"):
        if name in new:
            new[name] = target.api_name if name == "apiName" else target.display_name
    if isinstance(new.get("api"), dict):
        new["api"]["name"] = target.api_name
    return new


def migrate_definition(flow: FlowAsset, target: Target) -> tuple[dict[str, Any], FlowReport]:
    """A copy of the flow's definition.json on this connector, and what was moved, left and found."""
    document = copy.deepcopy(flow.definition)
    properties = document["properties"]
    references = properties.get("connectionReferences")
    references = references if isinstance(references, dict) else {}
    keys = {key for key, reference in references.items() if _is_microsoft_reference(key, reference)}
    report = FlowReport(flow.asset, str(properties.get("displayName", flow.asset)))
    for kind, name, where, op in _operations(properties["definition"]):
        host = (op.get("inputs") or {}).get("host") if isinstance(op.get("inputs"), dict) else None
        if isinstance(host, dict) and _uses_microsoft(host, keys):
            if _text(host, "connectionName").startswith(MICROSOFT_API):
                keys.add(host["connectionName"])
            entry = _move(kind, name, where, op, keys, target)
            (report.moved if entry.becomes else report.left).append(entry)
    if not report.moved:
        return document, report
    report.connections = {key: _new_key(key, target) for key in sorted(keys)}
    properties["connectionReferences"] = _rewire_references(references, report.connections, bool(report.left),
                                                            target)
    if any(entry.kind == "trigger" for entry in report.moved):
        report.findings = [finding.as_dict() for finding in scan_definition(properties["definition"])]
    return document, report


def _rewire_references(references: dict[str, Any], renamed: dict[str, str], keep_microsoft: bool,
                       target: Target) -> dict[str, Any]:
    """The connection references with each of Microsoft's replaced in place by this connector's (Microsoft's kept
    too when an operation left on its connector still needs them)."""
    rewired: dict[str, Any] = {}
    for key, reference in references.items():
        if key not in renamed:
            rewired[key] = reference
            continue
        if keep_microsoft:
            rewired[key] = reference
        if renamed[key] not in references:  # else the flow already has a reference to this connector: keep it
            rewired[renamed[key]] = _new_reference(reference, target)
    for new in renamed.values():  # an operation named a connection the references lacked
        rewired.setdefault(new, _new_reference(None, target))
    return rewired


# ---- the package: manifest.json and each flow's maps --------------------------------------------------------


def _microsoft_resources(manifest: dict[str, Any]) -> tuple[set[str], set[str]]:
    """GUIDs of the manifest's resources for Microsoft's connector and for its connections."""
    resources = manifest["resources"]
    apis = {guid for guid, resource in resources.items() if isinstance(resource, dict)
            and resource.get("type") == "Microsoft.PowerApps/apis"
            and MICROSOFT_API in (resource.get("name"), str(resource.get("id", "")).rsplit("/", 1)[-1])}
    connections = {guid for guid, resource in resources.items() if isinstance(resource, dict)
                   and resource.get("type") == "Microsoft.PowerApps/apis/connections"
                   and set(_guid_list(resource.get("dependsOn"))) & apis}
    return apis, connections


def _guid_list(value: Any) -> list[str]:
    return [guid for guid in value if isinstance(guid, str)] if isinstance(value, list) else []


def _new_guid(old: str, target: Target) -> str:
    """The same new GUID for the same old resource and connector: running the tool twice writes the same package."""
    return str(uuid.uuid5(RESOURCE_IDS, f"{old}:{target.api_name}"))


def _new_resource(resource: dict[str, Any], guids: dict[str, str], target: Target) -> dict[str, Any]:
    new = copy.deepcopy(resource)
    if not isinstance(new.get("details"), dict):
        new["details"] = {}
    details = new["details"]
    details.pop("iconUri", None)  # Microsoft's icon; this connector's is its own
    if new.get("type") == "Microsoft.PowerApps/apis":
        new["id"], new["name"] = target.api_id, target.api_name
        details["displayName"] = target.display_name
    new["dependsOn"] = [guids.get(guid, guid) for guid in _guid_list(new.get("dependsOn"))]
    return new


def migrate_manifest(manifest: dict[str, Any], reports: list[FlowReport], target: Target) -> tuple[
        dict[str, Any], dict[str, str]]:
    """The manifest with this connector's resources beside (or instead of) Microsoft's, and old GUID -> new."""
    manifest = copy.deepcopy(manifest)
    apis, connections = _microsoft_resources(manifest)
    guids = {old: _new_guid(old, target) for old in sorted(apis | connections)}
    keep_old = any(report.left for report in reports)
    resources: dict[str, Any] = {}
    for guid, resource in manifest["resources"].items():
        if guid in guids:
            if keep_old:
                resources[guid] = resource
            resources[guids[guid]] = _new_resource(resource, guids, target)
            continue
        if isinstance(resource, dict) and resource.get("type") == "Microsoft.Flow/flows":
            moved = any(report.moved and report.asset == guid for report in reports) or len(reports) == 1
            depends = resource.get("dependsOn") or []
            if moved and isinstance(depends, list):
                resource = {**resource, "dependsOn": _depends(depends, guids, keep_old)}
        resources[guid] = resource
    manifest["resources"] = resources
    return manifest, guids


def _depends(depends: list[Any], guids: dict[str, str], keep_old: bool) -> list[str]:
    out: list[Any] = []
    for guid in depends:
        if isinstance(guid, str) and guid in guids:
            out += [guid, guids[guid]] if keep_old else [guids[guid]]
        else:
            out.append(guid)
    return out


def migrate_map(mapping: dict[str, str], report: FlowReport, guids: dict[str, str]) -> dict[str, str]:
    """apisMap.json / connectionsMap.json with this connector's keys and resources (Microsoft's kept if needed)."""
    out: dict[str, str] = {}
    for key, guid in mapping.items():
        if key in report.connections:
            if report.left:
                out[key] = guid
            out[report.connections[key]] = guids.get(guid, guid)
        else:
            out[key] = guid
    return out


def migrate_package(package: Package, target: Target) -> tuple[dict[str, Any], list[FlowReport]]:
    """Entry name -> new JSON document for every document that changes, and a report per flow."""
    replaced: dict[str, Any] = {}
    reports = []
    for flow in package.flows:
        document, report = migrate_definition(flow, target)
        reports.append(report)
        if report.moved:
            replaced[package.entry_name(f"{flow.folder}/definition.json")] = document
    if not any(report.moved for report in reports):
        return {}, reports
    manifest, guids = migrate_manifest(package.manifest, reports, target)
    replaced[package.entry_name("manifest.json")] = manifest
    for index, flow in enumerate(package.flows):
        report = reports[index]
        for mapping, name in ((flow.apis_map, "apisMap.json"), (flow.connections_map, "connectionsMap.json")):
            if report.moved and mapping is not None:
                replaced[package.entry_name(f"{flow.folder}/{name}")] = migrate_map(mapping, report, guids)
    return replaced, reports


# ---- the command ----------------------------------------------------------------------------------------------


def untouched_mentions(package: Package) -> list[str]:
    """Entries outside the documents this tool reads that name Microsoft's connector: left as they are, and said so
    (community write-ups mention connections.json or flow.json in some packages; real exports have neither)."""
    known = {"manifest.json", "Microsoft.Flow/flows/manifest.json"} | {
        f"{flow.folder}/{name}" for flow in package.flows for name in ("definition.json", "apisMap.json",
                                                                       "connectionsMap.json")}
    return [name for path, name in package.names.items()
            if path not in known and MICROSOFT_API.encode() in package.entries[name]]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="migrate-flows", description="Move flows exported from Power Automate (Export → Package (.zip)) from "
        "Microsoft's Bookings connector to this connector, and list the expressions to review (docs/migration.md).")
    parser.add_argument("package", type=Path, help="the .zip Power Automate exported")
    parser.add_argument("--api-name", required=True, help="this connector's name in your environment, "
                        "shared_<name>-5f<id> (docs/migration.md says where to find it)")
    parser.add_argument("--display-name", help="the connector's display name (default: the definition's title)")
    parser.add_argument("--output", type=Path, help="where to write the new package (default: <package>-migrated.zip)")
    parser.add_argument("--force", action="store_true", help="replace --output if it exists")
    parser.add_argument("--dry-run", action="store_true", help="report only; write nothing")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    args.api_name = args.api_name.removeprefix(APIS).strip()
    if not API_NAME.match(args.api_name) or args.api_name == MICROSOFT_API:
        parser.error(f"--api-name {args.api_name!r} is not a custom connector's name (shared_<name>-5f<id>)")
    args.output = args.output or args.package.with_name(args.package.stem + "-migrated.zip")
    if args.output.resolve() == args.package.resolve():
        parser.error("--output is the input package: the input is never modified")
    if not args.output.resolve().parent.is_dir():
        parser.error(f"--output: {args.output.parent} is not a folder")
    if args.output.exists() and not args.force and not args.dry_run:
        parser.error(f"{args.output} exists (use --force to replace it)")
    return args


def _status(reports: list[FlowReport]) -> tuple[str, int]:
    if any(report.left for report in reports):
        return "incomplete", EXIT_LEFT_BEHIND
    if any(report.moved for report in reports):
        return "migrated", EXIT_OK
    return "nothing-to-migrate", EXIT_OK


def _print_text(result: dict[str, Any], reports: list[FlowReport]) -> None:
    for report in reports:
        print(f"Flow {report.display_name!r} ({report.asset}):")
        for entry in report.moved:
            print(f"  moved  {entry.kind} {entry.name}: {entry.operation} -> {entry.becomes}")
            if entry.undeclared_parameters:
                print(f"         kept parameters this connector does not declare: {entry.undeclared_parameters}")
        for entry in report.left:
            print(f"  LEFT   {entry.kind} {entry.name}: {entry.operation} stays on Microsoft's connector: "
                  f"{entry.reason}")
        if not report.moved and not report.left:
            print("  uses no operation of Microsoft's Bookings connector")
        for finding in report.findings:
            print(f"  {finding['severity'].upper():8}{finding['kind']} ({finding['field']}) at {finding['where']}:")
            print(f"         {finding['expression']}")
            print(f"         {finding['differs']}; {finding['advice']}")
    for name in result["untouchedMentions"]:
        print(f"Not changed: {name} names Microsoft's connector, but it is not a document this tool knows")
    counts = {kind: sum(f["kind"] == kind for r in reports for f in r.findings) for kind in KINDS}
    print("Expressions to review: " + (", ".join(f"{n} {k}" for k, n in counts.items() if n) or "none"))
    if result["written"]:
        print(f"Wrote {result['output']}. Import it in Power Automate: My flows → Import → Import Package (Legacy), "
              "then pick a connection of this connector (docs/migration.md).")
    elif result["status"] == "nothing-to-migrate":
        print("Nothing to move: no trigger or action of Microsoft's Bookings connector. Nothing was written.")
    else:
        print("Dry run: nothing was written.")


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        package = read_package(args.package)
    except PackageError as error:
        print(f"error: {args.package}: {error}", file=sys.stderr)
        if args.json:
            print(json.dumps({"input": str(args.package), "error": {"code": "NotAFlowPackage", "message": str(error)},
                              "exitCode": EXIT_NOT_A_PACKAGE}, ensure_ascii=False, indent=2))
        return EXIT_NOT_A_PACKAGE
    replaced, reports = migrate_package(package, load_target(args.api_name, args.display_name))
    status, code = _status(reports)
    written = bool(replaced) and not args.dry_run
    if written:
        write_package(package, replaced, args.output)
    result = {"input": str(args.package), "output": str(args.output) if written else None, "written": written,
              "status": status, "connector": args.api_name, "flows": [asdict(report) for report in reports],
              "untouchedMentions": untouched_mentions(package), "exitCode": code}
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        _print_text(result, reports)
    return code


if __name__ == "__main__":
    sys.exit(main())
