"""Bearer-token validation against a JWKS served over real HTTP (see conftest.TokenIssuer)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import azure.functions as func
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from shared.adapters.auth import Caller, TokenValidator, authenticate, bearer_token
from shared.adapters.settings import reset_settings_cache
from shared.contracts.errors import ApiError
from shared.endpoints import flow_webhooks
from tests.registration.conftest import CONNECTOR_CLIENT_ID, SCOPE, TokenIssuer, new_rsa_key

OTHER_CLIENT = "0f1e2d3c-4b5a-4697-8877-665544332211"  # another app of the tenant, not the connector


def validator_for(issuer: TokenIssuer, **kw) -> TokenValidator:
    kw.setdefault("scope", SCOPE)
    kw.setdefault("allowed_client_ids", (CONNECTOR_CLIENT_ID,))
    return TokenValidator(issuer=issuer.issuer, audience=issuer.audience, tenant_id=issuer.tenant,
                          jwks_url=issuer.jwks_url, **kw)


async def rejected(validator: TokenValidator, token: str) -> str:
    with pytest.raises(ApiError) as info:
        await validator.validate(token)
    assert info.value.code == "Unauthenticated", info.value.details
    assert info.value.status == 401
    assert info.value.headers["WWW-Authenticate"].startswith("Bearer")
    return info.value.details["reason"]


def b64(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def test_valid_token_gives_the_caller(issuer: TokenIssuer) -> None:
    token = issuer.token("Admin@Contoso.TEST", name="Ada Admin")
    caller = await validator_for(issuer).validate(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert caller == Caller(oid=claims["oid"], upn="admin@contoso.test", tenant=issuer.tenant, name="Ada Admin")


async def test_preferred_username_when_no_upn(issuer: TokenIssuer) -> None:
    caller = await validator_for(issuer).validate(issuer.token(upn=None, preferred_username="Guest@Fabrikam.TEST"))
    assert caller.upn == "guest@fabrikam.test"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(time.time()) - 600}, "expired"),
        # A day ahead: the parameters are made at collection, and a full suite runs for many minutes.
        ({"nbf": int(time.time()) + 86400}, "not valid yet"),
        ({"aud": "api://someone-else"}, "audience"),
        ({"iss": "https://login.microsoftonline.com/other/v2.0"}, "issuer"),
        ({"tid": "00000000-0000-0000-0000-000000000000"}, "tenant"),
        ({"exp": None}, "'exp'"),
        ({"nbf": None}, "'nbf'"),
        ({"oid": None}, "signed-in user"),
        ({"upn": None, "preferred_username": None}, "signed-in user"),
        ({"scp": None, "roles": ["Webhooks.ReadWrite.All"]}, "delegated"),
        # Our scope, and only ours: another scope of the API, a look-alike, a substring, a full scope URI.
        ({"scp": "Webhooks.ReadWrite"}, f"'{SCOPE}' scope"),
        ({"scp": "openid profile User.Read"}, f"'{SCOPE}' scope"),
        ({"scp": f"{SCOPE}2 x{SCOPE}"}, f"'{SCOPE}' scope"),
        ({"scp": f"{SCOPE.upper()}"}, f"'{SCOPE}' scope"),
        ({"scp": f"api://bookings-triggers-local/{SCOPE}"}, f"'{SCOPE}' scope"),
        ({"scp": f"{SCOPE},openid"}, f"'{SCOPE}' scope"),  # the list is space-separated
        # The connector, and only the connector, as the client the user signed in with.
        ({"azp": OTHER_CLIENT}, "does not accept"),
        ({"azp": None}, "client application (azp/appid)"),
        ({"azp": ""}, "client application (azp/appid)"),
        ({"azp": OTHER_CLIENT, "appid": CONNECTOR_CLIENT_ID}, "does not accept"),  # azp decides in v2.0
        ({"azp": None, "ver": "1.0", "appid": OTHER_CLIENT}, "does not accept"),
    ],
)
async def test_bad_claims_are_rejected(issuer: TokenIssuer, overrides: dict, reason: str) -> None:
    assert reason in await rejected(validator_for(issuer), issuer.token(**overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        {"scp": f"openid {SCOPE} profile"},  # one of several delegated scopes
        {"scp": f"  {SCOPE}  "},
        {"azp": CONNECTOR_CLIENT_ID.upper()},  # GUIDs compare case-insensitively
        {"azp": None, "ver": "1.0", "appid": CONNECTOR_CLIENT_ID},  # a v1.0 token names its client in appid
    ],
)
async def test_our_scope_from_our_connector_is_accepted(issuer: TokenIssuer, overrides: dict) -> None:
    caller = await validator_for(issuer).validate(issuer.token(**overrides))
    assert caller.upn == "admin@contoso.test"


async def test_every_allowed_client_is_accepted_and_none_when_none_is_allowed(issuer: TokenIssuer) -> None:
    both = validator_for(issuer, allowed_client_ids=(CONNECTOR_CLIENT_ID, OTHER_CLIENT))
    await both.validate(issuer.token(azp=OTHER_CLIENT))
    await both.validate(issuer.token())
    assert "does not accept" in await rejected(validator_for(issuer, allowed_client_ids=()), issuer.token())


async def test_the_scope_is_a_setting(issuer: TokenIssuer) -> None:
    validator = validator_for(issuer, scope="Webhooks.ReadWrite")
    await validator.validate(issuer.token(scp="Webhooks.ReadWrite"))
    assert "'Webhooks.ReadWrite' scope" in await rejected(validator, issuer.token())


async def test_clock_skew_within_leeway_is_accepted(issuer: TokenIssuer) -> None:
    validator = validator_for(issuer, leeway_seconds=60)
    await validator.validate(issuer.token(exp=int(time.time()) - 30))
    await validator.validate(issuer.token(nbf=int(time.time()) + 30))
    assert "expired" in await rejected(validator, issuer.token(exp=int(time.time()) - 90))


async def test_unsigned_token_is_rejected_without_fetching_keys(issuer: TokenIssuer) -> None:
    claims = issuer.claims()
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': issuer.current_kid})}.{b64(claims)}."
    validator = validator_for(issuer)
    assert "RS256" in await rejected(validator, unsigned)
    assert issuer.jwks_requests == 0


async def test_hs256_signed_with_the_public_key_is_rejected(issuer: TokenIssuer) -> None:
    # The classic confusion attack: HMAC "signed" with the RSA public key as the secret.
    public_pem = issuer.published[issuer.current_kid].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.current_kid}
    signing_input = f"{b64(header)}.{b64(issuer.claims())}".encode()
    signature = b64(hmac.new(public_pem, signing_input, hashlib.sha256).digest())
    assert "RS256" in await rejected(validator_for(issuer), f"{signing_input.decode()}.{signature}")


async def test_bad_signature_is_rejected(issuer: TokenIssuer) -> None:
    forged = issuer.token(key=new_rsa_key())  # right kid, wrong private key
    assert "signature" in await rejected(validator_for(issuer), forged)


async def test_tampered_payload_is_rejected(issuer: TokenIssuer) -> None:
    header, _, signature = issuer.token("viewer@contoso.test").split(".")
    payload = b64(issuer.claims("admin@contoso.test"))
    assert "signature" in await rejected(validator_for(issuer), f"{header}.{payload}.{signature}")


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30", f"{b64(b'not json')}.{b64({})}.sig",
     f"{b64({'alg': 'RS256'})}.{b64({})}.sig"],
)
async def test_malformed_tokens_are_rejected(issuer: TokenIssuer, token: str) -> None:
    reason = await rejected(validator_for(issuer), token)
    assert "malformed" in reason or "kid" in reason


async def test_unknown_kid_then_rotation(issuer: TokenIssuer) -> None:
    validator = validator_for(issuer, min_refresh_seconds=0.2)
    await validator.validate(issuer.token())
    assert issuer.jwks_requests == 1

    # A key Entra ID has not published: unknown, one refresh (once the interval has passed), still unknown.
    await asyncio.sleep(0.25)
    stranger = new_rsa_key()
    assert "unknown" in await rejected(validator, issuer.token(kid="kid-not-published", key=stranger))
    assert issuer.jwks_requests == 2

    # Entra ID rotates: the new kid is fetched on first sight (after the rate-limit interval).
    await asyncio.sleep(0.25)
    new_kid = issuer.rotate(drop_old=True)
    caller = await validator.validate(issuer.token(kid=new_kid))
    assert caller.upn == "admin@contoso.test"
    assert issuer.jwks_requests == 3
    # Known keys are served from the cache.
    await validator.validate(issuer.token(kid=new_kid))
    assert issuer.jwks_requests == 3


async def test_flood_of_random_kids_fetches_the_jwks_at_most_once_per_interval(issuer: TokenIssuer) -> None:
    validator = validator_for(issuer, min_refresh_seconds=0.3)
    await validator.validate(issuer.token())
    key = new_rsa_key()
    # Right after a fetch, unknown kids cost nothing.
    assert "unknown" in await rejected(validator, issuer.token(kid="random-early", key=key))
    assert issuer.jwks_requests == 1
    await asyncio.sleep(0.35)
    tokens = [issuer.token(kid=f"random-{i}", key=key) for i in range(200)]
    results = await asyncio.gather(*(validator.validate(t) for t in tokens), return_exceptions=True)
    assert all(isinstance(r, ApiError) and r.code == "Unauthenticated" for r in results)
    assert issuer.jwks_requests == 1 + 1  # the first fetch, then one refresh for the whole flood


async def test_concurrent_first_requests_share_one_fetch(issuer: TokenIssuer) -> None:
    validator = validator_for(issuer)
    callers = await asyncio.gather(*(validator.validate(issuer.token()) for _ in range(20)))
    assert len(callers) == 20 and issuer.jwks_requests == 1


async def test_unreachable_jwks_is_a_dependency_failure_not_a_401(issuer: TokenIssuer) -> None:
    issuer.jwks_fail = True
    with pytest.raises(ApiError) as info:
        await validator_for(issuer).validate(issuer.token())
    assert info.value.code == "DependencyUnavailable" and info.value.status == 503


async def test_cached_keys_survive_a_jwks_outage(issuer: TokenIssuer) -> None:
    validator = validator_for(issuer, min_refresh_seconds=0)
    await validator.validate(issuer.token())
    issuer.jwks_fail = True
    await validator.validate(issuer.token())  # cached key, no fetch needed
    assert "unknown" in await rejected(validator, issuer.token(kid="kid-other", key=new_rsa_key()))


async def test_retired_keys_stop_working_when_the_cache_ages(issuer: TokenIssuer) -> None:
    validator = validator_for(issuer, max_key_age_seconds=0.1)
    old_kid = issuer.current_kid
    await validator.validate(issuer.token())
    issuer.rotate(drop_old=True)
    await asyncio.sleep(0.15)
    # The old key is still cached but too old: refreshed, and Entra ID no longer publishes it.
    old_token = jwt.encode(issuer.claims(), new_rsa_key(), algorithm="RS256", headers={"kid": old_kid})
    assert "unknown" in await rejected(validator, old_token)


@pytest.mark.parametrize("header", [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "token-without-scheme"])
def test_authorization_header_shapes(header: str | None) -> None:
    with pytest.raises(ApiError) as info:
        bearer_token(header)
    assert info.value.code == "Unauthenticated"


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token("bearer abc.def.ghi") == "abc.def.ghi"


async def test_authenticate_reads_the_settings(issuer: TokenIssuer, auth_env) -> None:
    caller = await authenticate(issuer.bearer("scheduler@contoso.test"))
    assert caller.upn == "scheduler@contoso.test"


async def test_authenticate_uses_the_scope_and_client_settings(issuer: TokenIssuer, auth_env,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_ALLOWED_CLIENT_IDS", f"{OTHER_CLIENT}, {CONNECTOR_CLIENT_ID.upper()}")
    monkeypatch.setenv("AUTH_SCOPE", "Flows.Manage")
    reset_settings_cache()
    await authenticate(issuer.bearer(azp=OTHER_CLIENT, scp="Flows.Manage"))
    await authenticate(issuer.bearer(scp="openid Flows.Manage"))
    with pytest.raises(ApiError, match="Unauthenticated"):
        await authenticate(issuer.bearer())  # user_impersonation is not the scope any more


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"azp": OTHER_CLIENT}, "does not accept"), ({"scp": "Webhooks.ReadWrite"}, "scope"),
    ({"azp": None}, "azp/appid"),
])
async def test_refused_client_or_scope_is_a_401_json_error_from_the_api(issuer: TokenIssuer, auth_env,
                                                                       overrides: dict, reason: str) -> None:
    # Through the registration handler as the Functions runtime calls it: a JSON 401, never a 500. The
    # token is refused before the route touches storage or Graph.
    business = "clinic@contoso.test"
    req = func.HttpRequest(
        "POST", f"http://127.0.0.1:7071/api/v1/bookingBusinesses/{business}/webhooks/AppointmentCreated",
        headers={"content-type": "application/json", "authorization": issuer.bearer(**overrides)}, params={},
        route_params={"smtp": business, "name": "AppointmentCreated"},
        body=json.dumps({"notificationURL": "https://a.logic.azure.com/x", "changeType": ["Created"]}).encode())
    response = await flow_webhooks.webhook(req)
    assert response.status_code == 401, response.get_body()
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    error = json.loads(response.get_body())["error"]
    assert error["code"] == "Unauthenticated" and reason in error["message"] and error["correlationId"]


async def test_the_sandboxs_user_tokens_pass_the_local_settings(bookings_sandbox, auth_env, monkeypatch) -> None:
    # local.settings.sample.json (the local stack, every test) accepts what the Graph sandbox's Entra issues
    # for the connector, and refuses its tokens for another scope.
    for name, value in {"ENTRA_TENANT_ID": bookings_sandbox.tenant_id, "AUTH_ISSUER": bookings_sandbox.issuer,
                        "AUTH_JWKS_URL": bookings_sandbox.jwks_url}.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    try:
        caller = await authenticate(f"Bearer {bookings_sandbox.user_token('admin@contoso.test')}")
        assert caller.upn == "admin@contoso.test"
        other = bookings_sandbox.http.post("/_sandbox/tokens/user",
                                           json={"upn": "admin@contoso.test", "scp": "User.Read"})
        other.raise_for_status()
        with pytest.raises(ApiError) as info:
            await authenticate(f"Bearer {other.json()['access_token']}")
        assert info.value.code == "Unauthenticated" and "scope" in info.value.details["reason"]
    finally:
        reset_settings_cache()
