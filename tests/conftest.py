"""Fixtures shared by every test: a real Azurite, and the app's settings pointed at it.

Azurite runs once per test session on free ports (in memory). ``app_env`` puts the sample local
settings into the environment with storage pointed at that Azurite, as the local host would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devhost.processes import ROOT, Azurite, free_port
from shared.settings import reset_settings_cache
from tests.hosting import HostProcess


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


def create_app_storage(connection_string: str) -> None:
    """Create the app's tables and queues, as `make run` does locally and Bicep does on Azure."""
    from shared.settings import StorageSettings
    from shared.store import open_store

    async def create() -> None:
        store = open_store(StorageSettings(connection_string=connection_string))
        try:
            await store.create_all()
        finally:
            await store.close()

    asyncio.run(create())


@pytest.fixture
def app_host_factory(azurite: Azurite, tmp_path: Path) -> Iterator[Callable[..., HostProcess]]:
    """Start the project's own function_app under the local host, settings from the sample + overrides."""
    hosts: list[HostProcess] = []
    create_app_storage(azurite.connection_string)

    def make(**overrides: str) -> HostProcess:
        env = {**sample_settings(), "AzureWebJobsStorage": azurite.connection_string, **overrides}
        port = free_port()
        env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
        host = HostProcess(ROOT, port, env=env, log_dir=tmp_path / f"host-{len(hosts)}")
        host.log_file.parent.mkdir(parents=True, exist_ok=True)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.kill()
