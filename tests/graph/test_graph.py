"""shared/adapters/graph.py against the Graph sandbox over real HTTP: reads, paging, roles, retries, writes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from graph_sandbox.config import APP_CANCEL_ROLES, APP_READ_ROLES, DEFAULT_CLIENT_ID, SandboxConfig
from graph_sandbox.testing import NotificationReceiver, SandboxServer
from shared.adapters.graph import Graph, GraphError
from shared.adapters.settings import Settings, load_settings
from testing.settings import sample_settings

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
                          "ENTRA_TENANT_ID": sandbox.tenant_id,
                          "ENTRA_AUTHORITY": sandbox.entra_url, "ENTRA_CA_FILE": sandbox.ca_file})


def graph_requests(sandbox: SandboxServer, method: str, fragment: str) -> list[dict]:
    return [r for r in sandbox.requests() if r.get("method") == method and fragment in r.get("path", "")]


async def test_listing_businesses_app_only_is_refused_unless_graph_allows_it(settings: Settings,
                                                                             sandbox: SandboxServer) -> None:
    # The stricter reading of bookingbusiness-list ("Application: Not supported"), the sandbox's default.
    with pytest.raises(GraphError) as caught:
        await Graph(settings).list_businesses()
    assert (caught.value.status, caught.value.code) == (403, "ErrorAccessDenied")
    sandbox.control("POST", "permissions", {"appCanListBusinesses": True})
    assert {b["id"] for b in await Graph(settings).list_businesses()} == {CLINIC, "salon@contoso.test"}


async def test_staff_roles_with_prefer_header(settings: Settings, sandbox: SandboxServer) -> None:
    graph = Graph(settings)
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
    sandbox.add_fault(method="GET", path=f"/v1.0/solutions/bookingBusinesses/{CLINIC}", status=429, retryAfter=1,
                      count=1)
    started = time.monotonic()
    business = await Graph(settings).get_business(CLINIC)
    assert business["id"] == CLINIC
    assert time.monotonic() - started >= 1.0  # waited as told
    assert len(graph_requests(sandbox, "GET", "/solutions/bookingBusinesses")) == 2


async def test_reads_give_up_after_a_bounded_number_of_retries(settings: Settings, sandbox: SandboxServer) -> None:
    sandbox.add_fault(method="GET", path=f"/v1.0/solutions/bookingBusinesses/{CLINIC}", status=503, retryAfter=0,
                      count=None)
    with pytest.raises(GraphError) as caught:
        await Graph(settings).get_business(CLINIC)
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
        await graph.get_business(CLINIC)
    assert caught.value.code == "TokenRequestFailed"
    assert "invalid_client" in caught.value.message
    assert "wrong" not in caught.value.message


async def test_unreachable_token_endpoint_is_an_unreachable_graph(settings: Settings) -> None:
    from dataclasses import replace

    from devhost.processes import free_port

    graph = Graph(replace(settings, entra_authority=f"https://127.0.0.1:{free_port()}"))
    with pytest.raises(GraphError) as caught:
        await graph.get_business(CLINIC)
    assert (caught.value.status, caught.value.code) == (0, "Unreachable")


async def test_the_app_token_is_cached(settings: Settings, sandbox: SandboxServer) -> None:
    graph = Graph(settings)
    await graph.get_business(CLINIC)
    await graph.list_staff(CLINIC)
    token_calls = [r for r in sandbox.requests() if r.get("path", "").endswith("/oauth2/v2.0/token")]
    assert len(token_calls) == 1


async def test_unreachable_graph_is_a_graph_error(settings: Settings) -> None:
    from dataclasses import replace

    from devhost.processes import free_port

    class FixedToken:  # the token endpoint is not the point
        async def token(self) -> str:
            return "t"

    graph = Graph(replace(settings, graph_base_url=f"http://127.0.0.1:{free_port()}/v1.0"), tokens=FixedToken())
    with pytest.raises(GraphError) as caught:
        await graph.get_business(CLINIC)
    assert caught.value.status == 0


# ---- addresses in URLs: encoded exactly once ----------------------------------------------------------

UNUSUAL = ["a+b@contoso.test", "o'neil@contoso.test"]


def test_the_sdk_encodes_the_address_itself(settings: Settings) -> None:
    graph = Graph(settings)
    assert graph._business("a+b@contoso.test").to_get_request_information().url.endswith(
        "/solutions/bookingBusinesses/a%2Bb%40contoso.test")
    assert graph._business("o'neil@contoso.test").staff_members.to_get_request_information().url.endswith(
        "/solutions/bookingBusinesses/o%27neil%40contoso.test/staffMembers")


def _book(sandbox: SandboxServer, mailbox: str) -> dict:
    """A 1:1 appointment in the business, booked through Graph (its mailbox gets the calendar event)."""
    business = sandbox.sandbox.state.business(mailbox)
    service = next(s for s in business.services.values() if s["maximumAttendeesCount"] == 1)
    start = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    body = {"serviceId": service["id"], "customers": [{"name": "Pat", "emailAddress": "pat@example.test"}],
            "startDateTime": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "endDateTime": {"dateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"),
                            "timeZone": "UTC"}}
    r = sandbox.http.post(f"{sandbox.graph_url}/solutions/bookingBusinesses/{quote(mailbox, safe='')}/appointments",
                          json=body, headers=sandbox.graph_headers())
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize("mailbox", UNUSUAL)
async def test_every_call_reaches_a_business_whose_address_needs_encoding(settings: Settings, sandbox: SandboxServer,
                                                                          mailbox: str) -> None:
    from shared.services.subscriptions import resource_for

    sandbox.control("POST", "businesses", {"smtp": mailbox})
    appointment = _book(sandbox, mailbox)
    event_id = sandbox.sandbox.state.business(mailbox).event_of[appointment["id"]]
    sandbox.control("DELETE", "requests")
    graph = Graph(settings)
    now = datetime.now(UTC)
    assert (await graph.get_business(mailbox))["id"] == mailbox
    assert await graph.list_staff(mailbox) and await graph.list_services(mailbox)
    assert await graph.list_custom_questions(mailbox)
    assert [a["id"] for a in await graph.calendar_view(mailbox, now, now + timedelta(days=7))] == [appointment["id"]]
    assert (await graph.get_appointment(mailbox, appointment["id"]))["id"] == appointment["id"]
    assert (await graph.get_event(mailbox, event_id))["id"] == event_id
    with NotificationReceiver() as receiver:
        created = await graph.create_subscription(
            resource=resource_for(mailbox), change_type="created,updated,deleted",
            notification_url=f"{receiver.url}/api/graph/notifications",
            lifecycle_url=f"{receiver.url}/api/graph/lifecycle", client_state="x" * 32,
            expiration=now + timedelta(minutes=60))
    assert sandbox.control("GET", "subscriptions")["value"][0]["mailbox"] == mailbox
    await graph.cancel_appointment(mailbox, appointment["id"], "Closed today")
    assert sandbox.control("GET", "cancellations")["value"][-1]["businessId"] == mailbox
    await graph.delete_subscription(created["id"])

    encoded = quote(mailbox, safe="")  # what Graph must see: every reserved character escaped, once
    paths = [r["rawPath"] for r in sandbox.requests() if r["path"].startswith(("/v1.0/solutions", "/v1.0/users"))]
    assert len(paths) >= 9
    assert all(f"/{encoded}" in p and "%25" not in p for p in paths), paths


# ---- the permissions infra grants are the ones the calls need ------------------------------------------

async def test_the_granted_read_roles_make_every_read_and_refuse_cancel(settings: Settings,
                                                                        sandbox: SandboxServer) -> None:
    """Without ENABLE_CANCEL_WITH_REASON the app has APP_READ_ROLES: every read and subscription call works,
    cancel is refused as its page says; with APP_CANCEL_ROLES it works."""
    appointment = _book(sandbox, CLINIC)
    sandbox.control("POST", f"apps/{DEFAULT_CLIENT_ID}/roles", {"roles": list(APP_READ_ROLES)})
    graph = Graph(settings)
    now = datetime.now(UTC)
    await graph.get_business(CLINIC)
    await graph.list_staff(CLINIC)
    await graph.list_services(CLINIC)
    await graph.list_custom_questions(CLINIC)
    await graph.calendar_view(CLINIC, now, now + timedelta(days=7))
    await graph.get_appointment(CLINIC, appointment["id"])
    event_id = sandbox.sandbox.state.business(CLINIC).event_of[appointment["id"]]
    await graph.get_event(CLINIC, event_id)
    with NotificationReceiver() as receiver:
        created = await graph.create_subscription(
            resource=f"/users/{CLINIC}/events", change_type="created,updated,deleted",
            notification_url=f"{receiver.url}/n", lifecycle_url=f"{receiver.url}/l", client_state="x" * 32,
            expiration=now + timedelta(minutes=60))
        await graph.renew_subscription(created["id"], now + timedelta(minutes=120))
    await graph.reauthorize_subscription(created["id"])
    assert [s["id"] for s in await graph.list_subscriptions()] == [created["id"]]
    await graph.delete_subscription(created["id"])
    with pytest.raises(GraphError) as caught:
        await graph.cancel_appointment(CLINIC, appointment["id"], "no")
    assert (caught.value.status, caught.value.code) == (403, "ErrorAccessDenied")

    sandbox.control("POST", f"apps/{DEFAULT_CLIENT_ID}/roles", {"roles": [*APP_READ_ROLES, *APP_CANCEL_ROLES]})
    await Graph(settings).cancel_appointment(CLINIC, appointment["id"], "yes")


async def test_one_graph_per_loop_until_the_settings_are_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.adapters.graph import get_graph
    from shared.adapters.settings import reset_settings_cache

    for name, value in sample_settings().items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    try:
        first = get_graph()
        assert get_graph() is first
        reset_settings_cache()
        assert get_graph() is not first
    finally:
        reset_settings_cache()
