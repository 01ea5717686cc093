"""Starting the sandbox: the CLI with its readiness line, reset/seed, and the demo data."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from graph_sandbox import SandboxServer

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    tls_dir = tempfile.mkdtemp(prefix="sandbox-tls-")  # and a free HTTPS port: 7075 may be another sandbox's
    proc = subprocess.Popen(
        [sys.executable, "-m", "graph_sandbox", "--port", str(port), "--tls-port", "0", "--tls-dir", tls_dir, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 20
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "ready on" in line:
            return proc, line
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("no readiness line")


def test_cli_starts_seeded_on_loopback_and_logs_one_ready_line() -> None:
    proc, line = _run_cli()
    try:
        assert "http://127.0.0.1:" in line and "businesses=2" in line
        base = line.split("ready on ", 1)[1].split()[0]
        health = httpx.get(f"{base}/_sandbox/health", trust_env=False).json()
        assert health["status"] == "ok" and health["baseUrl"] == base
        users = httpx.get(f"{base}/_sandbox/users", trust_env=False).json()["value"]
        assert "outsider@contoso.test" in {u["upn"] for u in users}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_no_seed_starts_empty() -> None:
    proc, line = _run_cli("--no-seed")
    try:
        assert "businesses=0" in line
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_reset_empties_and_seed_restores(sb: SandboxServer) -> None:
    sb.reset()
    assert sb.control("GET", "users")["value"] == []
    headers = sb.graph_headers()  # apps are configuration, not state: tokens still work
    assert httpx.get(f"{sb.graph_url}/subscriptions", headers=headers, trust_env=False).json()["value"] == []
    r = httpx.get(f"{sb.graph_url}/solutions/bookingBusinesses/clinic@contoso.test", headers=headers, trust_env=False)
    assert r.status_code == 404
    summary = sb.seed()
    assert {b["id"] for b in summary["businesses"]} == {"clinic@contoso.test", "salon@contoso.test"}


def test_ids_are_stable_across_seeds(sb: SandboxServer) -> None:
    first = {u["upn"]: u["id"] for u in sb.control("GET", "users")["value"]}
    sb.seed()
    assert {u["upn"]: u["id"] for u in sb.control("GET", "users")["value"]} == first


def test_demo_data_matches_the_issue(sb: SandboxServer, graph: httpx.Client) -> None:
    pref = {"Prefer": "include-unknown-enum-members"}
    clinic = {
        s["emailAddress"]: s["role"]
        for s in graph.get("/solutions/bookingBusinesses/clinic@contoso.test/staffMembers", headers=pref).json()[
            "value"
        ]
    }
    assert clinic == {
        "admin@contoso.test": "administrator",
        "viewer@contoso.test": "viewer",
        "scheduler@contoso.test": "scheduler",
        "member@contoso.test": "teamMember",
    }
    salon = graph.get("/solutions/bookingBusinesses/salon@contoso.test/staffMembers").json()["value"]
    assert [(s["emailAddress"], s["role"]) for s in salon] == [("admin@contoso.test", "administrator")]
    users = {u["upn"] for u in sb.control("GET", "users")["value"]}
    assert {
        "admin@contoso.test",
        "viewer@contoso.test",
        "scheduler@contoso.test",
        "member@contoso.test",
        "outsider@contoso.test",
    } <= users
    services = graph.get("/solutions/bookingBusinesses/clinic@contoso.test/services").json()["value"]
    assert sorted(s["maximumAttendeesCount"] for s in services) == [1, 10]
    assert all(s["customQuestions"] for s in services)
    questions = graph.get("/solutions/bookingBusinesses/clinic@contoso.test/customQuestions").json()["value"]
    assert {q["answerInputType"] for q in questions} == {"text", "radioButton"}
    appts = graph.get("/solutions/bookingBusinesses/clinic@contoso.test/appointments").json()["value"]
    assert {a["maximumAttendeesCount"] for a in appts} == {1, 10}
    full = [graph.get(f"/solutions/bookingBusinesses/clinic@contoso.test/appointments/{a['id']}").json() for a in appts]
    assert all(c["customQuestionAnswers"] for a in full for c in a["customers"])
    assert any(a["serviceNotes"] for a in full) and any(c["notes"] for a in full for c in a["customers"])


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_https_listener_is_trusted_through_its_ca_file_under_both_names(sb: SandboxServer, host: str) -> None:
    import ssl
    from urllib.parse import urlsplit

    port = urlsplit(sb.entra_url).port
    url = f"https://{host}:{port}/{sb.tenant_id}/v2.0/.well-known/openid-configuration"
    assert httpx.get(url, verify=ssl.create_default_context(cafile=sb.ca_file), trust_env=False).status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(url, trust_env=False)  # the system's roots do not know the sandbox's authority
