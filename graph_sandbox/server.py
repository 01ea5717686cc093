"""Serving a sandbox with uvicorn on loopback sockets, in the foreground (CLI) or in a thread (tests).

Two sockets serve the same app: plain HTTP (``sandbox.base_url``: Graph, the issuer, the control API) and
HTTPS (``sandbox.entra_url``, certificate from ``graph_sandbox.tls``), because Microsoft's token libraries
only talk to an ``https`` authority. The app's on-behalf-of token requests go to the HTTPS one."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any

import uvicorn

from . import demo
from .app import Sandbox, build_app
from .config import SandboxConfig
from .tls import make_certificate

log = logging.getLogger("graph_sandbox")


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


# A client that never closes its keep-alive connection (azure-identity's aiohttp sessions in tests) holds uvicorn's
# graceful shutdown open indefinitely; the sandbox has nothing to finish: cap the wait.
_SHUTDOWN: dict[str, Any] = {"timeout_graceful_shutdown": 1}


class _Server(uvicorn.Server):
    """Logs one readiness line once the socket really accepts connections."""

    ready_line: str = ""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.ready_line:
            log.info(self.ready_line)


class _TlsConfig(uvicorn.Config):
    """uvicorn's config with a ready-made server SSL context (uvicorn only takes key and certificate files)."""

    def __init__(self, *args: Any, context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._context = context

    def load(self) -> None:
        super().load()
        self.ssl = self._context


class SandboxServers:
    """The plain and the TLS server of one sandbox, driven as one (``serve``, ``started``, ``should_exit``)."""

    def __init__(self, plain: _Server, tls: _Server | None, tls_sock: socket.socket | None) -> None:
        self.plain, self.tls, self.tls_sock = plain, tls, tls_sock

    async def serve(self, sockets: list[socket.socket]) -> None:
        runs = [self.plain.serve(sockets=sockets)]
        if self.tls is not None and self.tls_sock is not None:
            runs.append(self.tls.serve(sockets=[self.tls_sock]))
        await asyncio.gather(*runs)

    @property
    def started(self) -> bool:
        return self.plain.started and (self.tls is None or self.tls.started)

    @property
    def should_exit(self) -> bool:
        return self.plain.should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self.plain.should_exit = value
        if self.tls is not None:
            self.tls.should_exit = value


def make_server(sandbox: Sandbox, sock: socket.socket, log_level: str = "warning") -> SandboxServers:
    app = build_app(sandbox)
    plain = _Server(uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", **_SHUTDOWN))
    summary = demo.summary(sandbox)
    plain.ready_line = (
        f"graph-sandbox ready on {sandbox.base_url} (https: {sandbox.entra_url}) tenant={sandbox.config.tenant_id} "
        f"businesses={len(summary['businesses'])} users={len(summary['users'])}"
    )
    tls = None
    if sandbox.tls_context is not None:
        # The lifespan (expiry sweeps, notifier) runs once, with the plain server.
        tls = _Server(_TlsConfig(app, log_level=log_level, access_log=False, lifespan="off", **_SHUTDOWN,
                                 context=sandbox.tls_context))
    return SandboxServers(plain, tls, sandbox.tls_sock)


def prepare(config: SandboxConfig | None, host: str, port: int, tls_port: int | None = 0,
            tls_dir: Path | None = None) -> tuple[Sandbox, socket.socket]:
    """Bind the sockets and build the sandbox. ``tls_port=None``: no HTTPS listener; ``tls_dir``: where
    ``ca.pem`` goes (default: a fresh temporary directory)."""
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    sandbox = Sandbox(config, base_url=f"http://{bound_host}:{bound_port}")
    if tls_port is not None:
        tls_sock = bind(host, tls_port)
        tls_host, bound_tls_port = tls_sock.getsockname()[:2]
        ca_file, context = make_certificate(tls_dir or Path(tempfile.mkdtemp(prefix="graph-sandbox-tls-")))
        sandbox.serve_tls(f"https://{tls_host}:{bound_tls_port}", str(ca_file), context, tls_sock)
    if sandbox.config.seed:
        demo.seed(sandbox)
    return sandbox, sock


class ServerThread(threading.Thread):
    """Runs a prepared server on its own event loop."""

    def __init__(self, server: SandboxServers, sock: socket.socket) -> None:
        super().__init__(name="graph-sandbox", daemon=True)
        self.server = server
        self.sock = sock
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self.server.serve(sockets=[self.sock]))
        except BaseException as exc:  # reported to the starting thread
            self.error = exc
        finally:
            self.loop.close()

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop (for direct, thread-safe state access in tests)."""
        assert self.loop is not None

        async def wrapper() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout=10)
