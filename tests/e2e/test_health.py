"""GET /api/health through the local host, with each dependency up or down."""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from devhost.processes import Azurite, free_port


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
    assert body["status"] == "healthy"
    assert {d["name"]: d["ok"] for d in body["dependencies"]} == {"tables": True, "queues": True, "graph": True}
    assert "Executed 'Functions.health_check' (Succeeded" in host.log


def test_concurrent_probes_share_one_round_of_checks(app_host_factory, graph_stub_url) -> None:
    host = app_host_factory(GRAPH_BASE_URL=graph_stub_url).start()

    async def probes() -> list[int]:
        async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=50)) as client:
            answers = await asyncio.gather(*(client.get(f"{host.url}/api/health") for _ in range(50)))
        return [a.status_code for a in answers]

    before = _Unauthorized.requests
    assert asyncio.run(probes()) == [200] * 50
    assert _Unauthorized.requests - before <= 5  # 50 without sharing


def test_503_names_graph_when_it_does_not_answer(app_host_factory) -> None:
    host = app_host_factory(GRAPH_BASE_URL=f"http://127.0.0.1:{free_port()}/v1.0").start()
    response = httpx.get(f"{host.url}/api/health")
    assert response.status_code == 503
    body = response.json()
    assert {d["name"]: d["ok"] for d in body["dependencies"]} == {"tables": True, "queues": True, "graph": False}
    assert body["error"]["code"] == "DependencyUnavailable"
    assert "graph" in body["error"]["message"] and body["error"]["correlationId"]


@pytest.mark.slow
def test_503_when_storage_is_down_and_200_when_it_returns(app_host_factory, graph_stub_url) -> None:
    own = Azurite.on_free_ports().start()  # not the session's: this test stops it
    try:
        from tests.conftest import create_app_storage

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
