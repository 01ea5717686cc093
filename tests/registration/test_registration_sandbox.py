"""The registration rules against the Graph sandbox: real staff lists, real Entra-like tokens.

The sandbox's demo tenant: ``clinic@contoso.test`` with admin (administrator), viewer, scheduler and
member (teamMember); ``salon@contoso.test`` administered by admin; ``outsider@contoso.test`` on no staff list.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from graph_sandbox.config import DEFAULT_CLIENT_ID
from shared.adapters.auth import Caller, authenticate
from shared.adapters.settings import reset_settings_cache
from shared.adapters.storage import MAILBOX_TABLE, get_store
from shared.contracts.errors import ApiError
from shared.endpoints import flow_webhooks as registration_api
from shared.records import business_admins
from shared.services import bookings_directory
from shared.services.bookings_directory import GraphBookingsDirectory, get_directory
from tests.conftest import sandbox_settings
from tests.registration.test_registration_api import CALLBACK, delete, error_of, flat, post

CLINIC, SALON = "clinic@contoso.test", "salon@contoso.test"


async def signed_in(sandbox: Any, upn: str) -> Caller:
    """The caller the app sees for a sandbox user's token (the user is added to the tenant if missing)."""
    if not any(u["upn"] == upn for u in sandbox.control("GET", "/users")["value"]):
        sandbox.control("POST", "/users", {"upn": upn})
    return await authenticate(f"Bearer {sandbox.user_token(upn)}")


@pytest.fixture
async def sandbox_env(app_env, bookings_sandbox, monkeypatch) -> AsyncIterator[Any]:
    bookings_sandbox.seed()
    bookings_directory.forget_cached()  # the staff lists just changed
    for name, value in sandbox_settings(bookings_sandbox).items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    store = get_store()
    await store.create_all()
    table = store.table(MAILBOX_TABLE)
    for smtp in (CLINIC, SALON):  # the demo mailboxes are shared by every test of the session
        async for row in table.query_entities("PartitionKey eq @pk", parameters={"pk": smtp}):
            await table.delete_entity(row["PartitionKey"], row["RowKey"])
    await business_admins.forget(await business_admins.read_all())  # the dropdown's index of the old tenant
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
    assert await directory.staff_role(CLINIC, await signed_in(sandbox_env, upn)) == role


async def test_roles_are_asked_with_the_prefer_header(sandbox_env) -> None:
    await get_directory().staff_role(CLINIC, await signed_in(sandbox_env, "scheduler@contoso.test"))
    staff_calls = [r for r in sandbox_env.requests() if "staffMembers" in json.dumps(r)]
    assert staff_calls and "include-unknown-enum-members" in json.dumps(staff_calls[-1])


async def test_unknown_business_is_not_found(sandbox_env) -> None:
    with pytest.raises(ApiError) as info:
        await get_directory().staff_role("nobody@contoso.test", await signed_in(sandbox_env, "admin@contoso.test"))
    assert info.value.code == "BookingBusinessNotFound"


async def test_businesses_administered_by(sandbox_env) -> None:
    directory = get_directory()
    admin = await directory.businesses_administered_by(await signed_in(sandbox_env, "admin@contoso.test"))
    assert sorted(b["email"] for b in admin) == [CLINIC, SALON]
    assert {b["displayName"] for b in admin} == {"Contoso Clinic", "Contoso Salon"}
    assert await directory.businesses_administered_by(await signed_in(sandbox_env, "viewer@contoso.test")) == []
    assert await directory.businesses_administered_by(await signed_in(sandbox_env, "outsider@contoso.test")) == []


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


# --- who is an administrator: every address of the caller ------------------------------------------------------

def add_person(sandbox: Any, upn: str, mail: str, *, proxies: list[str] | None = None, user_type: str = "Member",
               staff_email: str | None = None, role: str = "administrator") -> None:
    """A directory user, and (``staff_email``) a staff member of the clinic with that address and role."""
    sandbox.control("POST", "/users", {"upn": upn, "mail": mail, "proxyAddresses": proxies or [],
                                       "userType": user_type})
    if staff_email is not None:
        def add_staff(sb: Any) -> None:
            sb.state.business(CLINIC).staff[f"staff-{upn}"] = {
                "id": f"staff-{upn}", "displayName": upn, "emailAddress": staff_email, "role": role}
        sandbox._thread.call(add_staff, sandbox.sandbox)


def me_calls(sandbox: Any) -> int:
    return sum(1 for r in sandbox.requests() if r["path"] == "/v1.0/me")


async def test_an_administrator_whose_upn_is_not_their_mailbox_registers_and_sees_the_business(sandbox_env) -> None:
    add_person(sandbox_env, "ada.k@contoso.onmicrosoft.com", "ada@contoso.test", staff_email="ada@contoso.test")
    caller = await signed_in(sandbox_env, "ada.k@contoso.onmicrosoft.com")
    assert await get_directory().staff_role(CLINIC, caller) == "administrator"
    response = await post(CLINIC, sandbox_env.user_token("ada.k@contoso.onmicrosoft.com"), flat())
    assert response.status_code == 201, response.get_body()
    listed = await get_directory().businesses_administered_by(caller)
    assert [b["email"] for b in listed] == [CLINIC]


async def test_an_administrator_recognised_by_an_alias(sandbox_env) -> None:
    add_person(sandbox_env, "bo@contoso.test", "bo@contoso.test",
               proxies=["SMTP:bo@contoso.test", "smtp:frontdesk@contoso.test", "X500:/o=Contoso/cn=bo"],
               staff_email="FrontDesk@Contoso.test")
    assert await get_directory().staff_role(CLINIC, await signed_in(sandbox_env, "bo@contoso.test")) == "administrator"


@pytest.mark.parametrize(("mail", "proxies"), [
    ("ada@contoso.test.fabrikam.test", []),  # the administrator's address inside a longer one
    ("xada@contoso.test", ["smtp:ada@contoso.test.evil.test"]),
    ("ada@contoso.tes", ["x500:ada@contoso.test"]),  # not an smtp proxy address
])
async def test_an_address_that_merely_resembles_an_administrators_is_refused(sandbox_env, mail, proxies) -> None:
    add_person(sandbox_env, "ada@contoso.onmicrosoft.com", "ada@contoso.test", staff_email="ada@contoso.test")
    add_person(sandbox_env, "mallory@contoso.onmicrosoft.com", mail, proxies=proxies)
    caller = await signed_in(sandbox_env, "mallory@contoso.onmicrosoft.com")
    assert await get_directory().staff_role(CLINIC, caller) is None
    error_of(await post(CLINIC, sandbox_env.user_token("mallory@contoso.onmicrosoft.com"), flat()), 403,
             "NotBookingsAdministrator")


async def test_a_guest_is_recognised_by_their_own_mail_address(sandbox_env) -> None:
    guest = "gina_fabrikam.test#EXT#@contoso.onmicrosoft.com"
    add_person(sandbox_env, guest, "gina@fabrikam.test", user_type="Guest", staff_email="gina@fabrikam.test")
    assert await get_directory().staff_role(CLINIC, await signed_in(sandbox_env, guest)) == "administrator"
    add_person(sandbox_env, "ivy_fabrikam.test#EXT#@contoso.onmicrosoft.com", "ivy@fabrikam.test", user_type="Guest")
    ivy = await signed_in(sandbox_env, "ivy_fabrikam.test#EXT#@contoso.onmicrosoft.com")
    assert await get_directory().staff_role(CLINIC, ivy) is None


async def test_the_directory_is_asked_only_when_the_token_does_not_match(sandbox_env) -> None:
    before = me_calls(sandbox_env)
    await get_directory().staff_role(CLINIC, await signed_in(sandbox_env, "admin@contoso.test"))
    assert me_calls(sandbox_env) == before  # the token's upn is on the staff list: no /me


async def test_the_directory_being_down_is_an_error_never_an_allow(sandbox_env) -> None:
    add_person(sandbox_env, "ada.k@contoso.onmicrosoft.com", "ada@contoso.test", staff_email="ada@contoso.test")
    sandbox_env.add_fault(method="GET", path="/v1.0/me", status=503, count=None, retryAfter=0)
    with pytest.raises(ApiError) as info:
        await get_directory().staff_role(CLINIC, await signed_in(sandbox_env, "ada.k@contoso.onmicrosoft.com"))
    assert info.value.code == "DependencyUnavailable"
    error_of(await post(CLINIC, sandbox_env.user_token("ada.k@contoso.onmicrosoft.com"), flat()), 503,
             "DependencyUnavailable")


# --- the business dropdown: as the caller, at a bounded cost -------------------------------------------------

def graph_requests(sandbox: Any) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["path"].startswith("/v1.0/") or r["path"].endswith("/token")]


async def test_the_dropdown_lists_businesses_as_the_caller_and_then_from_its_cache(sandbox_env) -> None:
    caller = await signed_in(sandbox_env, "admin@contoso.test")
    before = len(graph_requests(sandbox_env))
    first = await get_directory().businesses_administered_by(caller)
    calls = graph_requests(sandbox_env)[before:]
    assert sorted(b["email"] for b in first) == [CLINIC, SALON]
    listing = [r for r in calls if r["path"] == "/v1.0/solutions/bookingBusinesses"]
    assert len(listing) == 1 and listing[0]["appId"] == DEFAULT_CLIENT_ID  # exchanged by the API registration
    # One listing and one staff list per business (2 in the demo tenant); the token requests are the
    # exchange and, on a fresh client, the app's own token (kept for its hour).
    assert len([r for r in calls if r["path"].startswith("/v1.0/")]) == 3, [r["path"] for r in calls]
    assert 1 <= len([r for r in calls if r["path"].endswith("/token")]) <= 2
    again = len(graph_requests(sandbox_env))
    assert await get_directory().businesses_administered_by(caller) == first
    assert len(graph_requests(sandbox_env)) == again  # within LISTING_CACHE_SECONDS: no Graph call


async def test_app_only_listing_is_refused_by_default_as_the_stricter_reading(sandbox_env) -> None:
    from shared.adapters.graph import Graph, GraphError

    with pytest.raises(GraphError) as info:
        await Graph().list_businesses()  # the app's own token
    assert info.value.status == 403


async def test_one_caller_cannot_make_the_dropdown_call_graph_without_bound(sandbox_env, monkeypatch) -> None:
    monkeypatch.setattr(bookings_directory, "_budget", bookings_directory._CallBudget(6))
    for upn in ("viewer@contoso.test", "scheduler@contoso.test"):  # other callers have their own budget
        await get_directory().businesses_administered_by(await signed_in(sandbox_env, upn))
    caller = await signed_in(sandbox_env, "member@contoso.test")
    bookings_directory.forget_cached()
    # The staff lists were read once, by the first call, into the shared index: on the caller's behalf each
    # call costs the exchange, the listing and /me.
    await get_directory().businesses_administered_by(caller)  # 3 of 6
    bookings_directory.forget_cached()
    await get_directory().businesses_administered_by(caller)  # 6 of 6
    bookings_directory.forget_cached()
    with pytest.raises(ApiError) as info:
        await get_directory().businesses_administered_by(caller)
    assert info.value.code == "TooManyDirectoryLookups" and 0 < int(info.value.headers["Retry-After"]) <= 60


async def test_without_delegated_consent_the_dropdown_says_what_to_grant(sandbox_env) -> None:
    def revoke(sb: Any) -> None:
        for app in sb.config.apps:
            app.delegated_scopes = []
    sandbox_env._thread.call(revoke, sandbox_env.sandbox)
    try:
        with pytest.raises(ApiError) as info:
            await get_directory().businesses_administered_by(await signed_in(sandbox_env, "admin@contoso.test"))
        assert info.value.code == "GraphConsentMissing" and "AADSTS" in info.value.details["reason"]
    finally:
        def restore(sb: Any) -> None:
            from graph_sandbox.config import DEFAULT_DELEGATED_SCOPES

            for app in sb.config.apps:
                app.delegated_scopes = list(DEFAULT_DELEGATED_SCOPES)
        sandbox_env._thread.call(restore, sandbox_env.sandbox)
