"""checkov over infra/: no failed check, no parsing error, and every inline skip gives its reason.

checkov lives in its own virtual environment (.venv-checkov, created by `make test`) because its pinned
dependencies clash with the app's. A missing checkov fails this test: `make test` installs it, so a
missing one means the set-up is broken, not that the check may be skipped.

checkov exits 0 even when it could not parse a file, so the summary's parsing_errors is checked too.
infra/entra/ is left out (--skip-path): checkov pins pycep-parser 0.5.1, which cannot read Bicep's
`extension` keyword, and checkov has no checks for Microsoft.Graph resources anyway. tests/infra/test_entra.py
parses and checks that folder instead.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.infra.conftest import INFRA, ROOT

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
COMMAND = [str(CHECKOV), "-d", "infra", "--framework", "bicep", "--skip-download", "--skip-path", "infra/entra",
           "-o", "json"]


@pytest.mark.slow
def test_checkov_passes_with_no_parsing_errors() -> None:
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run `make test` (it creates .venv-checkov)"
    run = subprocess.run(COMMAND, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    reports = json.loads(run.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    (report,) = [r for r in reports if r.get("check_type") == "bicep"]
    summary, results = report["summary"], report["results"]

    assert summary["parsing_errors"] == 0, f"checkov could not parse: {results['parsing_errors']}"
    failed = [f"{c['check_id']} {c['check_name']} ({c['resource']}, {c['file_path']})"
              for c in results["failed_checks"]]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    assert summary["passed"] >= 15 and summary["resource_count"] >= 20, summary

    for skipped in results["skipped_checks"]:
        reason = skipped.get("check_result", {}).get("suppress_comment", "")
        assert len(reason) > 30, f"{skipped['check_id']} is skipped without a written reason"

    scanned = {c["file_path"] for c in results["passed_checks"] + results["skipped_checks"]}
    assert "/modules/storage.bicep" in scanned and "/modules/function.bicep" in scanned
    assert run.returncode == 0, run.stderr[-2000:]


def test_only_the_graph_extension_folder_is_left_to_pycep() -> None:
    # Everything checkov skips must be Graph-extension Bicep, and nothing else may use the extension.
    for path in INFRA.rglob("*.bicep"):
        uses_extension = any(line.startswith("extension ") for line in path.read_text().splitlines())
        assert uses_extension == (path.parent.name == "entra"), path
