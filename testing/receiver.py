"""A local receiver standing in for Power Automate: records every request and answers from a plan.

It runs uvicorn (starlette) in a thread on 127.0.0.1. Each flow name has a plan — a list of replies
(status, headers, delay) used in order, then 200 for good — so a test can say "500, 500, then 200" or
"410". It also echoes Graph's ``validationToken`` on any path, so the Graph sandbox can complete a
subscription handshake against it when a test needs a real subscription (``PUBLIC_BASE_URL`` = this).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from devhost.processes import free_port

SECRET = "TOP-SECRET-SIG"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: str = ""


@dataclass(frozen=True)
class Received:
    flow: str
    at: float
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.plans: dict[str, deque[Reply]] = defaultdict(deque)
        self.received: list[Received] = []
        self.arrivals: list[tuple[str, float]] = []  # (flow, time) when a request arrives, before any delay
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/flows/{name}", self._flow, methods=["POST"]),
                                Route("/{path:path}", self._other, methods=["GET", "POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     access_log=False, lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    # ---- test API ----

    def url(self, flow: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        """The flow's callback URL, with a signature in its query string as Power Automate's have."""
        return f"{scheme}://{host}:{self.port}/flows/{flow}?api-version=2016-06-01&sp=%2Ftriggers&sig={SECRET}-{flow}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def plan(self, flow: str, *replies: Reply | int) -> None:
        with self._lock:
            self.plans[flow].extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def requests(self, flow: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if flow is None or r.flow == flow]

    def wait_for(self, count: int, flow: str | None = None, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.requests(flow)
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"receiver got {len(self.requests(flow))} of {count} requests in {timeout} s")

    # ---- server ----

    async def _flow(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.body()
        with self._lock:
            self.arrivals.append((name, time.time()))
            reply = self.plans[name].popleft() if self.plans[name] else Reply(200)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        with self._lock:
            self.received.append(Received(name, time.time(), {k.lower(): v for k, v in request.headers.items()},
                                          body, reply.status))
        return Response(reply.body, status_code=reply.status, headers=reply.headers)

    async def _other(self, request: Request) -> Response:
        token = request.query_params.get("validationToken")
        if token is not None:  # Graph's subscription handshake
            return PlainTextResponse(token, headers={"X-Content-Type-Options": "nosniff"})
        return Response(status_code=202)

    def start(self) -> Receiver:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("receiver did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
