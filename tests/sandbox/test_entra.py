"""The Entra ID stand-in: discovery, JWKS, client credentials, and user tokens checked with PyJWT."""

from __future__ import annotations

import json

import httpx
import jwt
import pytest

from graph_sandbox import SandboxServer
from graph_sandbox.config import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

TENANT = "c0a7b00c-0000-4000-8000-000000000001"
AUDIENCE = "api://bookings-triggers-local"


def _jwks_keys(sb: SandboxServer) -> dict[str, jwt.PyJWK]:
    keys = sb.http.get(sb.jwks_url).json()["keys"]
    return {k["kid"]: jwt.PyJWK(k, algorithm="RS256") for k in keys}


def _verify(sb: SandboxServer, token: str) -> dict:
    """What our app does with a bearer token: key by kid from the JWKS, then every standard check."""
    kid = jwt.get_unverified_header(token).get("kid")
    keys = _jwks_keys(sb)
    if kid not in keys:
        raise jwt.InvalidKeyError(f"unknown kid {kid}")
    return jwt.decode(
        token,
        keys[kid].key,
        algorithms=["RS256"],
        audience=AUDIENCE,
        issuer=sb.issuer,
        options={"require": ["exp", "nbf", "iat", "aud", "iss", "tid", "oid"]},
    )


def test_discovery_document_points_at_the_sandbox(sb: SandboxServer) -> None:
    doc = sb.http.get(f"/{TENANT}/v2.0/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"{sb.base_url}/{TENANT}/v2.0" == sb.issuer
    assert doc["jwks_uri"] == sb.jwks_url
    assert doc["token_endpoint"] == sb.token_url
    assert sb.issuer.startswith("http://127.0.0.1:")


def test_unknown_tenant_is_refused_like_entra(sb: SandboxServer) -> None:
    r = sb.http.get("/11111111-1111-4111-8111-111111111111/v2.0/.well-known/openid-configuration")
    assert r.status_code == 400
    assert r.json()["error_codes"] == [90002]


def test_jwks_holds_rsa_signing_keys(sb: SandboxServer) -> None:
    keys = sb.http.get(sb.jwks_url).json()["keys"]
    assert keys and all(k["kty"] == "RSA" and k["use"] == "sig" and k["kid"] and k["n"] and k["e"] for k in keys)


def test_client_credentials_issue_a_graph_app_token(sb: SandboxServer) -> None:
    r = sb.http.post(
        sb.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "scope": "https://graph.microsoft.com/.default",
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["appid"] == DEFAULT_CLIENT_ID and claims["tid"] == TENANT
    assert set(claims["roles"]) >= {"Bookings.Read.All", "Calendars.Read"}
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "RS256"


@pytest.mark.parametrize(
    ("form", "status", "error", "code"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client", 7000215),
        ({"client_secret": ""}, 401, "invalid_client", 7000216),
        ({"client_id": "a99b0000-0000-4000-8000-00000000dead"}, 400, "unauthorized_client", 700016),
        ({"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
        ({"scope": "https://graph.microsoft.com/Calendars.Read"}, 400, "invalid_scope", 1002012),
        ({"scope": "api://unknown/.default"}, 400, "invalid_resource", 500011),
    ],
)
def test_token_endpoint_errors_are_entra_shaped(
    sb: SandboxServer, form: dict, status: int, error: str, code: int
) -> None:
    data = {
        "grant_type": "client_credentials",
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "scope": "https://graph.microsoft.com/.default",
        **form,
    }
    r = sb.http.post(sb.token_url, data=data)
    assert r.status_code == status
    body = r.json()
    assert body["error"] == error
    assert body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}:")
    assert {"trace_id", "correlation_id", "timestamp"} <= body.keys()


def test_client_secret_via_basic_auth(sb: SandboxServer) -> None:
    r = sb.http.post(
        sb.token_url,
        auth=(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
        data={"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default"},
    )
    assert r.status_code == 200


def test_valid_user_token_passes_pyjwt_with_v2_claims(sb: SandboxServer) -> None:
    claims = _verify(sb, sb.user_token("admin@contoso.test"))
    users = {u["upn"]: u for u in sb.control("GET", "users")["value"]}
    assert claims["upn"] == claims["preferred_username"] == "admin@contoso.test"
    assert claims["oid"] == users["admin@contoso.test"]["id"]
    assert claims["tid"] == TENANT and claims["ver"] == "2.0" and claims["name"] == "Adele Admin"
    assert claims["scp"]


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("expired", jwt.ExpiredSignatureError),
        ("not_yet_valid", jwt.ImmatureSignatureError),
        ("wrong_audience", jwt.InvalidAudienceError),
        ("wrong_issuer", jwt.InvalidIssuerError),
        ("bad_signature", jwt.InvalidSignatureError),
        ("unsigned", jwt.InvalidKeyError),
    ],
)
def test_bad_user_tokens_fail_pyjwt_for_the_right_reason(sb: SandboxServer, kind: str, error: type) -> None:
    token = sb.user_token("viewer@contoso.test", kind)
    with pytest.raises(error):
        _verify(sb, token)


def test_unsigned_token_has_alg_none_and_no_signature(sb: SandboxServer) -> None:
    token = sb.user_token("viewer@contoso.test", "unsigned")
    header = json.loads(jwt.utils.base64url_decode(token.split(".")[0]))
    assert header["alg"] == "none" and token.endswith(".")
    with pytest.raises(jwt.PyJWTError):  # even with the right key, alg "none" is refused
        jwt.decode(token, next(iter(_jwks_keys(sb).values())).key, algorithms=["RS256"], audience=AUDIENCE)


def test_unknown_user_gets_404_and_bad_kind_400(sb: SandboxServer) -> None:
    assert sb.http.post("/_sandbox/tokens/user", json={"upn": "nobody@contoso.test"}).status_code == 404
    r = sb.http.post("/_sandbox/tokens/user", json={"upn": "admin@contoso.test", "kind": "weird"})
    assert r.status_code == 400


def test_every_seeded_user_can_get_a_token(sb: SandboxServer) -> None:
    for upn in (
        "admin@contoso.test",
        "viewer@contoso.test",
        "scheduler@contoso.test",
        "member@contoso.test",
        "outsider@contoso.test",
    ):
        assert _verify(sb, sb.user_token(upn))["upn"] == upn


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Access token is empty."),
        ("Bearer not-a-jwt", "IDX14100"),
        ("Basic abc", "Access token is empty."),
    ],
)
def test_graph_rejects_missing_or_malformed_tokens(sb: SandboxServer, header: str | None, message: str) -> None:
    headers = {"Authorization": header} if header else {}
    r = sb.http.get("/v1.0/solutions/bookingBusinesses", headers=headers)
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["code"] == "InvalidAuthenticationToken" and message in err["message"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_graph_rejects_a_user_token_for_our_api(sb: SandboxServer) -> None:
    # Right signature, wrong audience and issuer for Graph: a token for our API is not a Graph token.
    r = sb.http.get(
        "/v1.0/solutions/bookingBusinesses", headers={"Authorization": f"Bearer {sb.user_token('admin@contoso.test')}"}
    )
    assert r.status_code == 401


def test_graph_rejects_an_expired_app_token(sb: SandboxServer) -> None:
    entra = sb.sandbox.entra
    claims = jwt.decode(sb.app_token(), options={"verify_signature": False})
    claims.update(exp=claims["iat"] - 10, nbf=claims["iat"] - 100)
    token = entra._sign(claims)
    r = httpx.get(f"{sb.graph_url}/subscriptions", headers={"Authorization": f"Bearer {token}"}, trust_env=False)
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "Lifetime validation failed, the token is expired."


def test_key_rotation_publishes_both_keys_then_drops_the_old(sb: SandboxServer) -> None:
    old_kid = jwt.get_unverified_header(sb.user_token("admin@contoso.test"))["kid"]
    old_token = sb.app_token()
    try:
        rotated = sb.control("POST", "keys/rotate", {"keepOld": True})
        assert rotated["published"] == [rotated["kid"], old_kid]
        new_token = sb.user_token("admin@contoso.test")
        assert jwt.get_unverified_header(new_token)["kid"] == rotated["kid"] != old_kid
        assert _verify(sb, new_token)["upn"] == "admin@contoso.test"
        graph = f"{sb.graph_url}/subscriptions"
        assert httpx.get(graph, headers={"Authorization": f"Bearer {old_token}"}, trust_env=False).status_code == 200
        sb.control("POST", "keys/rotate", {"keepOld": False})
        assert httpx.get(graph, headers={"Authorization": f"Bearer {old_token}"}, trust_env=False).status_code == 401
        with pytest.raises(jwt.InvalidKeyError):
            _verify(sb, new_token)  # its kid is no longer published: a verifier must refetch and then refuse
    finally:
        sb.control("POST", "keys/rotate", {"keepOld": False})
