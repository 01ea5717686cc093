"""Fixtures of the registration tests: an Entra-like token issuer served over real HTTP.

``issuer`` starts a tiny JWKS server on 127.0.0.1 (stdlib ``http.server`` in a thread) and signs
tokens with the claims Entra ID v2 access tokens carry. It is the one place the unit tests make tokens
(they only call ``issuer.token(...)`` and read ``issuer.jwks_url`` / ``issuer.issuer``), because they need
what a shared server cannot give per test: key rotation, unpublished kids, counting JWKS fetches.
``bookings_sandbox`` is the Graph + Entra sandbox; test_registration_sandbox.py uses its tokens and staff lists.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from testing.settings import sample_settings

TENANT = sample_settings()["ENTRA_TENANT_ID"]
AUDIENCE = sample_settings()["AUTH_AUDIENCE"]
SCOPE = sample_settings()["AUTH_SCOPE"]
# The custom connector's client id: the client the app accepts (AUTH_ALLOWED_CLIENT_IDS), as the sandbox's.
CONNECTOR_CLIENT_ID = sample_settings()["AUTH_ALLOWED_CLIENT_IDS"].split(",")[0]


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    # Entra ID's JWKS entries have no 'alg'; they carry kty, use, kid, n, e (and x5t/x5c we do not use).
    jwk.pop("alg", None)
    return {**jwk, "kid": kid, "use": "sig"}


@dataclass
class TokenIssuer:
    """Signs tokens and serves the public keys the app trusts, like Entra ID for one tenant."""

    base_url: str
    tenant: str = TENANT
    audience: str = AUDIENCE
    published: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)  # kid -> key, served in the JWKS
    jwks_requests: int = 0
    jwks_fail: bool = False  # answer 503 instead of the key set

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/{self.tenant}/v2.0"

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/{self.tenant}/discovery/v2.0/keys"

    @property
    def current_kid(self) -> str:
        return next(reversed(self.published))

    def rotate(self, drop_old: bool = False) -> str:
        """Publish a new signing key (and optionally retire the old ones); returns the new kid."""
        kid = f"kid-{uuid.uuid4().hex[:12]}"
        if drop_old:
            self.published.clear()
        self.published[kid] = new_rsa_key()
        return kid

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(k, kid) for kid, k in self.published.items()]}

    def claims(self, user: str = "admin@contoso.test", **overrides: Any) -> dict[str, Any]:
        """Entra v2 access-token claims for ``user``; ``overrides`` set claims, or remove them with None."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": self.audience, "tid": self.tenant,
            "oid": str(uuid.uuid5(uuid.NAMESPACE_DNS, user)), "upn": user, "preferred_username": user,
            "name": user.split("@")[0].title(), "scp": SCOPE, "azp": CONNECTOR_CLIENT_ID, "azpacr": "0",
            "ver": "2.0", "iat": now, "nbf": now, "exp": now + 3600,
        }
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def token(self, user: str = "admin@contoso.test", *, kid: str | None = None,
              key: rsa.RSAPrivateKey | None = None, headers: dict[str, Any] | None = None,
              **claim_overrides: Any) -> str:
        """A signed RS256 token for ``user``; ``claim_overrides`` set (or with None, remove) claims."""
        kid = kid or self.current_kid
        signing_key = key or self.published[kid]
        return jwt.encode(self.claims(user, **claim_overrides), signing_key, algorithm="RS256",
                          headers={"kid": kid, **(headers or {})})

    def bearer(self, user: str = "admin@contoso.test", **kw: Any) -> str:
        return f"Bearer {self.token(user, **kw)}"


def _serve(issuer_ref: list[TokenIssuer]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer = issuer_ref[0]
            if self.path != f"/{issuer.tenant}/discovery/v2.0/keys":
                self.send_error(404)
                return
            issuer.jwks_requests += 1
            if issuer.jwks_fail:
                self.send_error(503)
                return
            body = json.dumps(issuer.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="session")
def jwks_server() -> Iterator[tuple[str, list[TokenIssuer]]]:
    ref: list[TokenIssuer] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _serve(ref))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", ref
    server.shutdown()
    server.server_close()


@pytest.fixture
def issuer(jwks_server: tuple[str, list[TokenIssuer]]) -> Iterator[TokenIssuer]:
    """A fresh issuer (new key, zero counters) per test, served by the session's JWKS server."""
    base_url, ref = jwks_server
    token_issuer = TokenIssuer(base_url)
    token_issuer.rotate()
    ref[:] = [token_issuer]
    yield token_issuer


@pytest.fixture
def auth_env(issuer: TokenIssuer, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The sample settings in the environment, trusting ``issuer`` (no storage needed)."""
    from shared.adapters.settings import reset_settings_cache

    values = {**sample_settings(), "AUTH_ISSUER": issuer.issuer, "AUTH_JWKS_URL": issuer.jwks_url}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    yield values
    reset_settings_cache()


@pytest.fixture(scope="session")
def bookings_sandbox() -> Iterator[Any]:
    """The Graph + Entra sandbox (graph_sandbox), once per session; its demo tenant is re-seeded per test."""
    from graph_sandbox.testing import SandboxServer

    with SandboxServer() as server:
        yield server


@pytest.fixture(autouse=True)
def subscription_hooks(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """These tests are about the registration rules; the Graph subscription a first flow creates (and the
    last flow deletes) is tested end to end in tests/subscriptions and tests/e2e. Here the two hooks only
    record that they were called, so the tests need no notification endpoint for Graph's handshake."""
    from shared.services import subscriptions

    calls: dict[str, list[str]] = {"registered": [], "last_removed": []}

    async def registered(business: str) -> None:
        calls["registered"].append(business)

    async def last_removed(business: str) -> None:
        calls["last_removed"].append(business)

    monkeypatch.setattr(subscriptions, "ensure", registered)
    monkeypatch.setattr(subscriptions, "release_if_no_flows", last_removed)
    return calls
