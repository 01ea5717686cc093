"""Every Graph route the sandbox serves checks the permissions its v1.0 page documents (graph_sandbox/permissions.py):
app tokens by ``roles``, delegated tokens by ``scp``; a token without one of them gets the route's 403."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import pytest

from graph_sandbox import SandboxServer, build_app
from graph_sandbox.config import APP_CANCEL_ROLES, APP_READ_ROLES, DEFAULT_CLIENT_ID, GRAPH_AUDIENCE
from graph_sandbox.permissions import ROUTES, Readings, Route, find

CLINIC = "clinic@contoso.test"
EVERY_PERMISSION = sorted({p for r in ROUTES for p in (*r.application, *r.application_if_reading, *r.delegated,
                                                        *r.delegated_self)} | {"Mail.Read", "Sites.Read.All"})


def app_token(sb: SandboxServer, roles: list[str]) -> str:
    return sb.sandbox.entra.issue_app_token(DEFAULT_CLIENT_ID, roles, "permissions test")[0]


def delegated_token(sb: SandboxServer, upn: str, scopes: list[str]) -> str:
    """A delegated Graph token as Entra issues them (v1.0, ``scp``, no ``roles``), signed by the tenant."""
    entra, user = sb.sandbox.entra, sb.sandbox.state.find_user(upn)
    assert user is not None
    now = int(time.time())
    claims = {"aud": GRAPH_AUDIENCE, "iss": entra.app_issuer(), "iat": now, "nbf": now, "exp": now + 3600,
              "appid": DEFAULT_CLIENT_ID, "idtyp": "user", "oid": user.id, "upn": user.user_principal_name,
              "scp": " ".join(scopes), "tid": entra.tenant, "ver": "1.0", "uti": uuid.uuid4().hex[:22]}
    return jwt.encode(claims, entra.key.private_key, algorithm="RS256", headers={"kid": entra.key.kid})


@pytest.fixture
def ids(sb: SandboxServer) -> dict[str, str]:
    """Real path parameters of the demo tenant for every route template."""
    with httpx.Client(base_url=sb.graph_url, headers={"Authorization": f"Bearer {app_token(sb, EVERY_PERMISSION)}"},
                      timeout=10, trust_env=False) as graph:
        b = f"/solutions/bookingBusinesses/{CLINIC}"

        def first(path: str) -> str:
            return str(graph.get(path).raise_for_status().json()["value"][0]["id"])

        subscription = sb.control("POST", "subscriptions", {"value": [
            {"mailbox": CLINIC, "notificationUrl": "http://127.0.0.1:9/graph", "appId": DEFAULT_CLIENT_ID}]})
        return {"business": CLINIC, "appointment": first(f"{b}/appointments"), "user": CLINIC,
                "event": first(f"/users/{CLINIC}/events"), "subscription": subscription["value"][0]["id"],
                "staffMembers": first(f"{b}/staffMembers"), "services": first(f"{b}/services"),
                "customers": first(f"{b}/customers"), "customQuestions": first(f"{b}/customQuestions")}


def call(sb: SandboxServer, route: Route, ids: dict[str, str], token: str) -> httpx.Response:
    path = route.template
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    if "{item}" in path:  # /staffMembers/{item}, /services/{item}, …
        collection = path.split("/")[-2]
        path = path.replace("{item}", ids[collection])
    body = {"cancellationMessage": "test"} if path.endswith("/cancel") else {}
    return sb.http.request(route.method, f"{sb.graph_url}{path}", headers={"Authorization": f"Bearer {token}"},
                           json=body if route.method in ("POST", "PATCH") else None)


def refused_as(r: httpx.Response, expected: tuple[int, str, str]) -> bool:
    return r.status_code == expected[0] and r.json()["error"]["code"] == expected[1]


def passed(r: httpx.Response) -> bool:
    """The permission check let it through (the handler may still answer 400/404 for the test's body or ids)."""
    return r.status_code not in (401, 403)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.template}")
def test_app_tokens_need_one_of_the_documented_application_permissions(
    sb: SandboxServer, ids: dict[str, str], route: Route
) -> None:
    accepted = route.accepted_application(Readings())
    without = [p for p in EVERY_PERMISSION if p not in accepted]
    r = call(sb, route, ids, app_token(sb, without))
    assert refused_as(r, route.denied_app or route.denied), (r.status_code, r.text)
    for permission in accepted:
        r = call(sb, route, ids, app_token(sb, [permission]))
        assert passed(r), (permission, r.status_code, r.text)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.template}")
def test_delegated_tokens_need_one_of_the_documented_delegated_permissions(
    sb: SandboxServer, ids: dict[str, str], route: Route
) -> None:
    # The signed-in user is the business mailbox itself where a route reaches only the user's own objects.
    own = [p for p in route.delegated_self if p not in route.delegated]
    r = call(sb, route, ids, delegated_token(sb, CLINIC, [p for p in EVERY_PERMISSION if p not in
                                                           (*route.delegated, *route.delegated_self)]))
    assert refused_as(r, route.denied), (r.status_code, r.text)
    for permission in (*route.delegated, *own):
        r = call(sb, route, ids, delegated_token(sb, CLINIC, ["openid", permission]))
        assert passed(r), (permission, r.status_code, r.text)
    for permission in own:  # …and not another user's
        r = call(sb, route, ids, delegated_token(sb, "admin@contoso.test", [permission]))
        assert refused_as(r, route.denied), (permission, r.status_code, r.text)


def test_every_graph_route_the_sandbox_serves_has_a_row() -> None:
    from graph_sandbox import Sandbox

    missing = []
    for route in build_app(Sandbox()).routes:
        path = getattr(route, "path", "")
        if path.startswith("/v1.0"):
            for method in sorted(getattr(route, "methods", set()) - {"HEAD"}):
                concrete = path.replace("{", "x").replace("}", "")
                if find(method, concrete) is None:
                    missing.append(f"{method} {path}")
    assert missing == []


def test_listing_businesses_app_only_is_refused_by_default_and_allowed_by_the_switch(sb: SandboxServer) -> None:
    url = f"{sb.graph_url}/solutions/bookingBusinesses"
    app = {"Authorization": f"Bearer {app_token(sb, [*APP_READ_ROLES, *APP_CANCEL_ROLES])}"}
    denied = sb.http.get(url, headers=app)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "ErrorAccessDenied"
    delegated = {"Authorization": f"Bearer {delegated_token(sb, 'admin@contoso.test', ['Bookings.Read.All'])}"}
    assert {b["id"] for b in sb.http.get(url, headers=delegated).json()["value"]} == {CLINIC, "salon@contoso.test"}

    state = sb.control("POST", "permissions", {"appCanListBusinesses": True})
    assert state["appCanListBusinesses"] is True
    listing = next(r for r in state["routes"] if r["path"] == "/v1.0/solutions/bookingBusinesses")
    assert listing["application"] == ["Bookings.Read.All", "Bookings.Manage.All", "Bookings.ReadWrite.All"]
    assert sb.http.get(url, headers=app).status_code == 200
    # The other reading still wants a Bookings permission.
    assert sb.http.get(url, headers={"Authorization": f"Bearer {app_token(sb, ['Calendars.Read'])}"}
                       ).status_code == 403
    sb.reset()
    assert sb.control("GET", "permissions")["appCanListBusinesses"] is False
    assert sb.http.get(url, headers=app).status_code == 403


def test_me_needs_a_signed_in_user(sb: SandboxServer) -> None:
    r = sb.http.get(f"{sb.graph_url}/me", headers={"Authorization": f"Bearer {app_token(sb, EVERY_PERMISSION)}"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadRequest"


def test_cancel_follows_its_page_not_the_other_appointment_pages(sb: SandboxServer, ids: dict[str, str]) -> None:
    cancel = next(r for r in ROUTES if r.call == "cancel_appointment")
    r = call(sb, cancel, ids, app_token(sb, ["BookingsAppointment.ReadWrite.All", *APP_READ_ROLES]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "ErrorAccessDenied"
    assert call(sb, cancel, ids, app_token(sb, list(APP_CANCEL_ROLES))).status_code == 204


def test_the_request_log_keeps_the_path_as_sent(sb: SandboxServer) -> None:
    sb.control("POST", "businesses", {"smtp": "a+b@contoso.test"})
    token = app_token(sb, list(APP_READ_ROLES))
    r = sb.http.get(f"{sb.graph_url}/solutions/bookingBusinesses/a%2Bb%40contoso.test",
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["id"] == "a+b@contoso.test"
    # Encoded twice, the address names another (unknown) business: nothing decodes it a second time.
    twice = sb.http.get(f"{sb.graph_url}/solutions/bookingBusinesses/a%252Bb%2540contoso.test",
                        headers={"Authorization": f"Bearer {token}"})
    assert twice.status_code == 404
    logged = [e for e in sb.requests() if "/solutions/bookingBusinesses/a" in e["path"]]
    assert [e["rawPath"] for e in logged] == ["/v1.0/solutions/bookingBusinesses/a%2Bb%40contoso.test",
                                              "/v1.0/solutions/bookingBusinesses/a%252Bb%2540contoso.test"]
    assert [e["path"] for e in logged] == ["/v1.0/solutions/bookingBusinesses/a+b@contoso.test",
                                           "/v1.0/solutions/bookingBusinesses/a%2Bb%40contoso.test"]
