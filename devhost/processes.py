"""Starting and stopping the local stack's processes: Azurite, the Graph sandbox, the local host.

Used by ``python -m devhost.stack`` (``make run``) and by the tests, so both run the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AZURITE = ROOT / "node_modules" / ".bin" / "azurite"
# Azurite's well-known development account; public and only valid against the emulator.
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on port {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def stop_process(process: subprocess.Popen, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@dataclass
class Azurite:
    blob_port: int
    queue_port: int
    table_port: int
    process: subprocess.Popen | None = None
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="azurite-"))
    persistent: bool = False  # keep data on disk (in workdir) across restart(), as real storage would

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{DEV_ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{DEV_ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/{DEV_ACCOUNT};"
        )

    def start(self) -> Azurite:
        if not AZURITE.exists():
            raise FileNotFoundError(f"{AZURITE} is missing: run `npm ci` (make does it) to install Azurite")
        self.process = subprocess.Popen(
            [str(AZURITE), "--silent", "--skipApiVersionCheck", "--disableTelemetry",
             *(["--location", self.workdir] if self.persistent else ["--inMemoryPersistence"]),
             "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1",
             "--tableHost", "127.0.0.1", "--blobPort", str(self.blob_port), "--queuePort", str(self.queue_port),
             "--tablePort", str(self.table_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=self.workdir,
        )
        for port in (self.blob_port, self.queue_port, self.table_port):
            wait_for_port(port, process=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start again on the same ports. In memory, all data is gone; persistent, it is kept."""
        if self.process is not None:
            stop_process(self.process)
        self.start()

    @classmethod
    def on_free_ports(cls, persistent: bool = False) -> Azurite:
        return cls(free_port(), free_port(), free_port(), persistent=persistent)


def python_module(module: str, *args: str, env: dict[str, str] | None = None,
                  **popen: object) -> subprocess.Popen:
    """Run ``python -m module`` from the repository root with this interpreter."""
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT,
                            env={**os.environ, **(env or {})}, **popen)  # type: ignore[arg-type]
