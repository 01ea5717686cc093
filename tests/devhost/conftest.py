"""Run the local host as a real process on the sample app, against the session's Azurite."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devhost.processes import Azurite, free_port, python_module, stop_process, wait_for_port

SAMPLE_APP = Path(__file__).parent / "sample_app"


class HostProcess:
    def __init__(self, app_dir: Path, port: int) -> None:
        self.app_dir, self.port = app_dir, port
        self.log_file = app_dir / "host.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, env: dict[str, str] | None = None) -> HostProcess:
        log = self.log_file.open("a")
        self.process = python_module("devhost", "--app-dir", str(self.app_dir), "--port", str(self.port),
                                     env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, timeout=30, process=self.process)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.process is None:
            return None
        code = stop_process(self.process, sig=sig)
        self.process = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        path = self.app_dir / "records.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 20) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.records()
            if predicate(records):
                return records
            time.sleep(0.1)
        raise AssertionError(f"condition not met within {timeout} s; records: {self.records()}\nlog:\n{self.log}")


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
