"""Which notification (callback) URLs a flow may register: the guard against using us as a proxy.

When a flow is saved, Power Automate sends the URL we must POST appointments to. Anyone with a token
could send any URL instead, and we would then POST to it from inside Azure: to the instance metadata
service, to a private network, to localhost. So a callback URL must be:

- ``https`` on the default port, with no user-info (``https://a.logic.azure.com@evil.example`` is a URL
  whose host is ``evil.example``), no backslashes, no whitespace or control characters;
- on a host of ``CALLBACK_HOST_ALLOWLIST`` (``*.domain`` allows subdomains of ``domain``, not ``domain``
  itself), compared on the lower-cased ASCII host with a trailing dot removed. Non-ASCII host names are
  refused instead of being IDNA-mapped: two IDNA standards map some characters differently
  (e.g. ``。`` U+3002), and we must judge exactly the host the HTTP client will later connect to.
  IP literals never match a host name on the allowlist, whatever their spelling (decimal ``2130706433``,
  octal ``0177.0.0.1``, hex ``0x7f.1``);
- resolving only to public unicast addresses: not loopback, private, link-local (which includes the
  cloud metadata address 169.254.169.254), multicast, reserved, unspecified, shared/CGNAT 100.64.0.0/10,
  AWS's IPv6 metadata fd00:ec2::254, Azure's platform address 168.63.129.16, nor IPv4 addresses embedded
  in IPv6 (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4, Teredo) that are any of those.
  168.63.129.16 is a public address, so only naming it refuses it: "a virtual public IP address that is used
  to facilitate a communication channel to Azure platform resources" (the VM Agent's WireServer, the DNS
  virtual server, Load Balancer health probes, DHCP), "used in all regions and all national clouds"
  (Microsoft, "What is IP address 168.63.129.16?",
  https://learn.microsoft.com/azure/virtual-network/what-is-ip-address-168-63-129-16). Seen from inside
  Azure it is the host node's own service, not the internet.

``ALLOW_LOOPBACK_CALLBACKS=true`` (local demo, never on Azure) *replaces* this with: http or https to
``127.0.0.1``, ``::1`` or ``localhost`` (any port), and nothing else.

A check at registration does not stop DNS rebinding (a host that resolves differently later). The
delivery code must call ``check_addresses`` again on the addresses it connects to. Errors and logs show
the host only (``redact_url``); the query string carries the flow's signature and is a secret.

This module judges; it does not answer HTTP. A refused URL is ``CallbackUrlRefused`` (its ``reason`` in
plain words), which the registration endpoint turns into 403 ``NotificationUrlNotAllowed``; a refused
address is the reason ``check_addresses`` returns.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from shared.adapters.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_URL_LENGTH = 4096
DNS_TIMEOUT_SECONDS = 3.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # CGNAT; not "private" in Python 3.11
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
# Public by its prefix, but inside Azure the platform's own endpoint (see the module docstring).
_AZURE_PLATFORM = frozenset({ipaddress.ip_address("168.63.129.16")})


@dataclass(frozen=True)
class CallbackPolicy:
    allowlist: tuple[str, ...]
    allow_loopback: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> CallbackPolicy:
        return cls(settings.callback_host_allowlist, settings.allow_loopback_callbacks)


class CallbackUrlRefused(ValueError):
    """A flow may not register this notification URL; ``reason`` says why (never the URL's query string)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (async getaddrinfo, bounded in time)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(DNS_TIMEOUT_SECONDS):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def host_on_allowlist(host: str, allowlist: Iterable[str]) -> bool:
    """``host`` (lower-case ASCII, no trailing dot) matches an entry: exactly, or ``*.domain`` as a subdomain."""
    for entry in allowlist:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # (server, client): the client address is the one traffic reaches
    return None


def forbidden_reason(address: IPAddress) -> str | None:
    """Why we must not send a flow's data to ``address``, or None when it is public unicast."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = forbidden_reason(embedded)
            return f"{reason} (embedded in an IPv6 address)" if reason else None
    if address in _METADATA:
        return "a cloud metadata address"
    if address in _AZURE_PLATFORM:
        return "Azure's platform address (WireServer, DNS, health probes)"
    checks = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (isinstance(address, ipaddress.IPv4Address) and address in _SHARED_ADDRESS_SPACE,
         "a shared (carrier-grade NAT) address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public address"),
    )
    for failed, reason in checks:
        if failed:
            return reason
    return None


def check_addresses(host: str, addresses: Iterable[str]) -> str | None:
    """Why ``host`` may not be called at these addresses, or None when every one is public unicast.
    Delivery calls this again at connect time."""
    seen = False
    for raw in addresses:
        seen = True
        try:
            address = ipaddress.ip_address(raw.split("%", 1)[0])  # drop an IPv6 zone id
        except ValueError:
            return f"host {host!r} resolved to something that is not an IP address"
        reason = forbidden_reason(address)
        if reason:
            return f"host {host!r} resolves to {reason}"
    if not seen:
        return f"host {host!r} does not resolve"
    return None


def _parse(url: object) -> tuple[SplitResult, str]:
    """The split URL and its normalised host; refuses what cannot be judged unambiguously."""
    if not isinstance(url, str) or not url:
        raise CallbackUrlRefused("the notification URL is missing")
    if len(url) > MAX_URL_LENGTH:
        raise CallbackUrlRefused(f"the notification URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url) or "\\" in url:
        raise CallbackUrlRefused("the notification URL contains spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise CallbackUrlRefused("the notification URL cannot be parsed") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise CallbackUrlRefused("the notification URL is not an absolute https URL")
    if "@" in parts.netloc:
        raise CallbackUrlRefused("the notification URL contains user information ('@' before the host)")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise CallbackUrlRefused("the notification URL has no host")
    if not host.isascii():
        raise CallbackUrlRefused("the notification URL's host is not plain ASCII (use its xn-- form)")
    del port  # validated above (a bad port raises); the caller re-reads it
    return parts, host


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def check_notification_url(url: object, policy: CallbackPolicy,
                                 resolver: Resolver | None = None) -> str:
    """Return ``url`` unchanged if a flow may register it; ``CallbackUrlRefused`` if not.

    The URL is stored as given (its signature covers its exact spelling). ``resolver`` is for tests;
    by default the host is resolved with the system resolver.
    """
    parts, host = _parse(url)
    scheme = parts.scheme.lower()
    if policy.allow_loopback and host in LOOPBACK_HOSTS:
        if host == "localhost":
            # Must really be this machine: a hosts-file entry could point "localhost" elsewhere.
            addresses = await (resolver or resolve_host)(host, parts.port or 80)
            if not addresses or not all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses):
                raise CallbackUrlRefused("'localhost' does not resolve to a loopback address")
        return str(url)
    if scheme != "https":
        raise CallbackUrlRefused("the notification URL must use https")
    if parts.port not in (None, 443):
        raise CallbackUrlRefused("the notification URL must use the default https port")
    if _is_ip_literal(host) or not all(_LABEL.match(label) for label in host.split(".")):
        raise CallbackUrlRefused(f"host {host!r} is not a host name on the allowlist")
    if not host_on_allowlist(host, policy.allowlist):
        raise CallbackUrlRefused(f"host {host!r} is not on the allowlist")
    try:
        addresses = await (resolver or resolve_host)(host, 443)
    except (OSError, TimeoutError):
        raise CallbackUrlRefused(f"host {host!r} does not resolve") from None
    refused = check_addresses(host, addresses)
    if refused:
        raise CallbackUrlRefused(refused)
    return str(url)
