"""The app's settings as ``local.settings.sample.json`` holds them, for tests and benchmarks."""

from __future__ import annotations

import json

from devhost.processes import ROOT


def sample_settings() -> dict[str, str]:
    return dict(json.loads((ROOT / "local.settings.sample.json").read_text())["Values"])
