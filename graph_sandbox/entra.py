"""Entra ID stand-in: signing keys, OpenID discovery, JWKS, the token endpoint (client credentials and the
on-behalf-of grant), user tokens for local sign-in (good and deliberately bad ones), and Graph's check of
tokens.

On-behalf-of (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow): a
confidential client posts ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``,
``requested_token_use=on_behalf_of``, the user's token as ``assertion`` and Graph scopes. The assertion must
be signed by this tenant, unexpired, and issued *for that client* (its client id or one of its Application ID
URIs: AADSTS500131 otherwise). The answer is a delegated Graph token: ``scp`` holds the consented delegated
permissions asked for, ``oid``/``upn`` the user.

Issuers: user (v2.0) tokens say ``{base_url}/{tenant}/v2.0`` as the discovery document does; app
tokens for Graph are v1.0 tokens from ``https://sts.windows.net/{tenant}/`` like the real ones.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .config import GRAPH_AUDIENCE
from .errors import GraphError, entra_error

if TYPE_CHECKING:
    from .app import Sandbox

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
USER_TOKEN_KINDS = ("valid", "expired", "wrong_audience", "wrong_issuer", "unsigned", "bad_signature", "not_yet_valid")
# The Power Automate custom connector is the client that asks for user tokens for our API.
CONNECTOR_CLIENT_ID = "c0ec7000-0000-4000-8000-000000000003"


@dataclass
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = RSAAlgorithm.to_jwk(key.public_key()).encode()
        kid = base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:20]).decode().rstrip("=")
        return cls(kid, key)

    def jwk(self, issuer: str) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": jwk["n"],
            "e": jwk["e"],
            "issuer": issuer,
        }


class Entra:
    """Keys and token logic of one tenant."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.key = SigningKey.generate()
        # Keys still published after a rotation (Entra keeps old keys in the JWKS for a while).
        self.previous_keys: list[SigningKey] = []
        self._verified: dict[str, dict[str, Any]] = {}
        # Signs "bad_signature" tokens: same kid as the real key, different key material.
        self.rogue_key = SigningKey.generate()

    @property
    def tenant(self) -> str:
        return self.sandbox.config.tenant_id

    def rotate(self, keep_old: bool = True) -> SigningKey:
        """Sign with a new key from now on; the old one stays in the JWKS unless ``keep_old`` is False."""
        self.previous_keys = [self.key, *self.previous_keys] if keep_old else []
        self._verified.clear()
        self.key = SigningKey.generate()
        return self.key

    def published(self) -> list[SigningKey]:
        return [self.key, *self.previous_keys]

    def v2_issuer(self) -> str:
        return f"{self.sandbox.base_url}/{self.tenant}/v2.0"

    def app_issuer(self) -> str:
        return f"https://sts.windows.net/{self.tenant}/"

    def _sign(self, claims: dict[str, Any], key: SigningKey | None = None, kid: str | None = None) -> str:
        key = key or self.key
        headers = {"typ": "JWT", "kid": kid or key.kid, "x5t": kid or key.kid}
        return jwt.encode(claims, key.private_key, algorithm="RS256", headers=headers)

    def _graph_claims(self, client_id: str) -> tuple[dict[str, Any], int]:
        """What every Graph token (v1.0, from sts.windows.net) says, app-only or delegated; and its lifetime."""
        now = int(time.time())
        lifetime = self.sandbox.config.token_lifetime_s
        return {"aud": GRAPH_AUDIENCE, "iss": self.app_issuer(), "iat": now, "nbf": now, "exp": now + lifetime,
                "appid": client_id, "appidacr": "1"}, lifetime

    def issue_app_token(self, client_id: str, roles: list[str], display_name: str) -> tuple[str, int]:
        common, lifetime = self._graph_claims(client_id)
        sp_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{self.tenant}:{client_id}"))
        claims = {
            **common,
            "app_displayname": display_name,
            "idp": self.app_issuer(),
            "idtyp": "app",
            "oid": sp_id,
            "roles": sorted(roles),
            "sub": sp_id,
            "tid": self.tenant,
            "uti": uuid.uuid4().hex[:22],
            "ver": "1.0",
        }
        return self._sign(claims), lifetime

    def issue_user_token(self, upn: str, kind: str, scp: str = "user_impersonation") -> tuple[str, dict[str, Any]]:
        user = self.sandbox.state.find_user(upn)
        if user is None:
            raise KeyError(upn)
        now = int(time.time())
        lifetime = self.sandbox.config.token_lifetime_s
        claims: dict[str, Any] = {
            "aud": self.sandbox.config.api_audience,
            "iss": self.v2_issuer(),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "azp": CONNECTOR_CLIENT_ID,
            "azpacr": "0",
            "name": user.display_name,
            "oid": user.id,
            "preferred_username": user.user_principal_name,
            "scp": scp,
            "sub": base64.urlsafe_b64encode(hashlib.sha256(f"{user.id}:{CONNECTOR_CLIENT_ID}".encode()).digest())
            .decode()
            .rstrip("="),
            "tid": self.tenant,
            "upn": user.user_principal_name,
            "uti": uuid.uuid4().hex[:22],
            "ver": "2.0",
        }
        if kind == "expired":
            claims.update(iat=now - 2 * lifetime, nbf=now - 2 * lifetime, exp=now - lifetime)
        elif kind == "not_yet_valid":
            claims.update(nbf=now + lifetime, exp=now + 2 * lifetime)
        elif kind == "wrong_audience":
            claims["aud"] = "api://some-other-api"
        elif kind == "wrong_issuer":
            claims["iss"] = "https://login.microsoftonline.com/72f988bf-0000-4000-8000-00000000beef/v2.0"
        if kind == "unsigned":
            token = jwt.encode(claims, key=None, algorithm="none", headers={"typ": "JWT"})
        elif kind == "bad_signature":
            token = self._sign(claims, key=self.rogue_key, kid=self.key.kid)
        else:
            token = self._sign(claims)
        return token, claims

    def issue_delegated_token(self, user_claims: dict[str, Any], client_id: str, scopes: list[str]
                              ) -> tuple[str, int]:
        """A Graph token for the user of ``user_claims``, for ``client_id``, with ``scp`` = ``scopes``."""
        common, lifetime = self._graph_claims(client_id)
        claims = {
            **common,
            "idtyp": "user",
            "name": user_claims.get("name", ""),
            "oid": user_claims["oid"],
            "scp": " ".join(sorted(scopes)),
            "sub": user_claims.get("sub", ""),
            "tid": self.tenant,
            "unique_name": user_claims.get("upn", ""),
            "upn": user_claims.get("upn", ""),
            "uti": uuid.uuid4().hex[:22],
            "ver": "1.0",
        }
        return self._sign(claims), lifetime

    def verify_assertion(self, assertion: str) -> dict[str, Any]:
        """The claims of a user token presented for on-behalf-of; ValueError(aadsts, text) when refused."""
        try:
            kid = jwt.get_unverified_header(assertion).get("kid")
        except jwt.PyJWTError:
            raise ValueError(50027, "JWT token is invalid or malformed.") from None
        key = next((k for k in self.published() if k.kid == kid), None)
        if key is None:
            raise ValueError(50013, "Assertion failed signature validation. [Reason - The key was not found.]")
        try:
            return jwt.decode(assertion, key.private_key.public_key(), algorithms=["RS256"],
                              options={"verify_aud": False, "require": ["exp", "nbf", "aud", "iss", "oid"]},
                              issuer=[self.v2_issuer(), self.app_issuer()])
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError):
            raise ValueError(500133, "Assertion is not within its valid time range.") from None
        except jwt.InvalidIssuerError:
            raise ValueError(50013, "Assertion failed signature validation. [Reason - The issuer is not trusted.]"
                             ) from None
        except jwt.PyJWTError:
            raise ValueError(50013, "Assertion failed signature validation.") from None

    def verify_app_token(self, authorization: str | None) -> dict[str, Any]:
        """Graph's own check of the bearer token; raises 401 ``InvalidAuthenticationToken``."""
        challenge = {
            "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/'
            f'authorize", client_id="{GRAPH_APP_ID}"'
        }

        def fail(message: str) -> GraphError:
            return GraphError(401, "InvalidAuthenticationToken", message, challenge)

        if not authorization or not authorization.strip():
            raise fail("Access token is empty.")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise fail("Access token is empty.")
        token = token.strip()
        cached = self._verified.get(token)
        if cached is not None and cached["nbf"] <= time.time() < cached["exp"]:
            return cached  # a token seen before: skip the RSA check (clients reuse one token for an hour)
        if token.count(".") != 2:
            raise fail("IDX14100: JWT is not well formed, there are no dots (.).")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = next((k for k in self.published() if k.kid == kid), self.key)
            claims = jwt.decode(
                token,
                key.private_key.public_key(),
                algorithms=["RS256"],
                audience=[GRAPH_AUDIENCE, GRAPH_APP_ID],
                issuer=self.app_issuer(),
                options={"require": ["exp", "nbf", "iat", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise fail("Lifetime validation failed, the token is expired.") from exc
        except jwt.ImmatureSignatureError as exc:
            raise fail("Lifetime validation failed, the token is not yet valid.") from exc
        except jwt.InvalidAudienceError as exc:
            raise fail("Access token validation failure. Invalid audience.") from exc
        except jwt.InvalidIssuerError as exc:
            raise fail("Access token validation failure. Invalid issuer.") from exc
        except jwt.PyJWTError as exc:
            raise fail("Access token validation failure.") from exc
        if len(self._verified) > 1000:
            self._verified.clear()
        self._verified[token] = claims
        return claims


def _entra(request: Request) -> Entra:
    return request.app.state.sandbox.entra


def _unknown_tenant(tenant: str) -> JSONResponse:
    return entra_error(
        400,
        "invalid_request",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the "
        "correct cloud.",
    )


async def openid_configuration(request: Request) -> Response:
    entra = _entra(request)
    tenant = request.path_params["tenant"]
    if tenant.lower() != entra.tenant:
        return _unknown_tenant(tenant)
    base = f"{entra.sandbox.base_url}/{entra.tenant}"
    return JSONResponse(
        {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{entra.sandbox.base_url}/{entra.tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": entra.v2_issuer(),
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "cloud_instance_name",
                "cloud_instance_host_name",
                "cloud_graph_host_name",
                "msgraph_host",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "acr",
                "nonce",
                "preferred_username",
                "name",
                "tid",
                "ver",
                "at_hash",
                "c_hash",
                "email",
            ],
            "tenant_region_scope": "NA",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        }
    )


async def jwks(request: Request) -> Response:
    entra = _entra(request)
    tenant = request.path_params["tenant"]
    if tenant.lower() != entra.tenant:
        return _unknown_tenant(tenant)
    return JSONResponse({"keys": [k.jwk(entra.v2_issuer()) for k in entra.published()]})


async def token(request: Request) -> Response:
    """``POST /{tenant}/oauth2/v2.0/token``: the client-credentials grant, Entra's checks and errors."""
    entra = _entra(request)
    tenant = request.path_params["tenant"]
    if tenant.lower() != entra.tenant:
        return _unknown_tenant(tenant)
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return entra_error(
            400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'."
        )
    # Parsed by hand: form parsing in Starlette would need python-multipart for one endpoint.
    params = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
    client_id, client_secret = params.get("client_id"), params.get("client_secret")
    basic = request.headers.get("authorization", "")
    if basic.lower().startswith("basic "):
        try:
            client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
        except ValueError:
            return entra_error(
                401,
                "invalid_client",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
            )
    grant_type = params.get("grant_type")
    if not grant_type:
        return entra_error(
            400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'."
        )
    if grant_type == JWT_BEARER:
        return _on_behalf_of(entra, params, client_id, client_secret)
    if grant_type != "client_credentials":
        return entra_error(
            400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant_type}'."
        )
    if not client_id:
        return entra_error(
            400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'."
        )
    app = entra.sandbox.config.app(client_id)
    if app is None:
        return entra_error(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory '{entra.tenant}'. "
            "This can happen "
            "if the application has not been installed by the administrator of the tenant or consented to by any user "
            "in the tenant. You may have sent your authentication request to the wrong tenant.",
        )
    if not client_secret:
        return entra_error(
            401,
            "invalid_client",
            7000216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
        )
    if client_secret != app.client_secret:
        return entra_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, "
            f"not the client secret ID, for a secret added to app '{client_id}'.",
        )
    scope = params.get("scope")
    if not scope:
        return entra_error(
            400, "invalid_request", 900144, "The request body must contain the following parameter: 'scope'."
        )
    if not scope.endswith("/.default"):
        return entra_error(
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {scope} is not valid. Client credential flows must have a scope value with "
            "/.default suffixed to the resource identifier (application ID URI).",
        )
    resource = scope[: -len("/.default")]
    if resource not in (GRAPH_AUDIENCE, GRAPH_APP_ID):
        return entra_error(
            400,
            "invalid_resource",
            500011,
            f"The resource principal named {resource} was not found in the tenant named {entra.tenant}. "
            "This can happen "
            "if the application has not been installed by the administrator of the tenant or consented to by any user "
            "in the tenant. You might have sent your authentication request to the wrong tenant.",
        )
    access_token, lifetime = entra.issue_app_token(client_id, app.roles, app.display_name)
    return JSONResponse(
        {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": access_token},
        headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
    )


JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _client(entra: Entra, client_id: str | None, client_secret: str | None, grant: str) -> Any:
    """The registered app presenting these credentials, or Entra's error answer."""
    if not client_id:
        return entra_error(
            400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'."
        )
    app = entra.sandbox.config.app(client_id)
    if app is None:
        return entra_error(400, "unauthorized_client", 700016, f"Application with identifier '{client_id}' was not "
                           f"found in the directory '{entra.tenant}'.")
    if not client_secret:
        return entra_error(401, "invalid_client", 7000216, "'client_assertion', 'client_secret' or 'request' is "
                           f"required for the '{grant}' grant type.")
    if client_secret != app.client_secret:
        return entra_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being "
                           f"sent in the request is the client secret value, not the client secret ID, for a secret "
                           f"added to app '{client_id}'.")
    return app


def _on_behalf_of(entra: Entra, params: dict[str, str], client_id: str | None, client_secret: str | None
                  ) -> Response:
    app = _client(entra, client_id, client_secret, JWT_BEARER)
    if isinstance(app, Response):
        return app
    if params.get("requested_token_use") != "on_behalf_of":
        return entra_error(400, "invalid_request", 900144,
                           "The request body must contain the following parameter: 'requested_token_use'.")
    assertion = params.get("assertion")
    if not assertion:
        return entra_error(400, "invalid_request", 900144,
                           "The request body must contain the following parameter: 'assertion'.")
    try:
        user = entra.verify_assertion(assertion)
    except ValueError as refused:
        code, text = refused.args
        return entra_error(400, "invalid_grant", code, text)
    if user.get("aud") not in (app.client_id, *app.identifier_uris):
        return entra_error(400, "invalid_grant", 500131,
                           "Assertion audience does not match the Client app presenting the assertion. The audience "
                           f"in the assertion was '{user.get('aud')}' and the expected audience is '{app.client_id}' "
                           f"or one of the Application Uris of this application with App ID '{app.client_id}'"
                           f"({app.display_name}).")
    requested = (params.get("scope") or "").split()
    if not requested:
        return entra_error(400, "invalid_request", 900144,
                           "The request body must contain the following parameter: 'scope'.")
    wanted: set[str] = set()
    for scope in requested:
        if scope in ("openid", "profile", "offline_access", "email"):
            continue
        resource, _, name = scope.rpartition("/")
        if resource not in (GRAPH_AUDIENCE, GRAPH_APP_ID) and scope not in app.delegated_scopes:
            return entra_error(400, "invalid_resource", 500011, f"The resource principal named {resource} was not "
                               f"found in the tenant named {entra.tenant}.")
        wanted |= set(app.delegated_scopes) if name == ".default" else {name or scope}
    missing = wanted - set(app.delegated_scopes)
    if missing or not wanted:  # nothing consented is no consent (".default" then names nothing)
        return entra_error(400, "invalid_grant", 65001, f"The user or administrator has not consented to use the "
                           f"application with ID '{app.client_id}' named '{app.display_name}'. Send an interactive "
                           "authorization request for this user and resource.")
    access_token, lifetime = entra.issue_delegated_token(user, app.client_id, sorted(wanted))
    return JSONResponse(
        {"token_type": "Bearer", "scope": " ".join(f"{GRAPH_AUDIENCE}/{s}" for s in sorted(wanted)),
         "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": access_token},
        headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
    )


async def user_token(request: Request) -> Response:
    """``POST /_sandbox/tokens/user``: a user access token for OUR API, good or deliberately bad."""
    entra = _entra(request)
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "body must be JSON"}, status_code=400)
    upn = str(body.get("upn", ""))
    kind = str(body.get("kind", "valid"))
    if kind not in USER_TOKEN_KINDS:
        return JSONResponse({"error": f"kind must be one of {', '.join(USER_TOKEN_KINDS)}"}, status_code=400)
    try:
        access_token, claims = entra.issue_user_token(upn, kind, str(body.get("scp", "user_impersonation")))
    except KeyError:
        return JSONResponse({"error": f"no such user: {upn}"}, status_code=404)
    return JSONResponse(
        {
            "access_token": access_token,
            "token_type": "Bearer",
            "kind": kind,
            "expires_in": claims["exp"] - claims["iat"],
            "claims": claims,
        }
    )


routes = [
    Route("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
    Route("/{tenant}/discovery/v2.0/keys", jwks, methods=["GET"]),
    Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
]
