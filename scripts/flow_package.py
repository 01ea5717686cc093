"""The flow package Power Automate writes with Export → Package (.zip) (the "legacy" import package): reading one,
and writing a copy with some of its JSON documents replaced. What the documents mean is
``scripts.migrate_flow_package``'s business; this module only knows where they are.

The layout, as a real export has it (github.com/ronan-deshays/power-automate-cloud-utility-flows,
``write_only_access_to_excel_table_using_outlook/``; docs/migration.md cites the other sources)::

    manifest.json                                    package details; "resources" keyed by GUID: the flow
                                                     (Microsoft.Flow/flows), each connector (Microsoft.PowerApps/apis)
                                                     and each connection (Microsoft.PowerApps/apis/connections)
    Microsoft.Flow/flows/manifest.json               {"packageSchemaVersion", "flowAssets": {"assetPaths": [...]}}
    Microsoft.Flow/flows/<asset>/definition.json     the flow: properties.definition, properties.connectionReferences
    Microsoft.Flow/flows/<asset>/apisMap.json        connection key -> GUID of its connector's resource
    Microsoft.Flow/flows/<asset>/connectionsMap.json connection key -> GUID of its connection's resource

Every entry the tool does not change is copied byte for byte; the input file is only ever read.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FLOWS_DIR", "FlowAsset", "Package", "PackageError", "read_package", "write_package"]

FLOWS_DIR = "Microsoft.Flow/flows"
# A flow package is a few JSON files; these bounds turn a zip bomb or a wrong file into a clear error.
MAX_ENTRIES = 10_000
MAX_UNCOMPRESSED_BYTES = 256 * 1024 * 1024


class PackageError(Exception):
    """The file is not a flow package this tool can read; the message says what is wrong with it."""


@dataclass
class FlowAsset:
    """One flow of the package and the paths of its documents (the maps may be absent)."""

    asset: str
    definition: dict[str, Any]
    apis_map: dict[str, str] | None = None
    connections_map: dict[str, str] | None = None

    @property
    def folder(self) -> str:
        return f"{FLOWS_DIR}/{self.asset}"


@dataclass
class Package:
    entries: dict[str, bytes]  # every entry as read, in archive order
    infos: dict[str, zipfile.ZipInfo]
    manifest: dict[str, Any]
    names: dict[str, str] = field(default_factory=dict)  # path with "/" -> the entry's name as stored
    flows: list[FlowAsset] = field(default_factory=list)

    def entry_name(self, path: str) -> str:
        """The stored name of the entry at ``path`` (a new entry's name is ``path`` itself)."""
        return self.names.get(path, path)


def read_package(path: Path) -> Package:
    """The package at ``path``, or PackageError naming what is missing or broken."""
    entries, infos = _read_entries(path)
    names = {name.replace("\\", "/"): name for name in entries}
    if "manifest.json" not in names:
        if "solution.xml" in names or "customizations.xml" in names:
            raise PackageError("this is a solution export (solution.xml), not a package from Export → Package (.zip): "
                               "see docs/migration.md, 'Flows in a solution'")
        raise PackageError("no manifest.json at the root of the archive: not a package from Export → Package (.zip)")
    manifest = _json(entries, names, "manifest.json")
    if not isinstance(manifest.get("resources"), dict):
        raise PackageError("manifest.json has no 'resources' object")
    package = Package(entries, infos, manifest, names)
    for asset in _assets(entries, names):
        package.flows.append(_flow(entries, names, asset))
    if not package.flows:
        raise PackageError(f"no flow in the package (no {FLOWS_DIR}/<id>/definition.json)")
    return package


def write_package(package: Package, replaced: dict[str, Any], path: Path) -> None:
    """Write the package to ``path`` with the documents in ``replaced`` (entry name -> JSON) swapped in; every other
    entry unchanged. Written to a temporary file beside ``path`` and renamed, so a failure leaves no half package."""
    handle, temporary = tempfile.mkstemp(prefix=".migrating-", suffix=".zip", dir=path.parent)
    os.close(handle)
    try:
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in package.entries.items():
                info = zipfile.ZipInfo(name, date_time=package.infos[name].date_time)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = package.infos[name].external_attr
                if name in replaced:
                    data = json.dumps(replaced[name], ensure_ascii=False, separators=(",", ":")).encode()
                archive.writestr(info, data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _read_entries(path: Path) -> tuple[dict[str, bytes], dict[str, zipfile.ZipInfo]]:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = [info for info in archive.infolist() if not info.is_dir()]
            if len(infos) > MAX_ENTRIES or sum(info.file_size for info in infos) > MAX_UNCOMPRESSED_BYTES:
                raise PackageError("the archive is far larger than a flow package")
            entries: dict[str, bytes] = {}
            for info in infos:
                if info.filename in entries:
                    raise PackageError(f"the archive holds {info.filename} twice")
                entries[info.filename] = archive.read(info)
            return entries, {info.filename: info for info in infos}
    except zipfile.BadZipFile as error:
        raise PackageError(f"not a readable zip archive ({error})") from error
    except (OSError, EOFError, NotImplementedError, RuntimeError) as error:
        raise PackageError(f"the archive cannot be read ({error})") from error


def _json(entries: dict[str, bytes], names: dict[str, str], name: str) -> dict[str, Any]:
    try:
        document = json.loads(entries[names[name]].decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PackageError(f"{name} is not valid JSON ({error})") from error
    if not isinstance(document, dict):
        raise PackageError(f"{name} is not a JSON object")
    return document


def _assets(entries: dict[str, bytes], names: dict[str, str]) -> list[str]:
    """The flow folders: those the flows manifest lists, else every folder holding a definition.json."""
    listed: list[str] = []
    if f"{FLOWS_DIR}/manifest.json" in names:
        flows_manifest = _json(entries, names, f"{FLOWS_DIR}/manifest.json")
        paths = flows_manifest.get("flowAssets", {}).get("assetPaths") if isinstance(
            flows_manifest.get("flowAssets"), dict) else None
        if isinstance(paths, list):
            listed = [str(asset).strip("/") for asset in paths]
    found = sorted({name.split("/")[3] for name in names if name.startswith(f"{FLOWS_DIR}/")
                    and name.endswith("/definition.json") and name.count("/") == 4})
    return listed or found


def _flow(entries: dict[str, bytes], names: dict[str, str], asset: str) -> FlowAsset:
    if "/" in asset or asset in ("", ".", ".."):
        raise PackageError(f"{FLOWS_DIR}/manifest.json lists a flow folder that is not a name: {asset!r}")
    folder = f"{FLOWS_DIR}/{asset}"
    if f"{folder}/definition.json" not in names:
        raise PackageError(f"{folder}/definition.json is missing")
    definition = _json(entries, names, f"{folder}/definition.json")
    properties = definition.get("properties")
    if not isinstance(properties, dict) or not isinstance(properties.get("definition"), dict):
        raise PackageError(f"{folder}/definition.json has no properties.definition: not a flow definition")
    flow = FlowAsset(asset, definition)
    for attribute, document in (("apis_map", "apisMap.json"), ("connections_map", "connectionsMap.json")):
        if f"{folder}/{document}" in names:
            mapping = _json(entries, names, f"{folder}/{document}")
            if not all(isinstance(value, str) for value in mapping.values()):
                raise PackageError(f"{folder}/{document} maps a connection to something that is not a resource id")
            setattr(flow, attribute, mapping)
    return flow
