"""The sandbox's on-behalf-of grant, as Entra documents it (v2-oauth2-on-behalf-of-flow), over its HTTPS
listener: Microsoft's own library (azure-identity) must be able to use it, and every refusal is Entra's."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import httpx
import jwt
import pytest

from graph_sandbox import SandboxServer
from graph_sandbox.config import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, GRAPH_AUDIENCE
from tests.sandbox.conftest import OTHER_APP

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def exchange(sb: SandboxServer, assertion: str, *, client_id: str = DEFAULT_CLIENT_ID,
             client_secret: str = DEFAULT_CLIENT_SECRET, scope: str = f"{GRAPH_AUDIENCE}/.default",
             **extra: str) -> httpx.Response:
    form = {"grant_type": JWT_BEARER, "requested_token_use": "on_behalf_of", "assertion": assertion,
            "client_id": client_id, "client_secret": client_secret, "scope": scope, **extra}
    return httpx.post(f"{sb.entra_url}/{sb.tenant_id}/oauth2/v2.0/token", data=form, verify=trusting(sb))


def trusting(sb: SandboxServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=sb.ca_file)


def aadsts(response: httpx.Response) -> int:
    return response.json()["error_codes"][0]


def test_the_token_endpoint_is_served_over_https_with_the_published_certificate(sb: SandboxServer) -> None:
    assert sb.entra_url.startswith("https://127.0.0.1:")
    with pytest.raises(httpx.ConnectError):  # not trusted without the sandbox's certificate
        httpx.get(f"{sb.entra_url}/{sb.tenant_id}/discovery/v2.0/keys")
    assert httpx.get(f"{sb.entra_url}/{sb.tenant_id}/discovery/v2.0/keys", verify=trusting(sb)).status_code == 200


def test_a_users_token_becomes_a_delegated_graph_token(sb: SandboxServer) -> None:
    response = exchange(sb, sb.user_token("admin@contoso.test"))
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["aud"] == GRAPH_AUDIENCE and claims["appid"] == DEFAULT_CLIENT_ID
    assert claims["scp"].split() == ["Bookings.Read.All", "User.Read"] and "roles" not in claims
    assert claims["upn"] == "admin@contoso.test" and claims["idtyp"] == "user"
    # Graph accepts it for a delegated route, and knows who "me" is.
    me = httpx.get(f"{sb.graph_url}/me?$select=mail,proxyAddresses",
                   headers={"Authorization": f"Bearer {response.json()['access_token']}"})
    assert me.status_code == 200, me.text
    assert me.json()["mail"] == "admin@contoso.test" and me.json()["proxyAddresses"] == ["SMTP:admin@contoso.test"]


def test_azure_identitys_on_behalf_of_credential_works_against_it(sb: SandboxServer) -> None:
    from azure.identity.aio import OnBehalfOfCredential

    async def token() -> Any:
        credential = OnBehalfOfCredential(sb.tenant_id, DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET,
                                          user_assertion=sb.user_token("viewer@contoso.test"),
                                          authority=sb.entra_url, connection_verify=sb.ca_file)
        async with credential:
            return await credential.get_token(f"{GRAPH_AUDIENCE}/.default")

    claims = jwt.decode(asyncio.run(token()).token, options={"verify_signature": False})
    assert claims["upn"] == "viewer@contoso.test" and "Bookings.Read.All" in claims["scp"].split()


@pytest.mark.parametrize(("kind", "code"), [("expired", 500133), ("bad_signature", 50013),
                                            ("not_yet_valid", 500133)])
def test_a_bad_assertion_is_refused(sb: SandboxServer, kind: str, code: int) -> None:
    response = exchange(sb, sb.user_token("admin@contoso.test", kind))
    assert (response.status_code, response.json()["error"], aadsts(response)) == (400, "invalid_grant", code)


def test_an_assertion_for_another_app_is_refused(sb: SandboxServer) -> None:
    # The user's token is for our API; another registration may not exchange it (AADSTS500131).
    response = exchange(sb, sb.user_token("admin@contoso.test"), client_id=OTHER_APP.client_id,
                        client_secret=OTHER_APP.client_secret)
    assert (response.status_code, aadsts(response)) == (400, 500131)
    assert "Assertion audience does not match" in response.json()["error_description"]
    wrong = exchange(sb, sb.user_token("admin@contoso.test", "wrong_audience"))
    assert aadsts(wrong) == 500131


def test_a_scope_without_admin_consent_is_refused(sb: SandboxServer) -> None:
    response = exchange(sb, sb.user_token("admin@contoso.test"), scope=f"{GRAPH_AUDIENCE}/Mail.Read")
    assert (response.status_code, aadsts(response)) == (400, 65001)


def test_client_authentication_and_parameters_are_checked(sb: SandboxServer) -> None:
    assertion = sb.user_token("admin@contoso.test")
    assert aadsts(exchange(sb, assertion, client_secret="wrong")) == 7000215
    assert aadsts(exchange(sb, "", )) == 900144  # no assertion
    response = exchange(sb, assertion, requested_token_use="not_obo")
    assert (response.status_code, aadsts(response)) == (400, 900144)
