"""Microsoft Graph as the signed-in caller: the OAuth 2.0 on-behalf-of flow (azure-identity).

Some Graph calls must be made as the user, not as the app: the stricter reading of the bookingBusiness
list page is "Application: Not supported", which is why Microsoft's own connector lists businesses as
the signed-in user. ``graph_as(caller_token)`` exchanges the caller's bearer token (audience: our API) for a
delegated Graph token and returns a ``Graph`` that uses it
(https://learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow).

The exchange is made by the API app registration (``API_CLIENT_ID``), with ``azure-identity``'s
``OnBehalfOfCredential``. On Azure it proves itself without a secret: a federated identity credential on
the registration trusts the Function App's user-assigned managed identity, whose token for
``api://AzureADTokenExchange`` is the client assertion
(https://learn.microsoft.com/entra/workload-id/workload-identity-federation-config-app-trust-managed-identity).
Locally a client secret against the sandbox's HTTPS listener (``ENTRA_AUTHORITY``, trusting
``ENTRA_CA_FILE``).

Each caller's ``Graph`` is kept while its token lives (at most ``CACHE_SECONDS``; the ``CACHE_SIZE`` most
recently used per event loop), so the credential's own token cache spares an exchange per request. Every
``Graph`` that leaves the cache (expired, evicted, or replaced) has its credential closed. The caller's token
is never logged and never stored beyond that cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import TYPE_CHECKING, Any

from cachetools import TTLCache

from shared.adapters.graph import Graph, GraphError
from shared.adapters.lazy_imports import lazy, settled
from shared.adapters.per_loop import PerLoop
from shared.adapters.settings import Settings, get_settings

if TYPE_CHECKING:
    import httpx
    import jwt
else:
    httpx = lazy("httpx")  # both imported on first use (shared.adapters.lazy_imports)
    jwt = lazy("jwt")

CACHE_SIZE = 1000
# Entra's access tokens live 60 to 90 minutes: a caller's Graph is used until its token's own expiry, which
# ``graph_as`` checks; this only bounds how long an idle one holds its credential.
CACHE_SECONDS = 90 * 60
TOKEN_EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"  # noqa: S105 - a scope: audience of client assertions


class UserTokens:
    """Delegated Graph tokens for one caller, from their bearer token (``TokenSource``'s interface)."""

    def __init__(self, settings: Settings, caller_token: str) -> None:
        settled()  # no import beside the warm-up's (shared.adapters.lazy_imports)
        from azure.identity.aio import OnBehalfOfCredential  # only when a call is made as the user

        credential: dict[str, Any]
        if settings.api_credential == "federated":
            credential = {"client_assertion_func": _managed_identity_assertion(settings.graph_client_id)}
        else:
            credential = {"client_secret": settings.api_client_secret}
        transport: dict[str, Any] = {"connection_verify": settings.entra_ca_file} if settings.entra_ca_file else {}
        self._credential = OnBehalfOfCredential(settings.tenant_id, settings.api_client_id,
                                                user_assertion=caller_token, authority=settings.entra_authority,
                                                **credential, **transport)
        self._scope = settings.graph_scope

    async def token(self) -> str:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            return (await self._credential.get_token(self._scope)).token
        except ClientAuthenticationError as error:
            # Entra's answer names the cause (AADSTS65001: no consent; 500131: wrong audience …).
            raise GraphError(401, "OnBehalfOfFailed", _first_line(error.message)) from None

    async def close(self) -> None:
        await self._credential.close()


def _first_line(text: str | None) -> str:
    return (text or "the token exchange failed").strip().splitlines()[0][:300]


def _managed_identity_assertion(client_id: str) -> Any:
    settled()  # no import beside the warm-up's (shared.adapters.lazy_imports)
    from azure.identity import ManagedIdentityCredential

    identity = ManagedIdentityCredential(client_id=client_id or None)

    def assertion() -> str:
        # azure-identity calls this synchronously; the managed identity caches its token, so this is a
        # local call at most once an hour.
        return identity.get_token(TOKEN_EXCHANGE_SCOPE).token

    return assertion


def _expiry(caller_token: str) -> float:
    try:
        return float(jwt.decode(caller_token, options={"verify_signature": False}).get("exp", 0))
    except jwt.PyJWTError:
        return 0.0


_closing: set[asyncio.Task[None]] = set()  # credentials being closed (kept referenced until done)


def _close_later(graph: Graph) -> None:
    if isinstance(graph.tokens, UserTokens):
        task = asyncio.ensure_future(graph.tokens.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)


class _CallerGraphs(TTLCache[str, tuple[Graph, float]]):
    """One loop's Graphs by caller (sha256 of the token) with the token's expiry (epoch seconds); LRU when full.

    A ``Graph`` leaves through ``expire`` (its ``CACHE_SECONDS`` are over) or ``popitem`` (evicted when
    full); both close its credential. ``graph_as`` closes the one it replaces."""

    def expire(self, time: float | None = None) -> list[tuple[str, tuple[Graph, float]]]:
        expired = list(super().expire(time))
        for _, (graph, _until) in expired:
            _close_later(graph)
        return expired

    def popitem(self) -> tuple[str, tuple[Graph, float]]:
        key, (graph, until) = super().popitem()
        _close_later(graph)
        return key, (graph, until)


_graphs: PerLoop[_CallerGraphs] = PerLoop(lambda: _CallerGraphs(CACHE_SIZE, CACHE_SECONDS))
_clients: PerLoop[httpx.AsyncClient] = PerLoop(lambda: httpx.AsyncClient(timeout=httpx.Timeout(30, connect=10)))


def graph_as(caller_token: str) -> Graph:
    """A Graph client acting as the caller of ``caller_token`` (already validated by ``shared.adapters.auth``)."""
    graphs = _graphs.get()
    key = hashlib.sha256(caller_token.encode()).hexdigest()
    found = graphs.get(key)
    if found is not None and found[1] > time.time():
        return found[0]
    settings = get_settings()
    graph = Graph(settings, http_client=_clients.get(), tokens=UserTokens(settings, caller_token))
    graphs[key] = (graph, _expiry(caller_token))
    if found is not None:  # its token expired: replaced above, so no hook of the cache saw it go
        _close_later(found[0])
    return graph
