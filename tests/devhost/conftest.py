"""Run the local host as a real process on the sample app, against the session's Azurite."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from devhost.processes import Azurite, free_port
from testing.hosting import HostProcess

SAMPLE_APP = Path(__file__).parent / "sample_app"


@pytest.fixture
def sample_host_factory(azurite: Azurite, tmp_path: Path) -> Iterator[Callable[..., HostProcess]]:
    hosts: list[HostProcess] = []

    def make(**settings: str) -> HostProcess:
        app_dir = tmp_path / f"app-{len(hosts)}"
        shutil.copytree(SAMPLE_APP, app_dir)
        values = {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AzureWebJobsStorage": azurite.connection_string,
            "RECORD_FILE": str(app_dir / "records.jsonl"),
            "TICK_SCHEDULE": "0 0 0 1 1 *",  # once a year: only run_on_startup fires unless a test says so
            "WORK_QUEUE": f"work-{uuid.uuid4().hex[:12]}",
            "DEVHOST_QUEUE_LEASE_SECONDS": "3",
            **settings,
        }
        (app_dir / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}))
        host = HostProcess(app_dir, free_port())
        host.settings = values  # type: ignore[attr-defined]
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.kill()


@pytest.fixture
def sample_host(sample_host_factory: Callable[..., HostProcess]) -> Iterator[HostProcess]:
    host = sample_host_factory().start()
    yield host


@pytest.fixture
def client(sample_host: HostProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sample_host.url, timeout=10) as c:
        yield c
