"""The flow exports' infrastructure and the restore script: the container, versioning, soft delete and lifecycle
the export relies on, the optional CanNotDelete lock (on by default), the app's role on the container, and
scripts/restore-flows.sh paging through the app's restore route with the master key that a fake az hands it."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.blobs import FLOW_BACKUP_CONTAINER
from shared.services.backup import PREFIX
from tests.infra import fakes as fake
from tests.infra.conftest import ROOT, parse, resources

BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"


def test_the_export_container_keeps_versions_and_deleted_blobs_and_expires_old_ones() -> None:
    storage = parse("modules/storage.bicep")
    assert storage["variables"]["backupContainerName"]["value"] == FLOW_BACKUP_CONTAINER
    service = resources(storage, "Microsoft.Storage/storageAccounts/blobServices")["blobService"]["properties"]
    assert service["isVersioningEnabled"] is True
    assert service["deleteRetentionPolicy"]["enabled"] is True and service["deleteRetentionPolicy"]["days"] >= 7
    rules = resources(storage, "Microsoft.Storage/storageAccounts/managementPolicies")["lifecycle"]
    by_name = {r["name"]: r["definition"] for r in rules["properties"]["policy"]["rules"]}
    assert "version" in by_name["expire-previous-versions"]["actions"]  # versioning's cost, bounded
    exports = by_name["expire-flow-exports"]
    assert exports["filters"]["prefixMatch"] == [f"${{backupContainerName}}/{PREFIX}"]


def test_the_storage_account_is_locked_unless_switched_off() -> None:
    storage, main = parse("modules/storage.bicep"), parse("main.bicep")
    lock = storage["resources"]["lock"]
    assert lock["type"] == "Microsoft.Authorization/locks" and lock["config"]["condition"] == "deleteLock"
    assert lock["config"]["config"]["scope"] == "account"
    assert lock["config"]["config"]["properties"]["level"] == "CanNotDelete"
    assert main["parameters"]["storageDeleteLock"]["default"] is True
    assert main["modules"]["storage"]["config"]["params"]["deleteLock"] == "storageDeleteLock"
    parameters = json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"]
    assert parameters["storageDeleteLock"]["value"] == "${STORAGE_DELETE_LOCK=true}"


def test_the_app_may_write_the_export_container() -> None:
    rbac = parse("modules/rbac.bicep")
    writer = resources(rbac, "Microsoft.Authorization/roleAssignments")["backupWriter"]
    assert writer["scope"] == "backupContainer"
    assert rbac["variables"]["storageBlobDataContributor"]["value"] == BLOB_DATA_CONTRIBUTOR
    assert "storageBlobDataContributor" in json.dumps(writer["properties"]["roleDefinitionId"])


class App:
    """The restore routes as the app answers them: pages with a `next`, or an error; every request kept."""

    def __init__(self, pages: list[dict[str, Any]], status: int = 200) -> None:
        self.pages, self.status, self.seen = pages, status, []
        app = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: dict[str, Any]) -> None:
                length = int(self.headers.get("content-length") or 0)
                app.seen.append((self.command, self.path, self.headers.get("x-functions-key"),
                                 json.loads(self.rfile.read(length)) if length else None))
                data = json.dumps(body).encode()
                self.send_response(app.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                self._answer(app.pages.pop(0) if app.status == 200 else
                             {"error": {"code": "FlowExportNotFound", "message": "no export"}})

            def do_GET(self) -> None:
                self._answer({"exports": [{"blob": "flows-20261207T023000Z.json", "flows": 3}]})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> App:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


@pytest.fixture(params=["bash", "bash --posix"])
def run(request, tmp_path: Path) -> Iterator[Any]:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    state.mkdir()
    fake.install(bin_dir, "az")

    def go(url: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": fake.path_with(bin_dir), "FAKE_STATE": str(state), "FUNCTION_URL": url,
               "AZURE_RESOURCE_GROUP": "rg-test", "AZURE_FUNCTION_APP_NAME": "func-bookings-abc",
               "FAKE_AZ_MASTER_KEY": "master-KEY-123"}
        return subprocess.run([*request.param.split(), str(ROOT / "scripts" / "restore-flows.sh"), *args], env=env,
                              capture_output=True, text=True, timeout=30, check=False)

    go.az_log = lambda: (state / "az.log").read_text()  # type: ignore[attr-defined]
    yield go


def test_the_script_pages_through_the_restore_with_the_master_key(run) -> None:
    pages = [{"mailboxes": ["a@x.test"], "flowsRestored": 2, "next": "a@x.test"},
             {"mailboxes": ["b@x.test"], "flowsRestored": 1, "next": None}]
    with App(pages) as app:
        done = run(app.url, "--dry-run", "--export", "flows-20261207T023000Z.json")
    assert done.returncode == 0, done.stderr
    assert [(m, p, k) for m, p, k, _ in app.seen] == [("POST", "/api/backups/flows/restore", "master-KEY-123")] * 2
    assert [b["after"] for *_, b in app.seen] == ["", "a@x.test"]
    assert all(b["dryRun"] is True and b["export"] == "flows-20261207T023000Z.json" for *_, b in app.seen)
    assert "functionapp keys list --resource-group rg-test --name func-bookings-abc" in run.az_log()
    assert "master-KEY-123" not in done.stdout + done.stderr and "dry run: nothing was written" in done.stdout


def test_the_script_lists_exports_and_stops_on_an_error_answer(run) -> None:
    with App([]) as app:
        listed = run(app.url, "--list")
    assert listed.returncode == 0 and json.loads(listed.stdout)["exports"][0]["flows"] == 3
    with App([], status=404) as app:
        failed = run(app.url)
    assert failed.returncode == 1 and "FlowExportNotFound" in failed.stderr and "answered 404" in failed.stderr
    refused = run("http://127.0.0.1:9", "--export", "../etc/passwd")
    assert refused.returncode == 2 and "flows-<time>.json" in refused.stderr


def test_the_powershell_twin_takes_the_same_options() -> None:
    twin = (ROOT / "scripts" / "restore-flows.ps1").read_text()
    for option in ("[switch]$List", "[switch]$DryRun", "[string]$Export", "backups/flows/restore", "masterKey",
                   "x-functions-key", "$answer.next"):
        assert option in twin, option
    assert os.access(ROOT / "scripts" / "restore-flows.sh", os.X_OK)
