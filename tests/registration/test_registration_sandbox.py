"""The registration rules against the Graph sandbox: real staff lists, real Entra-like tokens.

The sandbox's demo tenant: ``clinic@contoso.test`` with admin (administrator), viewer, scheduler and
member (teamMember); ``salon@contoso.test`` administered by admin; ``outsider@contoso.test`` on no staff list.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.adapters.settings import reset_settings_cache
from shared.adapters.storage import MAILBOX_TABLE, get_store
from shared.contracts.errors import ApiError
from shared.endpoints import flow_webhooks as registration_api
from shared.services.bookings_directory import GraphBookingsDirectory, get_directory
from tests.registration.test_registration_api import CALLBACK, delete, error_of, flat, post

CLINIC, SALON = "clinic@contoso.test", "salon@contoso.test"


@pytest.fixture
async def sandbox_env(app_env, bookings_sandbox, monkeypatch) -> AsyncIterator[Any]:
    bookings_sandbox.seed()
    for name, value in {"GRAPH_BASE_URL": bookings_sandbox.graph_url, "ENTRA_TOKEN_URL": bookings_sandbox.token_url,
                        "ENTRA_TENANT_ID": bookings_sandbox.tenant_id, "AUTH_ISSUER": bookings_sandbox.issuer,
                        "AUTH_JWKS_URL": bookings_sandbox.jwks_url}.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    store = get_store()
    await store.create_all()
    table = store.table(MAILBOX_TABLE)
    for smtp in (CLINIC, SALON):  # the demo mailboxes are shared by every test of the session
        async for row in table.query_entities("PartitionKey eq @pk", parameters={"pk": smtp}):
            await table.delete_entity(row["PartitionKey"], row["RowKey"])
    yield bookings_sandbox
    await store.close()


@pytest.mark.parametrize(("upn", "role"), [
    ("admin@contoso.test", "administrator"), ("viewer@contoso.test", "viewer"),
    ("scheduler@contoso.test", "scheduler"), ("member@contoso.test", "teamMember"),
    ("outsider@contoso.test", None), ("nobody@fabrikam.test", None),
])
async def test_staff_roles_come_from_graph(sandbox_env, upn: str, role: str | None) -> None:
    directory = get_directory()
    assert isinstance(directory, GraphBookingsDirectory)
    assert await directory.staff_role(CLINIC, upn) == role


async def test_roles_are_asked_with_the_prefer_header(sandbox_env) -> None:
    await get_directory().staff_role(CLINIC, "scheduler@contoso.test")
    staff_calls = [r for r in sandbox_env.requests() if "staffMembers" in json.dumps(r)]
    assert staff_calls and "include-unknown-enum-members" in json.dumps(staff_calls[-1])


async def test_unknown_business_is_not_found(sandbox_env) -> None:
    with pytest.raises(ApiError) as info:
        await get_directory().staff_role("nobody@contoso.test", "admin@contoso.test")
    assert info.value.code == "BookingBusinessNotFound"


async def test_businesses_administered_by(sandbox_env) -> None:
    directory = get_directory()
    admin = await directory.businesses_administered_by("admin@contoso.test")
    assert sorted(b["email"] for b in admin) == [CLINIC, SALON]
    assert {b["displayName"] for b in admin} == {"Contoso Clinic", "Contoso Salon"}
    assert await directory.businesses_administered_by("viewer@contoso.test") == []
    assert await directory.businesses_administered_by("outsider@contoso.test") == []


@pytest.mark.parametrize(("upn", "status"), [
    ("admin@contoso.test", 201), ("viewer@contoso.test", 403), ("scheduler@contoso.test", 403),
    ("member@contoso.test", 403), ("outsider@contoso.test", 403),
])
async def test_each_staff_role_registering(sandbox_env, upn: str, status: int) -> None:
    response = await post(CLINIC, sandbox_env.user_token(upn), flat())
    assert response.status_code == status, response.get_body()
    if status == 403:
        error_of(response, 403, "NotBookingsAdministrator")


@pytest.mark.parametrize("kind", ["expired", "not_yet_valid", "wrong_audience", "wrong_issuer", "unsigned",
                                  "bad_signature"])
async def test_each_bad_sandbox_token_is_401(sandbox_env, kind: str) -> None:
    error_of(await post(CLINIC, sandbox_env.user_token("admin@contoso.test", kind), flat()), 401, "Unauthenticated")


async def test_unknown_business_through_the_handler(sandbox_env) -> None:
    error_of(await post("nobody@contoso.test", sandbox_env.user_token("admin@contoso.test"), flat()), 404,
             "BookingBusinessNotFound")


async def test_dropdown_through_the_handler(sandbox_env) -> None:
    from tests.registration.test_registration_api import request

    req = request("GET", "v1/bookingBusinessesUserAsAdmin", {}, sandbox_env.user_token("admin@contoso.test"))
    body = json.loads((await registration_api.businesses_as_admin(req)).get_body())
    assert body == {"mailboxes": [{"displayName": "Contoso Clinic", "email": CLINIC},
                                  {"displayName": "Contoso Salon", "email": SALON}]}


@pytest.mark.slow  # the Graph client retries the 503s (honouring Retry-After) before giving up: ~3 s
async def test_graph_unavailable_is_503_not_a_crash(sandbox_env) -> None:
    sandbox_env.add_fault(method="GET", path="/v1.0/solutions/bookingBusinesses/*", status=503, count=None,
                          retryAfter=0)
    error = error_of(await post(CLINIC, sandbox_env.user_token("admin@contoso.test"), flat()), 503,
                     "DependencyUnavailable")
    assert "Graph" in error["message"]


async def test_register_then_delete_with_sandbox_tokens(sandbox_env) -> None:
    token = sandbox_env.user_token("admin@contoso.test")
    created = await post(CLINIC, token, flat(url=CALLBACK))
    assert created.status_code == 201
    webhook_id = json.loads(created.get_body())["webhookId"]
    error_of(await delete(CLINIC, webhook_id, sandbox_env.user_token("viewer@contoso.test")), 403,
             "NotBookingsAdministrator")
    assert (await delete(CLINIC, webhook_id, token)).status_code == 204
