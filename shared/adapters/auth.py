"""Who is calling: validation of Entra ID bearer tokens on the registration API.

Power Automate calls the registration routes with the flow maker's connection token (an Entra ID v2
access token for our API). This module owns checking that token — and nothing else: whether the caller
may act on a Bookings business is the registration API's question.

The rules, and why:

- **RS256 only.** The algorithm is pinned here, never taken from the token header, so ``alg: none``
  and HS256-signed tokens (the classic "public key used as HMAC secret" trick) are refused before any
  key is touched.
- **Issuer, audience and tenant** must be ours (settings ``AUTH_ISSUER``, ``AUTH_AUDIENCE``,
  ``ENTRA_TENANT_ID``); ``exp``, ``nbf``, ``iat`` are required, with a small clock-skew leeway.
- **A user token.** The caller must be a signed-in user (``oid``, a ``upn`` or ``preferred_username``,
  and delegated scopes ``scp``): the admin rule is about *people*, so app-only tokens are refused.
- **Our scope, through our connector.** ``scp`` (a space-separated list) must hold the API's own delegated
  scope (``AUTH_SCOPE``), and the client the user signed in with, ``azp`` in v2.0 tokens (``appid`` in v1.0
  tokens), must be one of ``AUTH_ALLOWED_CLIENT_IDS`` (the custom connector's app registration). Without
  this, any app of the tenant that obtained a token for our API (with some other scope, or consented by a
  user to another client) could register flows as that user. Microsoft identity platform, "Access token
  claims reference" (https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference):
  ``scp`` "The application should verify that these scopes are valid ones exposed by the application, and
  make authorization decisions based on the value of these scopes"; ``azp`` "A replacement for appid. The
  application ID of the client using the token", only present in v2.0 tokens, ``appid`` only in v1.0
  tokens; both "may be used in authorization decisions". Our API registration asks for v2.0 tokens
  (``requestedAccessTokenVersion: 2``), so on Azure it is ``azp``; a v1.0 token would also need a v1.0
  ``AUTH_ISSUER``.
- **Signing keys** come from the JWKS URL (``AUTH_JWKS_URL``), fetched with httpx and cached. A token
  signed with a ``kid`` we do not know triggers one refresh (Entra ID rotates keys), but refreshes are
  rate-limited: a flood of tokens with random ``kid`` values costs at most one JWKS fetch per
  ``min_refresh_seconds``, never one per request. Concurrent requests share one in-flight fetch.
- If the JWKS endpoint cannot be reached and no key is cached, the answer is 503
  ``DependencyUnavailable``, not 401: the caller's sign-in is not at fault, and telling them to
  re-authenticate would send them the wrong way.

Every token failure is ``ApiError("Unauthenticated", reason=...)`` with a ``WWW-Authenticate``
header. Reasons describe the failure in plain words and never quote the token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.adapters.lazy_imports import lazy
from shared.adapters.per_loop import PerLoop
from shared.adapters.settings import Settings, get_settings
from shared.contracts.errors import ApiError

if TYPE_CHECKING:
    import httpx
    import jwt
    from jwt import PyJWK
else:
    # Imported by the first token checked (or the warm-up, shared.adapters.lazy_imports), not with the app.
    httpx = lazy("httpx")
    jwt = lazy("jwt")

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
# Entra ID and our hosts keep their clocks in sync; a minute covers ordinary drift without letting an
# expired token live on noticeably.
DEFAULT_LEEWAY_SECONDS = 60
# At most one JWKS fetch per this many seconds caused by unknown ``kid`` values.
DEFAULT_MIN_REFRESH_SECONDS = 30.0
# Even when every kid is known, re-read the key set now and then so keys Entra ID retired stop working.
DEFAULT_MAX_KEY_AGE_SECONDS = 24 * 3600.0
JWKS_TIMEOUT_SECONDS = 5.0
_WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


@dataclass(frozen=True)
class Caller:
    """The signed-in user behind a request."""

    oid: str  # Entra object id: stable, what we record as a flow's creator
    upn: str  # lower-cased upn (or preferred_username)
    tenant: str
    name: str
    # Every address the token names for the user (upn, preferred_username, email, unique_name), lower-cased.
    # A staff list holds the person's mail address, which need not be any of them: shared.services.
    # bookings_directory adds the directory's mail and proxyAddresses.
    claimed_addresses: frozenset[str] = field(default=frozenset(), compare=False)
    # The bearer token itself: on-behalf-of exchanges need it (shared.adapters.on_behalf_of). Never logged.
    token: str = field(default="", compare=False, repr=False)


def _unauthenticated(reason: str) -> ApiError:
    return ApiError("Unauthenticated", headers=dict(_WWW_AUTHENTICATE), reason=reason)


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or a 401 naming what is wrong."""
    if not authorization or not authorization.strip():
        raise _unauthenticated("no bearer token in the Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthenticated("the Authorization header is not 'Bearer <token>'")
    return token.strip()


@dataclass
class TokenValidator:
    """Validates bearer tokens against one issuer's key set. One per event loop (see ``get_validator``)."""

    issuer: str
    audience: str
    tenant_id: str
    jwks_url: str
    scope: str  # the API's delegated scope, one name as it appears in 'scp'
    allowed_client_ids: tuple[str, ...]  # lower-case GUIDs; empty: no client is accepted
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS
    min_refresh_seconds: float = DEFAULT_MIN_REFRESH_SECONDS
    max_key_age_seconds: float = DEFAULT_MAX_KEY_AGE_SECONDS
    _keys: dict[str, PyJWK] = field(default_factory=dict, repr=False)
    _fetched_at: float | None = field(default=None, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenValidator:
        return cls(issuer=settings.issuer, audience=settings.audience, tenant_id=settings.tenant_id,
                   jwks_url=settings.jwks_url, scope=settings.auth_scope,
                   allowed_client_ids=settings.auth_allowed_client_ids)

    async def validate(self, token: str) -> Caller:
        """The caller of a valid token; ``ApiError("Unauthenticated")`` for anything else."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthenticated("the token is malformed") from None
        if header.get("alg") != ALGORITHM:
            # Checked before any key lookup: 'none' and HS* must never reach a verifier.
            raise _unauthenticated(f"the token must be signed with {ALGORITHM}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _unauthenticated("the token names no signing key (kid)")
        key = await self._key(kid)
        try:
            claims = jwt.decode(
                token, key=key, algorithms=[ALGORITHM], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "nbf", "iat", "iss", "aud"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthenticated("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _unauthenticated("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise _unauthenticated("the token was issued for another application (audience)") from None
        except jwt.InvalidIssuerError:
            raise _unauthenticated("the token was issued by another authority (issuer)") from None
        except jwt.InvalidSignatureError:
            raise _unauthenticated("the token's signature does not match") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _unauthenticated(f"the token lacks the '{exc.claim}' claim") from None
        except jwt.PyJWTError:
            raise _unauthenticated("the token is malformed") from None
        return dataclasses.replace(self._caller(claims), token=token)

    def _caller(self, claims: dict[str, Any]) -> Caller:
        if claims.get("tid") != self.tenant_id:
            raise _unauthenticated("the token belongs to another tenant")
        oid = claims.get("oid")
        upn = claims.get("upn") or claims.get("preferred_username")
        if not isinstance(oid, str) or not oid or not isinstance(upn, str) or not upn:
            raise _unauthenticated("the token does not identify a signed-in user")
        if not isinstance(claims.get("scp"), str) or not claims["scp"].strip():
            # App-only tokens carry 'roles' instead; only a person can be a Bookings administrator.
            raise _unauthenticated("the token is not a user's delegated token")
        if self.scope not in claims["scp"].split():
            raise _unauthenticated(f"the token does not grant this API's '{self.scope}' scope (scp)")
        self._check_client(claims)
        name = claims.get("name")
        claimed = {str(claims[c]).strip().lower() for c in ("upn", "preferred_username", "email", "unique_name")
                   if isinstance(claims.get(c), str) and "@" in claims[c]}
        return Caller(oid=oid, upn=upn.strip().lower(), tenant=claims["tid"],
                      name=name if isinstance(name, str) else "", claimed_addresses=frozenset(claimed))

    def _check_client(self, claims: dict[str, Any]) -> None:
        """The client application the user signed in with must be one we accept (the connector)."""
        # 'azp' in v2.0 tokens, 'appid' in v1.0 tokens: the same value under two names; a token has one.
        client = claims["azp"] if "azp" in claims else claims.get("appid")
        if not isinstance(client, str) or not client.strip():
            raise _unauthenticated("the token does not name the client application (azp/appid)")
        if client.strip().lower() not in self.allowed_client_ids:
            log.warning("bearer token refused: client application %s is not in AUTH_ALLOWED_CLIENT_IDS",
                        client.strip()[:64])
            raise _unauthenticated(
                f"the token was issued to client application {client.strip()[:64]!r}, which this API does not "
                "accept (AUTH_ALLOWED_CLIENT_IDS)")

    async def _key(self, kid: str) -> PyJWK:
        now = time.monotonic()
        stale = self._fetched_at is None or now - self._fetched_at > self.max_key_age_seconds
        if not stale and kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            # Another request may have refreshed while we waited for the lock.
            if kid in self._keys and self._fetched_at is not None \
                    and time.monotonic() - self._fetched_at <= self.max_key_age_seconds:
                return self._keys[kid]
            may_refresh = self._fetched_at is None or stale \
                or time.monotonic() - self._fetched_at >= self.min_refresh_seconds
            if may_refresh:
                await self._refresh()
        key = self._keys.get(kid)
        if key is None:
            raise _unauthenticated("the token's signing key is unknown")
        return key

    async def _refresh(self) -> None:
        try:
            async with httpx.AsyncClient(timeout=JWKS_TIMEOUT_SECONDS) as client:
                response = await client.get(self.jwks_url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("JWKS fetch from %s failed: %s", self.jwks_url, type(exc).__name__)
            if self._keys:
                # Keep the keys we have; an unknown kid is then simply unknown. Retry after the interval.
                self._fetched_at = time.monotonic()
                return
            raise ApiError("DependencyUnavailable", dependency="Entra ID signing keys (JWKS)") from None
        self._keys = _parse_jwks(document)
        self._fetched_at = time.monotonic()
        log.info("JWKS refreshed: %d signing keys", len(self._keys))


def _parse_jwks(document: Any) -> dict[str, PyJWK]:
    """RSA signing keys by kid. Keys we cannot use are skipped, so one odd key does not block the rest."""
    keys: dict[str, PyJWK] = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        try:
            keys[kid] = jwt.PyJWK({**entry, "alg": ALGORITHM})
        except jwt.PyJWTError:
            log.warning("JWKS key %s skipped: not a usable RSA key", kid)
    return keys


# The validator holds an asyncio.Lock, which belongs to one event loop: the Functions worker has one,
# tests have many: one validator (and one key set) per loop.
_validators: PerLoop[TokenValidator] = PerLoop(lambda: TokenValidator.from_settings(get_settings()))


def get_validator() -> TokenValidator:
    return _validators.get()


async def authenticate(authorization: str | None) -> Caller:
    """The caller named by an ``Authorization`` header value; 401 ``Unauthenticated`` otherwise."""
    return await get_validator().validate(bearer_token(authorization))
