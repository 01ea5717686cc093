"""The guarded HTTP client that POSTs to flows' callback URLs, and what one POST gave.

Callback URLs come from flow makers, so every POST is guarded against server-side request forgery. The
URL was validated at registration (``shared.adapters.callback_urls``); here, at every POST, the host is
checked against the allowlist again, redirects are never followed (a 3xx is final), no proxy from the
environment is used, cookies are never kept between flows, and every connection's resolved address is
checked *when connecting* (``_GuardedBackend``), so a host that later resolves to a private or metadata
address (DNS rebinding) is refused.

``post`` never raises for what the callback did: it returns an ``Attempt`` whose ``outcome`` says what
the delivery worker should do (``delivered``, ``retry``, ``gone``, ``deadLetter``). Error texts are
scrubbed of the callback URL and of its query string's values (the signature), in every form a callback's
error body may quote them (as they are, percent-encoded, as JSON strings), before they leave this module: what
the dead letters and the log lines get is already clean.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

from shared.adapters.callback_urls import (
    LOOPBACK_HOSTS,
    CallbackPolicy,
    check_addresses,
    host_on_allowlist,
    resolve_host,
)
from shared.adapters.lazy_imports import lazy
from shared.adapters.logs import RedactingFilter, redact, redact_url
from shared.adapters.per_loop import PerLoop
from shared.adapters.settings import get_settings

if TYPE_CHECKING:
    import httpcore
    import httpx
else:
    # Imported by the first delivery (or the warm-up, shared.adapters.lazy_imports), not with the app.
    httpcore = lazy("httpcore")
    httpx = lazy("httpx")

# httpx logs every request's full URL at INFO ("HTTP Request: POST https://…?sig=…"). configure_logging
# raises its level, but a callback's signature must not depend on who configured logging: scrub at the source.
for _name in ("httpx", "httpcore.connection", "httpcore.http11"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, RedactingFilter) for f in _logger.filters):
        _logger.addFilter(RedactingFilter())

REQUEST_TIMEOUT = (10.0, 30.0, 30.0, 30.0)  # httpx's (connect, read, write, pool) seconds
RESPONSE_EXCERPT_BYTES = 300  # of a failed answer's body, for the dead letter (redacted)
# Read this much more than the excerpt, so that a secret beginning inside the excerpt is redacted whole before the
# excerpt is cut (a cut first would leave its first characters).
RESPONSE_READ_BYTES = RESPONSE_EXCERPT_BYTES + 4096
# Query parameters of a callback URL that are secrets whatever their length, and the length from which any other
# parameter's value is treated as one (Power Automate's: api-version, sp, sv are not; sig is 43 characters).
SECRET_PARAMETERS = frozenset({"sig", "code", "sv-sig", "signature"})
MIN_SECRET_CHARS = 16
USER_AGENT = "bookings-triggers-delivery/1"
RETRYABLE_STATUSES = frozenset({408, 429})
GONE_STATUSES = frozenset({404, 410})


class CallbackAddressRefused(Exception):
    """The callback's host is not allowed now, or resolved to an address we must not send data to."""


async def _allowed_addresses(host: str, port: int) -> list[str]:
    policy = CallbackPolicy.from_settings(get_settings())
    try:
        addresses = await resolve_host(host, port)
    except (OSError, TimeoutError) as error:
        raise httpcore.ConnectError(f"could not resolve the callback host: {type(error).__name__}") from None
    if policy.allow_loopback and host.lower() in LOOPBACK_HOSTS:
        if not all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses):
            raise CallbackAddressRefused(f"host {host!r} does not resolve to a loopback address")
        return addresses
    refused = check_addresses(host, addresses)
    if refused:
        raise CallbackAddressRefused(refused)
    return addresses


class _GuardedBackend:
    """Resolves the host itself, checks every address, and connects to a checked one (TLS still verifies
    the host name: httpcore passes the origin's host as SNI, not the address).

    httpcore's ``AsyncNetworkBackend`` interface (``connect_tcp``, ``connect_unix_socket``, ``sleep``: all its
    connection pool calls), not a subclass: subclassing would import httpcore with the app."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    # httpcore's interface names the parameter 'timeout'; it is passed on, not awaited here.
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for address in await _allowed_addresses(host, port):
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        raise failure or httpcore.ConnectError("no address to connect to")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are never used for callbacks")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _new_client() -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(retries=0, trust_env=False)
    # httpx (pinned 0.28) has no public hook for the network backend; its transport holds the httpcore pool
    # in ``_pool``. Replacing it keeps httpx's request/response mapping and adds the connect-time check.
    # tests/delivery checks the guard is in force (a loopback callback is refused when not allowed).
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(), max_connections=100, max_keepalive_connections=20,
        keepalive_expiry=5.0, network_backend=_GuardedBackend())
    return httpx.AsyncClient(
        transport=transport, timeout=REQUEST_TIMEOUT, follow_redirects=False, trust_env=False,
        # A jar that accepts no cookie: one flow's cookies must never be sent to another.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        headers={"User-Agent": USER_AGENT})


_clients: PerLoop[httpx.AsyncClient] = PerLoop(_new_client)


def get_client() -> httpx.AsyncClient:
    """The event loop's delivery client (connections are pooled per loop, as async clients require)."""
    return _clients.get()


async def close_client() -> None:
    client = _clients.pop()
    if client is not None:
        await client.aclose()


@dataclass(frozen=True)
class Attempt:
    """What one POST gave: a status (0 when there was no answer), and what to do next."""

    outcome: str  # "delivered" | "retry" | "gone" | "deadLetter"
    status: int
    error_code: str  # "" when delivered
    error_text: str
    duration_ms: int
    retry_after: float | None = None

    @property
    def status_text(self) -> str:
        """What the flow's health shows: the HTTP status, or the error word when there was no answer."""
        return str(self.status) if self.status else self.error_code


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date. None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def _callback_allowed(url: str) -> str | None:
    """Why ``url`` may no longer be called (allowlist tightened since registration), or None."""
    policy = CallbackPolicy.from_settings(get_settings())
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    if policy.allow_loopback and host in LOOPBACK_HOSTS:
        return None
    if parts.scheme.lower() != "https":
        return "the callback URL is not https"
    if not host_on_allowlist(host, policy.allowlist):
        return f"host {host!r} is not on CALLBACK_HOST_ALLOWLIST"
    return None


def _spellings(secret: str) -> set[str]:
    """The forms a secret takes when a callback quotes it back: as it is, percent-encoded (once or twice, "+"
    for spaces or not) and as a JSON string value."""
    once = quote(secret, safe="")
    return {secret, once, quote(secret), quote_plus(secret), quote(once, safe=""), json.dumps(secret)[1:-1]}


def _scrub(text: str, url: str) -> str:
    """Error text safe to log and to show administrators: no callback URL (not even host and path, which
    the dead-letter listing must not show) and no value of its query string (the signature, ``sig``) in any of
    the forms a callback's error body may quote it in (``_spellings``); anything else secret-looking redacted."""
    for spelling in sorted(_spellings(url) | {redact_url(url)}, key=len, reverse=True):
        text = re.sub(re.escape(spelling), "[callback URL]", text, flags=re.IGNORECASE)
    secrets = {value for name, value in parse_qsl(urlsplit(url).query)
               if name.lower() in SECRET_PARAMETERS or len(value) >= MIN_SECRET_CHARS}
    forms = sorted({form for secret in secrets for form in _spellings(secret) if form}, key=len, reverse=True)
    if forms:  # percent-encodings differ in case ("%2F" or "%2f"), and a signature is never case-folded alike
        text = re.sub("|".join(re.escape(form) for form in forms), "[redacted]", text, flags=re.IGNORECASE)
    return redact(text)


async def post(url: str, body: bytes, headers: dict[str, str]) -> Attempt:
    started = time.perf_counter()

    def elapsed() -> int:
        return round((time.perf_counter() - started) * 1000)

    refused = _callback_allowed(url)
    if refused:
        return Attempt("deadLetter", 0, "AddressNotAllowed", refused, 0)
    try:
        async with get_client().stream("POST", url, content=body, headers=headers) as response:
            status = response.status_code
            excerpt = b""
            if not 200 <= status < 300:
                async for chunk in response.aiter_bytes():
                    excerpt += chunk
                    if len(excerpt) >= RESPONSE_READ_BYTES:
                        break
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
    except CallbackAddressRefused as error:
        return Attempt("deadLetter", 0, "AddressNotAllowed", _scrub(str(error), url), elapsed())
    except httpx.TimeoutException as error:
        return Attempt("retry", 0, "Timeout", f"no answer in time ({type(error).__name__})", elapsed())
    except httpx.TransportError as error:
        return Attempt("retry", 0, "ConnectionFailed", _scrub(f"{type(error).__name__}: {error}", url), elapsed())
    if 200 <= status < 300:
        return Attempt("delivered", status, "", "", elapsed())
    # Scrubbed whole, then cut: a signature quoted across the excerpt's end is never left half there.
    text = f"HTTP {status}: " + _scrub(excerpt.decode("utf-8", "replace"), url)[:RESPONSE_EXCERPT_BYTES]
    if status in GONE_STATUSES:
        return Attempt("gone", status, "FlowGone", text, elapsed())
    if status in RETRYABLE_STATUSES or status >= 500:
        return Attempt("retry", status, "Throttled" if status == 429 else "ServerError", text, elapsed(), retry_after)
    if 300 <= status < 400:
        return Attempt("deadLetter", status, "Redirected", f"HTTP {status}: redirects are not followed", elapsed())
    return Attempt("deadLetter", status, "Rejected", text, elapsed())
