"""HTTP functions through the local host over real HTTP: routing, methods, auth levels, responses."""

from __future__ import annotations

import httpx
import pytest


def assert_host_answer(response: httpx.Response, status: int) -> None:
    """The Functions runtime's own answer, given before any function runs: a bare status, no app error."""
    assert response.status_code == status, response.text
    assert response.content == b""
    assert response.headers["content-length"] == "0"
    assert "content-type" not in response.headers
    assert "x-correlation-id" not in response.headers


def test_route_parameters_and_constraints(client: httpx.Client) -> None:
    assert client.get("/api/items/42").json() == {"kind": "number", "id": "42"}
    named = client.get("/api/items/widget%20one").json()
    assert named["kind"] == "name" and named["name"] == "widget one"
    # A literal segment beats a parameter, whatever the registration order.
    assert client.get("/api/items/special").text == "special"
    # Literal segments and the prefix match case-insensitively, as on Azure.
    assert client.get("/API/Items/42").json()["kind"] == "number"


def test_request_parts_reach_the_function(client: httpx.Client) -> None:
    body = client.put("/api/items/x", params={"a": "1", "b": "two"}, headers={"x-test": "yes"},
                      content=b"payload").json()
    assert body == {"kind": "name", "name": "x", "method": "PUT", "query": {"a": "1", "b": "two"},
                    "header": "yes", "body": "payload"}


def test_non_2xx_passes_through_with_headers_and_mimetype(client: httpx.Client) -> None:
    response = client.get("/api/teapot")
    assert response.status_code == 418
    assert response.text == "short and stout"
    assert response.headers["x-kind"] == "teapot"
    assert response.headers["location"] == "/x"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_unknown_route_and_wrong_method_are_the_runtimes_bare_404(client: httpx.Client) -> None:
    assert_host_answer(client.get("/api/nothing/here"), 404)
    assert_host_answer(client.get("/elsewhere/items/1"), 404)
    # The methods are part of the route, as on Azure: no 405 and no Allow header, whichever route matched.
    response = client.post("/api/items/x")
    assert_host_answer(response, 404)
    assert "allow" not in response.headers
    assert_host_answer(client.delete("/api/items/42"), 404)
    # A method outside the route is refused before the key is looked at: 404, not 401.
    assert_host_answer(client.post("/api/keyed"), 404)
    # The same path still serves the methods its functions accept, and a route that refuses the method does
    # not hide a less specific one that accepts it: PUT /items/42 skips items/{id:int} (GET) for items/{name}.
    assert client.put("/api/items/x").json()["method"] == "PUT"
    assert client.put("/api/items/42").json()["kind"] == "name"


def test_a_failing_function_gives_the_hosts_bare_500_and_a_log_line(client: httpx.Client, sample_host) -> None:
    assert_host_answer(client.get("/api/boom"), 500)
    assert "Executed 'Functions.boom' (Failed" in sample_host.log
    assert "the function failed" in sample_host.log


@pytest.mark.parametrize(
    ("path", "headers", "params", "status"),
    [
        ("/api/keyed", {}, {}, 401),
        ("/api/keyed", {"x-functions-key": "wrong"}, {}, 401),
        ("/api/keyed", {"x-functions-key": "local-function-key"}, {}, 200),
        ("/api/keyed", {}, {"code": "local-function-key"}, 200),
        ("/api/keyed", {"x-functions-key": "local-master-key"}, {}, 200),
        ("/api/admin-only", {"x-functions-key": "local-function-key"}, {}, 401),
        ("/api/admin-only", {"x-functions-key": "local-master-key"}, {}, 200),
        ("/api/teapot", {}, {}, 418),
    ],
)
def test_auth_levels(client: httpx.Client, path: str, headers: dict, params: dict, status: int) -> None:
    response = client.get(path, headers=headers, params=params)
    assert response.status_code == status
    if status == 401:
        assert_host_answer(response, 401)


def test_one_log_line_per_invocation(client: httpx.Client, sample_host) -> None:
    for _ in range(3):
        client.get("/api/items/7")
    lines = [line for line in sample_host.log.splitlines() if "Executed 'Functions.item_by_number'" in line]
    assert len(lines) == 3
    assert all("Succeeded" in line and "trigger=http GET /api/items/7" in line and "duration=" in line
               for line in lines)
