"""A local host (``python -m devhost``) running as a real process, for tests and benchmarks."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devhost.processes import python_module, stop_process, wait_for_port


class HostProcess:
    def __init__(self, app_dir: Path, port: int, env: dict[str, str] | None = None,
                 log_dir: Path | None = None, module: str = "devhost") -> None:
        # Each host object is its own function app for the timers' listener locks (devhost.singleton), so that a
        # host a test killed holds no lock another test's host waits for; hosts meant to share pass one id. Started
        # again, it is the same instance (WEBSITE_INSTANCE_ID): it takes its locks back at once, as a restarted
        # worker on Azure does.
        self.env = {"AzureFunctionsWebHost__hostid": f"test-{uuid.uuid4().hex[:12]}",
                    "WEBSITE_INSTANCE_ID": uuid.uuid4().hex, **(env or {})}
        self.app_dir, self.port = app_dir, port
        self.module = module  # ``python -m <module>`` taking devhost's arguments (the chaos bench's launcher)
        self.log_file = (log_dir or app_dir) / "host.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, env: dict[str, str] | None = None) -> HostProcess:
        env = {**self.env, **(env or {})}
        log = self.log_file.open("a")
        self.process = python_module(self.module, "--app-dir", str(self.app_dir), "--port", str(self.port),
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
