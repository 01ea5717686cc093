"""The callers' share of a mailbox's Graph calls through two real hosts sharing one storage account: a viewer
asking both in turn spends one allowance, not one per host, and beyond it each host answers 429
``GraphBudgetSpent`` with ``Retry-After`` without asking Graph (whose own limit is never reached)."""

from __future__ import annotations

import time

import httpx
import pytest

from shared.records import graph_budget
from testing.storage import clean_app_storage
from tests.conftest import QUEUE_CONSUMERS_OFF, sandbox_settings

CLINIC = "clinic@contoso.test"
TIMERS_OFF = {f"AzureWebJobs.{name}.Disabled": "true"
              for name in ("refresh_directory", "resync_mailboxes", "renew_subscriptions", "sweep_outbox")}


@pytest.mark.slow
def test_two_hosts_spend_one_allowance(app_host_factory, sandbox, graph_env, azurite) -> None:
    clean_app_storage(azurite.connection_string)
    settings = {**sandbox_settings(sandbox), **QUEUE_CONSUMERS_OFF, **TIMERS_OFF}
    hosts = [app_host_factory(**settings).start(), app_host_factory(**settings).start()]
    graph = httpx.Client(base_url=f"{sandbox.graph_url}/solutions/bookingBusinesses/{CLINIC}",
                         headers=sandbox.graph_headers(), timeout=30)
    appointment = graph.get("/appointments").json()["value"][0]["id"]
    headers = {"Authorization": f"Bearer {sandbox.user_token('viewer@contoso.test')}"}
    answered: dict[int, list[int]] = {0: [], 1: []}
    started = time.monotonic()
    with httpx.Client(headers=headers, timeout=60) as client:
        for n in range(50):  # each Get an appointment: the staff check and the read, 2 calls
            host = n % 2
            response = client.get(f"{hosts[host].url}/api/v1/bookingBusinesses/{CLINIC}/appointments/{appointment}")
            answered[host].append(response.status_code)
            if response.status_code == 429:
                error = response.json()["error"]
                assert error["code"] == "GraphBudgetSpent" and error["correlationId"], error
                assert int(response.headers["Retry-After"]) >= 1
            else:
                assert response.status_code == 200, response.text
    elapsed = time.monotonic() - started
    ok = answered[0].count(200) + answered[1].count(200)
    refill = elapsed / graph_budget.INTERVAL.total_seconds()
    assert 2 * ok <= graph_budget.BURST + refill + 2, (ok, elapsed)  # one allowance for both hosts
    assert 429 in answered[0] and 429 in answered[1]
    assert answered[0].count(200) >= 5 and answered[1].count(200) >= 5  # both spent it
    assert not [r for r in sandbox.requests() if r["status"] == 429]  # Graph itself never throttled
    graph.close()
