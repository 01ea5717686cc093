"""Fixtures shared by every test: a real Azurite, and the app's settings pointed at it.

Azurite runs once per test session on free ports (in memory). ``app_env`` puts the sample local
settings into the environment with storage pointed at that Azurite, as the local host would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.processes import ROOT, Azurite
from shared.settings import reset_settings_cache


def sample_settings() -> dict[str, str]:
    return dict(json.loads((ROOT / "local.settings.sample.json").read_text())["Values"])


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    server = Azurite.on_free_ports().start()
    yield server
    server.stop()


@pytest.fixture
def app_env(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    values = sample_settings()
    values["AzureWebJobsStorage"] = azurite.connection_string
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    yield values
    reset_settings_cache()


@pytest.fixture
def repo_root() -> Path:
    return ROOT
