"""Fixtures shared by every test: a real Azurite, and the app's settings pointed at it.

Azurite runs once per test session on free ports (in memory). ``app_env`` puts the sample local
settings into the environment with storage pointed at that Azurite, as the local host would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from devhost.processes import ROOT, Azurite, free_port
from shared.adapters.settings import reset_settings_cache
from testing.hosting import HostProcess
from testing.settings import sample_settings
from testing.storage import clean_app_storage, create_app_storage

# Property tests check answers, not speed (benchmarks do that): hypothesis's 200 ms deadline per example fails them
# on a loaded machine (the suite runs on parallel workers).
hypothesis_settings.register_profile("project", deadline=None)
hypothesis_settings.load_profile("project")


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


@pytest.fixture
def app_host_factory(azurite: Azurite, tmp_path: Path) -> Iterator[Callable[..., HostProcess]]:
    """Start the project's own function_app under the local host, settings from the sample + overrides."""
    hosts: list[HostProcess] = []
    create_app_storage(azurite.connection_string)

    def make(**overrides: str) -> HostProcess:
        port = free_port()
        env = {**sample_settings(), "AzureWebJobsStorage": azurite.connection_string,
               "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", **overrides}
        host = HostProcess(ROOT, port, env=env, log_dir=tmp_path / f"host-{len(hosts)}")
        host.log_file.parent.mkdir(parents=True, exist_ok=True)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.kill()


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[Any]:
    """One Graph sandbox per test session, with Graph's real timings but fast notification batching."""
    from graph_sandbox import SandboxConfig, SandboxServer

    with SandboxServer(SandboxConfig(batch_window_s=0.05, retry_delays_s=(0.2, 0.5, 1.0, 2.0))) as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: Any) -> Any:
    sandbox_server.seed()  # clears subscriptions, faults, limits and logs, and re-seeds the demo tenant
    return sandbox_server


def sandbox_settings(sandbox: Any) -> dict[str, str]:
    """App settings pointing every outside endpoint at the sandbox."""
    return {"GRAPH_BASE_URL": sandbox.graph_url, "ENTRA_TENANT_ID": sandbox.tenant_id, "AUTH_ISSUER": sandbox.issuer,
            "AUTH_JWKS_URL": sandbox.jwks_url,
            "ENTRA_AUTHORITY": sandbox.entra_url, "ENTRA_CA_FILE": sandbox.ca_file}


@pytest.fixture
def graph_env(app_env: dict[str, str], sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``app_env`` with Graph and Entra pointed at the session's sandbox."""
    for name, value in sandbox_settings(sandbox).items():
        monkeypatch.setenv(name, value)
        app_env[name] = value
    reset_settings_cache()
    return app_env


# Tests that look at queue contents switch off the functions that would consume them (as on Azure).
QUEUE_CONSUMERS_OFF = {"AzureWebJobs.reconcile_mailbox.Disabled": "true",
                       "AzureWebJobs.subscription_tasks.Disabled": "true"}


@pytest.fixture
def app_host(app_host_factory, sandbox, graph_env, azurite, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[HostProcess]:
    """The app under the local host, Graph = the sandbox. Queue consumers are off: tests see the queues."""
    clean_app_storage(azurite.connection_string)
    host = app_host_factory(**sandbox_settings(sandbox), **QUEUE_CONSUMERS_OFF).start()
    # In-process code (this test) must build the same notification URLs as the host serves.
    monkeypatch.setenv("PUBLIC_BASE_URL", host.url)
    reset_settings_cache()
    yield host


@pytest.fixture
def live_app_host(app_host_factory, sandbox, graph_env, azurite, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[HostProcess]:
    """The whole app under the local host, every function on, Graph = the sandbox."""
    clean_app_storage(azurite.connection_string)
    host = app_host_factory(**sandbox_settings(sandbox)).start()
    monkeypatch.setenv("PUBLIC_BASE_URL", host.url)
    reset_settings_cache()
    yield host


def sandbox_subscriptions(sandbox: Any) -> list[dict]:
    return list(sandbox.control("GET", "subscriptions")["value"])


@pytest.fixture
def clean_env(graph_env, azurite) -> dict[str, str]:
    """Settings and empty storage, no host running: nothing consumes the queues behind the test's back."""
    clean_app_storage(azurite.connection_string)
    return graph_env
