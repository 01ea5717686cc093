"""The notification-URL policy: allowlist, https, and no private/loopback/metadata destinations."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.adapters.callback_urls import (
    CallbackPolicy,
    CallbackUrlRefused,
    check_addresses,
    check_notification_url,
    forbidden_reason,
)
from shared.endpoints.flow_webhooks import answer_for

ALLOW = ("*.logic.azure.com", "*.flow.microsoft.com", "prod.example.net")
PROD = CallbackPolicy(ALLOW, allow_loopback=False)
LOCAL = CallbackPolicy(ALLOW, allow_loopback=True)
SECRET = "sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=TOP-SECRET-SIGNATURE"
PUBLIC_IP = "20.190.128.10"  # an address in a public Microsoft range


def resolver(mapping: dict[str, list[str]] | None = None, default: list[str] | None = None):
    """A stand-in for DNS: what each host resolves to (the real resolver has no internet here)."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        if mapping and host in mapping:
            return mapping[host]
        if default is None:
            raise OSError(f"cannot resolve {host}")
        return default

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


async def refused(url: object, policy: CallbackPolicy = PROD, resolve=None) -> str:
    with pytest.raises(CallbackUrlRefused) as info:
        await check_notification_url(url, policy, resolve or resolver(default=[PUBLIC_IP]))
    answer = answer_for(info.value)  # what the registration endpoint answers
    assert answer.code == "NotificationUrlNotAllowed" and answer.status == 403
    reason = info.value.reason
    assert answer.details["reason"] == reason
    assert "SECRET" not in reason and "sig=" not in reason  # the query string is never echoed
    return reason


@pytest.mark.parametrize(
    "url",
    [
        f"https://prod-12.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?{SECRET}",
        f"https://prod-12.westeurope.logic.azure.com:443/workflows/abc?{SECRET}",
        f"HTTPS://PROD-12.WESTEUROPE.LOGIC.AZURE.COM/workflows/abc?{SECRET}",
        f"https://prod-12.westeurope.logic.azure.com./workflows/abc?{SECRET}",  # trailing dot, same host
        "https://a.b.c.flow.microsoft.com/x",
        "https://prod.example.net/hook",
        "https://xn--bcher-kva.logic.azure.com/hook",  # an IDNA name in its ASCII form is judged like any other
    ],
)
async def test_allowed_urls_are_returned_unchanged(url: str) -> None:
    assert await check_notification_url(url, PROD, resolver(default=[PUBLIC_IP])) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"http://prod-12.westeurope.logic.azure.com/workflows/abc?{SECRET}", "https"),
        ("https://logic.azure.com/x", "allowlist"),  # '*.domain' is subdomains only
        ("https://evillogic.azure.com/x", "allowlist"),
        ("https://logic.azure.com.evil.example/x", "allowlist"),
        ("https://example.net/x", "allowlist"),  # exact entry does not allow its parent
        ("https://sub.prod.example.net/x", "allowlist"),  # ...nor its subdomains
        (f"https://a.logic.azure.com@evil.example/x?{SECRET}", "user information"),
        ("https://a.logic.azure.com:443@evil.example/x", "user information"),
        ("https://user:pw@a.logic.azure.com/x", "user information"),
        ("https://evil.example#@a.logic.azure.com/x", "allowlist"),
        ("https://evil.example?@a.logic.azure.com/x", "allowlist"),
        ("https://evil.example\\@a.logic.azure.com/x", "backslash"),
        ("https://a.logic.azure.com:8443/x", "default https port"),
        ("https://a.logic.azure.com:99999/x", "cannot be parsed"),
        ("https://a.logic.azure.com:abc/x", "cannot be parsed"),
        ("https://ａ.logic.azure.com/x", "ASCII"),  # full-width letter
        ("https://a。logic.azure.com/x", "ASCII"),  # ideographic full stop, mapped to '.' by IDNA 2003 only
        ("https://bücher.logic.azure.com/x", "ASCII"),
        ("https://a..logic.azure.com/x", "not a host name"),
        ("https://a_b.logic.azure.com/x", "not a host name"),
        ("https://-a.logic.azure.com/x", "not a host name"),
        ("https://2130706433/x", "allowlist"),  # 127.0.0.1 in decimal
        ("https://0177.0.0.1/x", "allowlist"),  # octal
        ("https://0x7f.0.0.1/x", "allowlist"),  # hex
        ("https://127.0.0.1/x", "not a host name"),
        ("https://[::1]/x", "not a host name"),
        ("https://169.254.169.254/latest/meta-data", "not a host name"),
        ("https://168.63.129.16/machine?comp=goalstate", "not a host name"),
        ("ftp://a.logic.azure.com/x", "absolute https"),
        ("//a.logic.azure.com/x", "absolute https"),
        ("a.logic.azure.com/x", "absolute https"),
        ("https:///x", "absolute https"),
        ("https://a.logic.azure.com/x y", "spaces"),
        ("https://a.logic.azure.com/x\r\nHost: evil", "control"),
        ("", "missing"),
        (None, "missing"),
        (42, "missing"),
        ("https://a.logic.azure.com/" + "x" * 5000, "longer"),
    ],
)
async def test_refused_urls(url: object, reason: str) -> None:
    assert reason in await refused(url)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"), ("169.254.1.1", "link-local"), ("100.64.0.1", "carrier-grade"),
        ("100.127.255.254", "carrier-grade"), ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"),
        ("::1", "loopback"), ("::", "unspecified"), ("fe80::1", "link-local"), ("fc00::1", "private"),
        ("fd00:ec2::254", "metadata"), ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "metadata"), ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a9fe:a9fe", "metadata"), ("64:ff9b::7f00:1", "loopback"),  # NAT64
        ("2002:a9fe:a9fe::1", "metadata"), ("2002:c0a8:0101::1", "private"),  # 6to4
        ("fe80::1%eth0", "link-local"),
        # Azure's platform address: public by its prefix, the WireServer / DNS / health-probe endpoint in Azure.
        ("168.63.129.16", "Azure's platform address"), ("::ffff:168.63.129.16", "Azure's platform address"),
        ("64:ff9b::a83f:8110", "Azure's platform address"), ("2002:a83f:8110::1", "Azure's platform address"),
    ],
)
async def test_allowlisted_host_resolving_to_a_forbidden_address(address: str, reason: str) -> None:
    resolve = resolver({"a.logic.azure.com": [PUBLIC_IP, address]})
    got = await refused(f"https://a.logic.azure.com/x?{SECRET}", resolve=resolve)
    assert reason in got and "a.logic.azure.com" in got


async def test_host_that_does_not_resolve() -> None:
    assert "does not resolve" in await refused("https://a.logic.azure.com/x", resolve=resolver())
    assert "does not resolve" in await refused("https://a.logic.azure.com/x", resolve=resolver(default=[]))


async def test_hostname_resolution_uses_the_normalised_host() -> None:
    resolve = resolver(default=[PUBLIC_IP])
    await check_notification_url("https://A.Logic.Azure.COM./x", PROD, resolve)
    assert resolve.calls == ["a.logic.azure.com"]


@pytest.mark.parametrize("address", ["20.190.128.10", "2603:1030::1", "::ffff:20.190.128.10", "2002:1414:1414::1",
                                     "168.63.129.15", "168.63.129.17"])  # the platform address only, not its range
def test_public_addresses_pass(address: str) -> None:
    assert check_addresses("h", [address]) is None


@pytest.mark.parametrize(("addresses", "reason"), [
    ([PUBLIC_IP, "10.0.0.1"], "host 'h' resolves to a private address"),  # one bad address is enough
    (["fe80::1%eth0"], "host 'h' resolves to a link-local address"),
    (["not-an-address"], "host 'h' resolved to something that is not an IP address"),
    ([], "host 'h' does not resolve"),
])
def test_forbidden_addresses_give_the_reason(addresses: list[str], reason: str) -> None:
    assert check_addresses("h", addresses) == reason


@given(st.ip_addresses())
@settings(max_examples=500)
def test_every_non_global_address_is_forbidden(address) -> None:
    # Whatever Python deems non-global (besides embedded-IPv4 forms, judged by their IPv4) is refused.
    embedded = isinstance(address, ipaddress.IPv6Address) and (
        address.ipv4_mapped or address.sixtofour or address.teredo or address in ipaddress.ip_network("64:ff9b::/96"))
    if not address.is_global and not embedded:
        assert forbidden_reason(address) is not None
    if address.is_loopback or address.is_private or address.is_link_local or address.is_multicast:
        assert forbidden_reason(address) is not None


@given(st.ip_addresses(v=4).filter(lambda a: not a.is_global))
def test_non_global_ipv4_is_forbidden_in_every_ipv6_disguise(address: ipaddress.IPv4Address) -> None:
    for disguise in (f"::ffff:{address}", f"64:ff9b::{address}"):
        assert forbidden_reason(ipaddress.ip_address(disguise)) is not None, disguise


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@given(st.lists(_label, min_size=1, max_size=4), st.sampled_from(["evil.example", "logic.azure.com.evil.example",
                                                                  "xlogic.azure.com", "azure.com"]))
async def test_hosts_outside_the_allowlist_never_pass(labels: list[str], suffix: str) -> None:
    host = ".".join([*labels, suffix])
    assert "allowlist" in await refused(f"https://{host}/x?{SECRET}")


@given(st.lists(_label, min_size=1, max_size=4))
async def test_any_subdomain_of_an_allowed_wildcard_passes(labels: list[str]) -> None:
    url = f"https://{'.'.join(labels)}.logic.azure.com/path?{SECRET}"
    assert await check_notification_url(url, PROD, resolver(default=[PUBLIC_IP])) == url


# --- local demo mode ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8123/cb?sig=x", "https://127.0.0.1/cb", "http://localhost:9000/cb", "http://[::1]:8000/cb",
     "http://LOCALHOST.:9000/cb"],
)
async def test_loopback_mode_allows_local_receivers(url: str) -> None:
    assert await check_notification_url(url, LOCAL, resolver({"localhost": ["127.0.0.1", "::1"]})) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8123/cb", "https"),  # not in production
        ("http://localhost:9000/cb", "https"),
        ("https://127.0.0.1/cb", "not a host name"),
    ],
)
async def test_production_refuses_loopback(url: str, reason: str) -> None:
    assert reason in await refused(url, PROD)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.2/cb", "http://2130706433/cb", "http://0177.0.0.1/cb", "http://10.0.0.1/cb",
     "http://169.254.169.254/cb", "http://[::ffff:127.0.0.1]/cb", "http://a.logic.azure.com/cb",
     "http://user@127.0.0.1/cb"],
)
async def test_loopback_mode_allows_nothing_else(url: str) -> None:
    await refused(url, LOCAL)


async def test_loopback_mode_checks_what_localhost_resolves_to() -> None:
    reason = await refused("http://localhost:9000/cb", LOCAL, resolver({"localhost": ["10.0.0.5"]}))
    assert "loopback" in reason


async def test_loopback_mode_still_allows_the_allowlist() -> None:
    url = f"https://a.logic.azure.com/x?{SECRET}"
    assert await check_notification_url(url, LOCAL, resolver(default=[PUBLIC_IP])) == url


async def test_real_resolver_on_localhost() -> None:
    # The default resolver (real getaddrinfo): 'localhost' resolves locally without a network.
    assert await check_notification_url("http://localhost:1/cb", LOCAL) == "http://localhost:1/cb"
