"""Serving a sandbox with uvicorn on a loopback socket, in the foreground (CLI) or in a thread (tests)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

import uvicorn

from . import demo
from .app import Sandbox, build_app
from .config import SandboxConfig

log = logging.getLogger("graph_sandbox")


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """Logs one readiness line once the socket really accepts connections."""

    ready_line: str = ""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.ready_line:
            log.info(self.ready_line)


def make_server(sandbox: Sandbox, sock: socket.socket, log_level: str = "warning") -> _Server:
    app = build_app(sandbox)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on")
    server = _Server(config)
    summary = demo.summary(sandbox)
    server.ready_line = (
        f"graph-sandbox ready on {sandbox.base_url} tenant={sandbox.config.tenant_id} "
        f"businesses={len(summary['businesses'])} users={len(summary['users'])}"
    )
    return server


def prepare(config: SandboxConfig | None, host: str, port: int) -> tuple[Sandbox, socket.socket]:
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    sandbox = Sandbox(config, base_url=f"http://{bound_host}:{bound_port}")
    if sandbox.config.seed:
        demo.seed(sandbox)
    return sandbox, sock


class ServerThread(threading.Thread):
    """Runs a prepared server on its own event loop."""

    def __init__(self, server: _Server, sock: socket.socket) -> None:
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
