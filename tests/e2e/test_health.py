"""GET /api/health through the local host, with each dependency up or down."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from devhost.processes import Azurite, free_port


class _Unauthorized(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
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
