"""Faults and Graph's limits on demand, and the request log."""

from __future__ import annotations

import concurrent.futures
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from graph_sandbox import SandboxConfig, SandboxServer
from graph_sandbox.testing import NotificationReceiver

CLINIC = "clinic@contoso.test"
B = f"/solutions/bookingBusinesses/{CLINIC}"


@pytest.mark.parametrize(("status", "code"), [(429, "TooManyRequests"), (503, "serviceNotAvailable")])
def test_throttle_faults_carry_retry_after_and_are_count_limited(
    sb: SandboxServer, graph: httpx.Client, status: int, code: str
) -> None:
    rule = sb.add_fault(
        method="GET", path="/v1.0/solutions/bookingBusinesses/*/appointments", status=status, retryAfter=7, count=2
    )
    first = graph.get(f"{B}/appointments")
    assert first.status_code == status
    assert first.headers["Retry-After"] == "7"
    assert first.json()["error"]["code"] == code
    assert first.json()["error"]["innerError"]["request-id"] == first.headers["request-id"]
    assert graph.get(f"{B}/appointments").status_code == status
    assert graph.get(f"{B}/appointments").status_code == 200  # only the next 2 matching requests fail
    assert graph.get(f"{B}/staffMembers").status_code == 200  # other paths never matched
    listed = {r["id"]: r for r in sb.control("GET", "faults")["value"]}
    assert listed[rule["id"]]["remaining"] == 0 and listed[rule["id"]]["hits"] == 2


def test_method_must_match(sb: SandboxServer, graph: httpx.Client) -> None:
    sb.add_fault(method="POST", path="/v1.0/subscriptions", status=503, count=None)
    assert graph.get("/subscriptions").status_code == 200
    r = graph.post("/subscriptions", json={})
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"  # 429/503 always say when to come back


def test_latency_fault_delays_the_real_answer(sb: SandboxServer, graph: httpx.Client) -> None:
    sb.add_fault(path="/v1.0/solutions/bookingBusinesses/*", latencyMs=300)
    started = time.monotonic()
    r = graph.get("/solutions/bookingBusinesses/clinic@contoso.test")
    assert r.status_code == 200 and time.monotonic() - started >= 0.3
    started = time.monotonic()
    graph.get("/solutions/bookingBusinesses/clinic@contoso.test")
    assert time.monotonic() - started < 0.3


def test_faults_can_hit_the_token_endpoint(sb: SandboxServer) -> None:
    sb.add_fault(method="POST", path="/*/oauth2/v2.0/token", status=503)
    with pytest.raises(httpx.HTTPStatusError):
        sb.app_token()
    assert sb.app_token()


def test_fault_rules_validate_and_can_be_removed(sb: SandboxServer) -> None:
    assert sb.http.post("/_sandbox/faults", json={"status": 200}).status_code == 400
    assert sb.http.post("/_sandbox/faults", json={"count": 0}).status_code == 400
    rule = sb.add_fault(path="/x", status=500)
    assert sb.http.delete(f"/_sandbox/faults/{rule['id']}").status_code == 204
    assert sb.http.delete(f"/_sandbox/faults/{rule['id']}").status_code == 404
    sb.add_fault(path="/y", status=500)
    assert sb.http.delete("/_sandbox/faults").status_code == 204
    assert sb.control("GET", "faults")["value"] == []


def test_request_log_records_what_was_called(sb: SandboxServer, graph: httpx.Client) -> None:
    sb.http.delete("/_sandbox/requests")
    sb.add_fault(method="GET", path="/v1.0/subscriptions", status=429)
    graph.get("/subscriptions", headers={"client-request-id": "cid-1", "Prefer": "include-unknown-enum-members"})
    graph.post(f"{B}/appointments/none/cancel", json={"cancellationMessage": "x"})
    log = sb.requests(path="/v1.0/*")
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("GET", "/v1.0/subscriptions", 429),
        ("POST", f"/v1.0{B}/appointments/none/cancel", 404),
    ]
    first, second = log
    assert first["fault"] and first["clientRequestId"] == "cid-1" and first["prefer"] == "include-unknown-enum-members"
    assert first["appId"] == "a99b0000-0000-4000-8000-000000000002"
    assert second["body"] == {"cancellationMessage": "x"}
    assert second["seq"] > first["seq"]
    assert sb.requests(method="POST", since=str(first["seq"])) == [second]
    sb.app_token()
    tokens = sb.requests(path="*/oauth2/v2.0/token")
    assert tokens and all(e["body"] == "<form>" for e in tokens)  # the client secret is never logged


def test_mailbox_concurrency_limit(sb: SandboxServer, graph: httpx.Client) -> None:
    assert sb.control("GET", "limits")["mailboxConcurrencyLimit"] == 4  # on by default
    sb.add_fault(method="GET", path="/v1.0/solutions/bookingBusinesses/*/staffMembers", latencyMs=400, count=None)
    headers = dict(graph.headers)

    def call(_: int) -> httpx.Response:
        return httpx.get(f"{sb.graph_url}{B}/staffMembers", headers=headers, timeout=10, trust_env=False)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(8)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses.count(200) == 4 and statuses.count(429) == 4
    throttled = next(r for r in answers if r.status_code == 429)
    assert throttled.json()["error"]["code"] == "ApplicationThrottled"
    assert "MailboxConcurrency" in throttled.json()["error"]["message"]
    assert int(throttled.headers["Retry-After"]) >= 1
    # Another mailbox is not affected, and the slots are free again afterwards.
    assert graph.get("/solutions/bookingBusinesses/salon@contoso.test/staffMembers").status_code == 200
    sb.control("DELETE", "faults")
    assert graph.get(f"{B}/staffMembers").status_code == 200


def test_outlook_limits_are_on_by_default_and_a_test_may_turn_them_off(sb: SandboxServer) -> None:
    limits = sb.control("GET", "limits")
    assert limits["mailboxConcurrency"] is True and limits["mailboxRequests"] is True
    assert limits["mailboxRequestLimit"] == 10_000 and limits["mailboxRequestWindowSeconds"] == 600
    assert limits["subscriptionWrites"] is False
    assert limits["subscriptionWriteLimit"] == 500 and limits["subscriptionWriteWindowSeconds"] == 20
    kinder = sb.control("POST", "limits", {"mailboxConcurrency": False, "mailboxRequests": False})
    assert kinder["mailboxConcurrency"] is False and kinder["mailboxRequests"] is False
    sb.reset()  # reset restores the configured defaults
    assert sb.control("GET", "limits")["mailboxConcurrency"] is True


def test_mailbox_request_limit_per_app_and_mailbox() -> None:
    """10,000 requests in 10 minutes per app and mailbox (here 6 in 1 s): the calendar and the Bookings routes of a
    mailbox share its count; another mailbox has its own; the window slides."""
    config = SandboxConfig(mailbox_request_limit=6, mailbox_request_window_s=1.0)
    with SandboxServer(config) as server:
        client = httpx.Client(base_url=server.graph_url, headers=server.graph_headers(), trust_env=False)
        paths = [f"{B}/staffMembers", f"/users/{CLINIC}/events", f"{B}/services"] * 2
        assert [client.get(p).status_code for p in paths] == [200] * 6
        throttled = client.get(f"/users/{CLINIC}/calendarView?startDateTime=2030-01-01&endDateTime=2030-01-02")
        assert throttled.status_code == 429 and throttled.json()["error"]["code"] == "ApplicationThrottled"
        assert 1 <= int(throttled.headers["Retry-After"]) <= 1
        assert client.get("/solutions/bookingBusinesses/salon@contoso.test/services").status_code == 200
        assert client.get("/subscriptions").status_code == 200  # not a mailbox's route
        time.sleep(1.05)
        assert client.get(f"{B}/services").status_code == 200
        assert server.requests(path=f"/v1.0{B}/*", status="429") == [] and len(
            [r for r in server.requests() if r["throttled"] == "mailboxRequests"]) == 1
        client.close()


def test_subscription_write_limit() -> None:
    config = SandboxConfig(subscription_write_limit=5, subscription_write_window_s=1.0, validation_timeout_s=1)
    with SandboxServer(config) as server, NotificationReceiver() as receiver:
        server.control("POST", "limits", {"subscriptionWrites": True})
        client = httpx.Client(base_url=server.graph_url, headers=server.graph_headers(), trust_env=False)
        body = {
            "changeType": "created",
            "notificationUrl": receiver.url,
            "resource": f"/users/{CLINIC}/events",
            "expirationDateTime": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        }
        sub = client.post("/subscriptions", json=body).json()
        renew = {"expirationDateTime": (datetime.now(UTC) + timedelta(hours=2)).isoformat()}
        statuses = [client.patch(f"/subscriptions/{sub['id']}", json=renew).status_code for _ in range(6)]
        assert statuses == [200, 200, 200, 200, 429, 429]
        throttled = client.patch(f"/subscriptions/{sub['id']}", json=renew)
        assert throttled.status_code == 429 and 1 <= int(throttled.headers["Retry-After"]) <= 1
        assert client.get(f"/subscriptions/{sub['id']}").status_code == 200  # reads are not writes
        time.sleep(1.05)
        assert client.patch(f"/subscriptions/{sub['id']}", json=renew).status_code == 200
        client.close()


def test_token_endpoint_fault_is_entra_shaped_with_retry_after(sb: SandboxServer) -> None:
    sb.add_fault(method="POST", path="/*/oauth2/v2.0/token", status=503, retryAfter=3)
    r = sb.http.post(sb.token_url, data={"grant_type": "client_credentials"})
    assert r.status_code == 503 and r.headers["Retry-After"] == "3"
    assert r.json()["error"] == "temporarily_unavailable"
