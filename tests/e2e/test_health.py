"""GET /api/health (anonymous, up or down only) and /api/health/details (function key, the full report)
through the local host, with each dependency up or down."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from devhost.processes import Azurite, free_port

FUNCTION_KEY = {"x-functions-key": "local-function-key"}  # the local host's function key (devhost/config.py)


def without_correlation_id(body: dict) -> str:
    """The answer's text, less its random correlation id (whose digits could contain anything)."""
    error = {k: v for k, v in body.get("error", {}).items() if k != "correlationId"}
    return json.dumps({**body, "error": error})


class _Unauthorized(BaseHTTPRequestHandler):
    requests = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        time.sleep(0.2)  # a Graph that takes a moment, so probes overlap
        self.send_response(401)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def graph_stub_url():
    """Something that answers HTTP like Graph does without a token; health only needs an answer."""
    server = HTTPServer(("127.0.0.1", 0), _Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1.0"
    server.shutdown()


def test_healthy_when_every_dependency_answers(app_host_factory, graph_stub_url) -> None:
    host = app_host_factory(GRAPH_BASE_URL=graph_stub_url).start()
    response = httpx.get(f"{host.url}/api/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {"status": "healthy", "dependencies": [
        {"name": "tables", "ok": True}, {"name": "queues", "ok": True}, {"name": "graph", "ok": True}]}
    assert "Executed 'Functions.health_check' (Succeeded" in host.log


def test_details_need_a_function_key(app_host_factory, graph_stub_url) -> None:
    host = app_host_factory(GRAPH_BASE_URL=graph_stub_url).start()
    for headers, params in (({}, {}), ({"x-functions-key": "wrong"}, {}), ({}, {"code": "wrong"})):
        response = httpx.get(f"{host.url}/api/health/details", headers=headers, params=params)
        assert response.status_code == 401, response.text
        assert "tables" not in response.text
    for headers, params in ((FUNCTION_KEY, {}), ({}, {"code": "local-function-key"})):
        response = httpx.get(f"{host.url}/api/health/details", headers=headers, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "healthy"
        details = {d["name"]: d for d in body["dependencies"]}
        assert set(details) == {"tables", "queues", "graph"}
        assert details["graph"]["detail"] == "answered HTTP 401"
        assert all(d["ok"] and isinstance(d["durationMs"], int) for d in details.values())
    assert "Executed 'Functions.health_details' (Succeeded" in host.log


def test_concurrent_probes_share_one_round_of_checks(app_host_factory, graph_stub_url) -> None:
    host = app_host_factory(GRAPH_BASE_URL=graph_stub_url).start()

    async def probes() -> list[int]:
        async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=50)) as client:
            answers = await asyncio.gather(*(client.get(f"{host.url}/api/health") for _ in range(50)))
        return [a.status_code for a in answers]

    before = _Unauthorized.requests
    assert asyncio.run(probes()) == [200] * 50
    assert _Unauthorized.requests - before <= 5  # 50 without sharing


def test_keyed_and_anonymous_probes_share_one_round(app_host_factory, graph_stub_url) -> None:
    host = app_host_factory(GRAPH_BASE_URL=graph_stub_url).start()

    async def probes() -> list[int]:
        async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=40)) as client:
            answers = await asyncio.gather(
                *(client.get(f"{host.url}/api/health") for _ in range(20)),
                *(client.get(f"{host.url}/api/health/details", headers=FUNCTION_KEY) for _ in range(20)))
        return [a.status_code for a in answers]

    before = _Unauthorized.requests
    assert asyncio.run(probes()) == [200] * 40
    assert _Unauthorized.requests - before <= 5  # 40 without sharing


def test_503_names_graph_when_it_does_not_answer(app_host_factory) -> None:
    port = free_port()
    host = app_host_factory(GRAPH_BASE_URL=f"http://127.0.0.1:{port}/v1.0").start()
    response = httpx.get(f"{host.url}/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["dependencies"] == [{"name": "tables", "ok": True}, {"name": "queues", "ok": True},
                                    {"name": "graph", "ok": False}]
    assert body["error"]["code"] == "DependencyUnavailable"
    assert "graph" in body["error"]["message"] and body["error"]["correlationId"]
    # Anonymous callers learn that Graph is down, not where it is or how the connection failed.
    for leak in (str(port), "127.0.0.1", "Error", "durationMs", "detail"):
        assert leak not in without_correlation_id(body), leak

    keyed = httpx.get(f"{host.url}/api/health/details", headers=FUNCTION_KEY)
    assert keyed.status_code == 503
    graph = {d["name"]: d for d in keyed.json()["dependencies"]}["graph"]
    assert graph["ok"] is False and "ConnectError" in graph["detail"] and isinstance(graph["durationMs"], int)
    assert keyed.json()["error"]["code"] == "DependencyUnavailable"


@pytest.mark.slow
def test_503_when_storage_is_down_and_200_when_it_returns(app_host_factory, graph_stub_url) -> None:
    own = Azurite.on_free_ports().start()  # not the session's: this test stops it
    try:
        from testing.storage import create_app_storage

        create_app_storage(own.connection_string)
        host = app_host_factory(GRAPH_BASE_URL=graph_stub_url, AzureWebJobsStorage=own.connection_string,
                                HEALTH_TIMEOUT_SECONDS="2").start()
        assert httpx.get(f"{host.url}/api/health").status_code == 200
        own.process.kill()
        own.process.wait()
        response = httpx.get(f"{host.url}/api/health", timeout=10)
        assert response.status_code == 503
        failed = {d["name"] for d in response.json()["dependencies"] if not d["ok"]}
        assert failed == {"tables", "queues"}
        visible = without_correlation_id(response.json())
        assert str(own.table_port) not in visible and str(own.queue_port) not in visible and "detail" not in visible
        keyed = httpx.get(f"{host.url}/api/health/details", headers=FUNCTION_KEY, timeout=10).json()
        assert all(d["detail"] for d in keyed["dependencies"] if d["name"] in failed)
        own.start()
        create_app_storage(own.connection_string)
        assert httpx.get(f"{host.url}/api/health", timeout=10).status_code == 200
    finally:
        own.stop()


def test_a_bad_setting_stops_the_host_with_its_name(app_host_factory) -> None:
    host = app_host_factory(MAX_FLOWS_PER_MAILBOX="many")
    with pytest.raises(RuntimeError, match="exited with 1"):
        host.start()
    assert "MAX_FLOWS_PER_MAILBOX" in host.log
    assert "Traceback" not in host.log
