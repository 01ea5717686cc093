"""``SandboxServer``: a sandbox on a free 127.0.0.1 port in a background thread, for tests.

    with SandboxServer() as sb:                       # seeded with the demo tenant
        token = sb.app_token()                        # client-credentials token for Graph
        httpx.get(sb.graph_url + "/solutions/bookingBusinesses", headers={"Authorization": f"Bearer {token}"})

Shrink Graph's timings with a ``SandboxConfig`` (e.g. ``validation_timeout_s=0.5``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from .app import Sandbox
from .config import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, GRAPH_AUDIENCE, SandboxConfig
from .server import ServerThread, make_server, prepare


class SandboxServer:
    def __init__(self, config: SandboxConfig | None = None, *, port: int = 0, log_level: str = "warning") -> None:
        self.sandbox: Sandbox
        self.sandbox, sock = prepare(config, "127.0.0.1", port)
        self._server = make_server(self.sandbox, sock, log_level)
        self._thread = ServerThread(self._server, sock)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if self._thread.error or not self._thread.is_alive():
                raise RuntimeError(f"graph sandbox failed to start: {self._thread.error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("graph sandbox did not start within 10 s")
            time.sleep(0.01)
        self.http = httpx.Client(base_url=self.base_url, timeout=30, trust_env=False)

    # ---- addresses ----

    @property
    def base_url(self) -> str:
        return self.sandbox.base_url

    @property
    def graph_url(self) -> str:
        return f"{self.base_url}/v1.0"

    @property
    def tenant_id(self) -> str:
        return self.sandbox.config.tenant_id

    @property
    def entra_url(self) -> str:
        """The HTTPS listener: Entra's authority for Microsoft's token libraries (trust ``ca_file``)."""
        return self.sandbox.entra_url

    @property
    def ca_file(self) -> str:
        return self.sandbox.ca_file

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/{self.tenant_id}/oauth2/v2.0/token"

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/{self.tenant_id}/v2.0"

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/{self.tenant_id}/discovery/v2.0/keys"

    # ---- helpers (all go through HTTP, like any client) ----

    def app_token(self, client_id: str = DEFAULT_CLIENT_ID, client_secret: str = DEFAULT_CLIENT_SECRET) -> str:
        r = self.http.post(
            self.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
                "scope": f"{GRAPH_AUDIENCE}/.default",
            },
        )
        r.raise_for_status()
        return str(r.json()["access_token"])

    def graph_headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.app_token()}", **extra}

    def user_token(self, upn: str, kind: str = "valid") -> str:
        r = self.http.post("/_sandbox/tokens/user", json={"upn": upn, "kind": kind})
        r.raise_for_status()
        return str(r.json()["access_token"])

    def control(self, method: str, path: str, json: Any = None) -> Any:
        r = self.http.request(method, f"/_sandbox/{path.lstrip('/')}", json=json)
        r.raise_for_status()
        return r.json() if r.content else None

    def reset(self) -> None:
        self.control("POST", "reset")

    def seed(self) -> dict[str, Any]:
        return dict(self.control("POST", "seed"))

    def add_fault(self, **rule: Any) -> dict[str, Any]:
        return dict(self.control("POST", "faults", rule))

    def requests(self, **filters: str) -> list[dict[str, Any]]:
        return list(self.http.get("/_sandbox/requests", params=filters).json()["value"])

    def notifications(self, **filters: str) -> list[dict[str, Any]]:
        return list(self.http.get("/_sandbox/notifications", params=filters).json()["value"])

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
        """Poll until ``predicate()`` is truthy; return its value or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            time.sleep(interval)

    # ---- shutdown ----

    def stop(self) -> None:
        self.http.close()
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> SandboxServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NotificationReceiver:
    """A stand-in for the app's notification endpoint, on a free 127.0.0.1 port.

    ``validation``: how it answers ``?validationToken=`` — ``"echo"`` (correct), ``"wrong"`` (another
    token), ``"json"`` (right token, wrong content type), ``"status:<code>"``, or ``"delay:<seconds>"``
    (correct, but late). Notifications are recorded in ``received`` (parsed JSON bodies) and answered
    from ``plan``, a list of ``(status, delay_seconds)`` consumed in order, then ``default``.
    """

    def __init__(self, validation: str = "echo", default: tuple[int, float] = (202, 0.0)) -> None:
        import asyncio
        import threading
        from urllib.parse import parse_qs

        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import PlainTextResponse, Response
        from starlette.routing import Route

        self.validation = validation
        self.default = default
        self.plan: list[tuple[int, float]] = []
        self.received: list[dict[str, Any]] = []
        self.validations: list[str] = []
        self._lock = threading.Lock()

        async def endpoint(request: Request) -> Response:
            # parse_qs decodes "+" and %xx exactly as a real endpoint must before echoing.
            tokens = parse_qs(request.url.query).get("validationToken")
            if tokens is not None:
                token = tokens[0]
                self.validations.append(token)
                mode = self.validation
                if mode.startswith("delay:"):
                    await asyncio.sleep(float(mode.split(":", 1)[1]))
                    mode = "echo"
                if mode == "echo":
                    return PlainTextResponse(token)
                if mode == "wrong":
                    return PlainTextResponse(token + "x")
                if mode == "json":
                    return Response(f'"{token}"', media_type="application/json")
                if mode.startswith("status:"):
                    return PlainTextResponse(token, status_code=int(mode.split(":", 1)[1]))
                raise AssertionError(f"unknown validation mode {mode}")
            body = await request.json()
            with self._lock:
                self.received.append(body)
                status, delay = self.plan.pop(0) if self.plan else self.default
            if delay:
                await asyncio.sleep(delay)
            return Response(status_code=status)

        import uvicorn

        from .server import ServerThread, bind

        sock = bind()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                                   timeout_graceful_shutdown=1))
        self._thread = ServerThread(self._server, sock)  # type: ignore[arg-type]
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("receiver did not start")
            time.sleep(0.01)

    def items(self) -> list[dict[str, Any]]:
        """Every notification item received, flattened across POSTs."""
        with self._lock:
            return [item for body in self.received for item in body.get("value", [])]

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> NotificationReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
