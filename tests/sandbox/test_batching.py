"""``POST /v1.0/$batch``: up to 20 requests, each through the gate on its own (its own 429), answers by id."""

from __future__ import annotations

import httpx

from graph_sandbox import SandboxServer

CLINIC = "clinic@contoso.test"


def test_a_batch_answers_each_request_by_id_and_each_is_throttled_on_its_own(sb: SandboxServer, graph) -> None:
    sb.add_fault(method="GET", path="/v1.0/users/salon@contoso.test/events", status=429, retryAfter=7)
    r = graph.post("/$batch", json={"requests": [
        {"id": "a", "method": "GET", "url": f"/users/{CLINIC}/events"},
        {"id": "b", "method": "GET", "url": "/users/salon@contoso.test/events"},
        {"id": "c", "method": "GET", "url": "/users/nobody@contoso.test/events"}]})
    assert r.status_code == 200
    answers = {a["id"]: a for a in r.json()["responses"]}
    assert answers["a"]["status"] == 200 and len(answers["a"]["body"]["value"]) == 4
    assert (answers["b"]["status"], answers["b"]["headers"].get("retry-after")) == (429, "7")
    assert answers["c"]["status"] == 404
    logged = sb.requests()
    assert sorted(e["clientRequestId"] for e in logged if e["path"].startswith("/v1.0/users/")) == [
        "batched:a", "batched:b", "batched:c"]
    assert sum(1 for e in logged if e["path"] == "/v1.0/$batch") == 1


def test_more_than_20_requests_or_no_token_are_refused(sb: SandboxServer, graph) -> None:
    many = [{"id": str(n), "method": "GET", "url": f"/users/{CLINIC}"} for n in range(21)]
    assert graph.post("/$batch", json={"requests": many}).status_code == 400
    twice = [{"id": "1", "method": "GET", "url": "/users/x"}, {"id": "1", "method": "GET", "url": "/users/y"}]
    assert graph.post("/$batch", json={"requests": twice}).status_code == 400
    assert httpx.post(f"{sb.graph_url}/$batch", json={"requests": many[:1]}, trust_env=False).status_code == 401
