"""shared/adapters/graph.py against the Graph sandbox over real HTTP: reads, paging, roles, retries, writes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from graph_sandbox.config import SandboxConfig
from graph_sandbox.testing import SandboxServer
from shared.adapters.graph import Graph, GraphError
from shared.adapters.settings import Settings, load_settings
from tests.conftest import sample_settings

CLINIC = "clinic@contoso.test"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(default_page_size=2)) as server:
        yield server


@pytest.fixture
def settings(sandbox: SandboxServer) -> Settings:
    sandbox.reset()
    sandbox.seed()
    sandbox.control("DELETE", "faults")
    sandbox.control("DELETE", "requests")
    return load_settings({**sample_settings(), "GRAPH_BASE_URL": sandbox.graph_url,
                          "ENTRA_TOKEN_URL": sandbox.token_url, "ENTRA_TENANT_ID": sandbox.tenant_id})


def graph_requests(sandbox: SandboxServer, method: str, fragment: str) -> list[dict]:
    return [r for r in sandbox.requests() if r.get("method") == method and fragment in r.get("path", "")]


async def test_businesses_and_staff_roles_with_prefer_header(settings: Settings, sandbox: SandboxServer) -> None:
    graph = Graph(settings)
    assert {b["id"] for b in await graph.list_businesses()} == {CLINIC, "salon@contoso.test"}
    roles = {m["emailAddress"]: m["role"] for m in await graph.list_staff(CLINIC)}
    # Without Prefer: include-unknown-enum-members these two would read unknownFutureValue.
    assert roles == {"admin@contoso.test": "administrator", "viewer@contoso.test": "viewer",
                     "scheduler@contoso.test": "scheduler", "member@contoso.test": "teamMember"}
    staff_calls = graph_requests(sandbox, "GET", "/staffMembers")
    assert staff_calls and all(r["prefer"] == "include-unknown-enum-members" for r in staff_calls)


async def test_calendar_view_follows_next_links(settings: Settings, sandbox: SandboxServer) -> None:
    graph = Graph(settings)
    now = datetime.now(UTC)
    appointments = await graph.calendar_view(CLINIC, now - timedelta(days=60), now + timedelta(days=120))
    pages = graph_requests(sandbox, "GET", "/calendarView")
    assert len(appointments) > 2, "the demo business needs more appointments than one page"
    assert len(pages) == (len(appointments) + 1) // 2  # page size 2
    assert len({a["id"] for a in appointments}) == len(appointments)


async def test_get_appointment_has_everything(settings: Settings) -> None:
    graph = Graph(settings)
    now = datetime.now(UTC)
    first = (await graph.calendar_view(CLINIC, now - timedelta(days=60), now + timedelta(days=120)))[0]
    full = await graph.get_appointment(CLINIC, first["id"])
    for key in ("customers", "serviceNotes", "customerNotes", "staffMemberIds", "startDateTime",
                "selfServiceAppointmentId", "lastUpdatedDateTime"):
        assert key in full


async def test_unknown_business_is_a_404_graph_error(settings: Settings) -> None:
    with pytest.raises(GraphError) as caught:
        await Graph(settings).get_business("nobody@contoso.test")
    assert caught.value.status == 404


async def test_reads_retry_honouring_retry_after(settings: Settings, sandbox: SandboxServer) -> None:
    sandbox.add_fault(method="GET", path="/v1.0/solutions/bookingBusinesses", status=429, retryAfter=1, count=1)
    started = time.monotonic()
    businesses = await Graph(settings).list_businesses()
    assert len(businesses) == 2
    assert time.monotonic() - started >= 1.0  # waited as told
    assert len(graph_requests(sandbox, "GET", "/solutions/bookingBusinesses")) == 2


async def test_reads_give_up_after_a_bounded_number_of_retries(settings: Settings, sandbox: SandboxServer) -> None:
    sandbox.add_fault(method="GET", path="/v1.0/solutions/bookingBusinesses", status=503, retryAfter=0,
                      count=None)
    with pytest.raises(GraphError) as caught:
        await Graph(settings).list_businesses()
    assert caught.value.status == 503
    assert len(graph_requests(sandbox, "GET", "/solutions/bookingBusinesses")) == 4  # 1 + 3 retries


@pytest.mark.parametrize("status", [429, 503])
async def test_subscription_creation_is_never_retried_automatically(settings: Settings, sandbox: SandboxServer,
                                                                    status: int) -> None:
    sandbox.add_fault(method="POST", path="/v1.0/subscriptions", status=status, retryAfter=7, count=1)
    with pytest.raises(GraphError) as caught:
        await Graph(settings).create_subscription(
            resource=f"/users/{CLINIC}/events", change_type="created,updated,deleted",
            notification_url="https://example.test/api/graph/notifications",
            lifecycle_url="https://example.test/api/graph/lifecycle", client_state="x" * 32,
            expiration=datetime.now(UTC) + timedelta(minutes=60))
    assert caught.value.status == status
    assert caught.value.retry_after == 7
    assert len(graph_requests(sandbox, "POST", "/subscriptions")) == 1


async def test_wrong_client_secret_is_a_clear_error(settings: Settings, sandbox: SandboxServer) -> None:
    from dataclasses import replace

    graph = Graph(replace(settings, graph_client_secret="wrong"))
    with pytest.raises(GraphError) as caught:
        await graph.list_businesses()
    assert caught.value.code == "TokenRequestFailed"
    assert "invalid_client" in caught.value.message
    assert "wrong" not in caught.value.message


async def test_the_app_token_is_cached(settings: Settings, sandbox: SandboxServer) -> None:
    graph = Graph(settings)
    await graph.list_businesses()
    await graph.list_staff(CLINIC)
    token_calls = [r for r in sandbox.requests() if r.get("path", "").endswith("/oauth2/v2.0/token")]
    assert len(token_calls) == 1


async def test_unreachable_graph_is_a_graph_error(settings: Settings) -> None:
    from dataclasses import replace

    from devhost.processes import free_port

    graph = Graph(replace(settings, graph_base_url=f"http://127.0.0.1:{free_port()}/v1.0"))
    graph.tokens._token, graph.tokens._expires_at = "t", time.time() + 3600  # the token endpoint is not the point
    with pytest.raises(GraphError) as caught:
        await graph.get_business(CLINIC)
    assert caught.value.status == 0
