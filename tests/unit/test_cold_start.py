"""Importing function_app must not load the Graph SDK (cold start, notification path)."""

from __future__ import annotations

import json
import subprocess
import sys

from devhost.processes import ROOT
from tests.conftest import sample_settings


def test_function_app_import_does_not_load_msgraph() -> None:
    code = ("import sys, json, function_app; print(json.dumps(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('msgraph', 'kiota_abstractions', 'msgraph_core'))))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**sample_settings(), "PATH": ""},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
