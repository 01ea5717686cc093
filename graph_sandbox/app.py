"""Wiring: the ``Sandbox`` object (config + state + services) and the Starlette application.

``build_app(sandbox)`` returns an ASGI app; ``graph_sandbox.testing.SandboxServer`` and
``python -m graph_sandbox`` serve it with uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import batching, bookings, calendar_delta, calendar_events, control, entra, silent_removal, subscriptions
from .calendar_events import Calendars
from .config import SandboxConfig
from .entra import Entra
from .errors import GraphError, graph_error
from .faults import Faults
from .gate import GraphGate
from .notifier import Notifier
from .state import State


class Sandbox:
    """One sandbox instance. ``base_url`` is set by whoever binds the socket (issuer and links use it)."""

    def __init__(self, config: SandboxConfig | None = None, base_url: str = "http://127.0.0.1:7072") -> None:
        self.config = config or SandboxConfig()
        self.config.tenant_id = self.config.tenant_id.lower()
        self.base_url = base_url.rstrip("/")
        self.state = State()
        self.faults = Faults(self)
        self.notifier = Notifier(self)
        self.calendars = Calendars(self)
        self.delta_tokens = calendar_delta.DeltaTokens()
        self.entra = Entra(self)
        self._default_roles = {a.client_id: list(a.roles) for a in self.config.apps}
        # The HTTPS listener (graph_sandbox.server): Entra's token endpoint as Microsoft's libraries want it.
        self.entra_url = self.base_url
        self.ca_file = ""
        self.tls_context: ssl.SSLContext | None = None
        self.tls_sock: socket.socket | None = None

    def serve_tls(self, url: str, ca_file: str, context: ssl.SSLContext, sock: socket.socket) -> None:
        self.entra_url, self.ca_file, self.tls_context, self.tls_sock = url, ca_file, context, sock

    def reset_state(self) -> None:
        """Forget all data, faults, limits and logs, and give the apps back their configured roles."""
        for app in self.config.apps:
            app.roles = list(self._default_roles.get(app.client_id, app.roles))
        self.state.reset()
        self.faults.reset()
        self.notifier.reset()
        self.delta_tokens.reset()


async def _graph_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GraphError)
    return graph_error(request, exc.status, exc.code, exc.message, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/v1.0"):
        if exc.status_code == 404:
            segment = request.url.path.rstrip("/").rsplit("/", 1)[-1]
            return graph_error(request, 400, "BadRequest", f"Resource not found for the segment '{segment}'.")
        if exc.status_code == 405:
            return graph_error(
                request, 405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target."
            )
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


def build_app(sandbox: Sandbox) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await sandbox.notifier.start()
        try:
            yield
        finally:
            await sandbox.notifier.stop()

    exception_handlers: dict[Any, Any] = {GraphError: _graph_error, HTTPException: _http_error}
    app = Starlette(
        routes=[*entra.routes, *bookings.routes, *calendar_events.routes, *subscriptions.routes, *control.routes,
                *silent_removal.routes, *calendar_delta.routes, *batching.routes],
        middleware=[Middleware(GraphGate, sandbox=sandbox)],
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )
    app.state.sandbox = sandbox
    return app
