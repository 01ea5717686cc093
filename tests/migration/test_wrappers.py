"""scripts/migrate-flows.sh and its PowerShell twin: thin wrappers that run the command from any directory, pass
its exit code on, and offer the same options."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from scripts import migrate_flow_package as tool
from tests.infra.conftest import ROOT
from tests.migration import packages as pkg

API = "shared_bookings-20appointment-20triggers-5f0027f520b23e81c1-5f9888a90360086012"


def _wrapper(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd)}
    return subprocess.run([str(ROOT / "scripts" / "migrate-flows.sh"), *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_the_shell_wrapper_migrates_a_package_named_relative_to_where_it_runs(tmp_path: Path) -> None:
    pkg.bookings_to_crm(tmp_path / "Bookings to CRM.zip")
    run = _wrapper(tmp_path, "Bookings to CRM.zip", "--api-name", API)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "Bookings to CRM-migrated.zip").exists() and "id-not-unique" in run.stdout
    (tmp_path / "broken.zip").write_text("not a zip")
    broken = _wrapper(tmp_path, "broken.zip", "--api-name", API)
    assert broken.returncode == tool.EXIT_NOT_A_PACKAGE and "not a readable zip archive" in broken.stderr
    assert _wrapper(tmp_path, "broken.zip").returncode == tool.EXIT_USAGE  # --api-name is required


def test_the_wrappers_follow_the_scripts_conventions_and_offer_every_option() -> None:
    shell = ROOT / "scripts" / "migrate-flows.sh"
    assert os.access(shell, os.X_OK) and "set -eu" in shell.read_text()
    subprocess.run(["bash", "-n", str(shell)], check=True, timeout=30)
    twin = (ROOT / "scripts" / "migrate-flows.ps1").read_text()
    assert "$ErrorActionPreference = 'Stop'" in twin and "exit $LASTEXITCODE" in twin
    options = set(re.findall(r"parser\.add_argument\(\"(--[a-z-]+)\"", (ROOT / "scripts" /
                                                                       "migrate_flow_package.py").read_text()))
    assert options == {"--api-name", "--display-name", "--output", "--force", "--dry-run", "--json"}
    for option in options:
        assert f"'{option}'" in twin, option
