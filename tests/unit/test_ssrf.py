"""The SSRF rules, one row per rule, each with an address it refuses and one just outside it."""

from __future__ import annotations

import ipaddress

import pytest

from domain.ssrf import Policy, UnsafeUrl, blocked_reason, parse_target, runs_beside_platform
from relay.dispatch import UnresolvedHost, check_url, resolve

PROD = Policy()
DEV = Policy(development=True)
PRIVATE_OK = Policy(allow_private=True)

# (rule, blocked address, an address just outside the rule, policies under which it is blocked)
RULES = [
    ("metadata", "169.254.169.254", "169.255.0.1", (PROD, DEV, PRIVATE_OK)),
    ("link-local v6", "fe80::1", "fec0::1", (PROD, DEV, PRIVATE_OK)),
    ("TEST-NET-1", "192.0.2.10", "192.0.3.1", (PROD, DEV, PRIVATE_OK)),
    ("TEST-NET-2", "198.51.100.7", "198.51.101.1", (PROD, DEV, PRIVATE_OK)),
    ("TEST-NET-3", "203.0.113.200", "203.0.114.1", (PROD, DEV, PRIVATE_OK)),
    ("documentation v6", "2001:db8::5", "2001:db9::5", (PROD, DEV, PRIVATE_OK)),
    ("CGNAT", "100.64.0.1", "100.128.0.1", (PROD, DEV, PRIVATE_OK)),
    ("multicast", "224.0.0.1", "223.255.255.254", (PROD, DEV, PRIVATE_OK)),
    ("loopback v4", "127.0.0.1", "128.0.0.1", (PROD, PRIVATE_OK)),
    ("loopback v6", "::1", "2001:4860::1", (PROD, PRIVATE_OK)),
    ("unique-local fc00::/8", "fc00::1", "fe00::1", (PROD, DEV, PRIVATE_OK)),
    ("unique-local fd00::/8", "fd12::1", "fe00::1", (PROD, PRIVATE_OK)),
    ("RFC 1918 10/8", "10.1.2.3", "11.0.0.1", (PROD,)),
    ("RFC 1918 172.16/12", "172.16.5.4", "172.32.0.1", (PROD,)),
    ("RFC 1918 192.168/16", "192.168.1.1", "192.169.0.1", (PROD,)),
]
POLICIES = {"production": PROD, "development": DEV, "private allowed": PRIVATE_OK}


@pytest.mark.parametrize(("rule", "inside", "outside", "blocked_under"), RULES, ids=[r[0] for r in RULES])
def test_each_rule_blocks_inside_and_lets_outside_through(
    rule: str, inside: str, outside: str, blocked_under: tuple[Policy, ...]
) -> None:
    for name, policy in POLICIES.items():
        reason = blocked_reason(ipaddress.ip_address(inside), policy)
        assert (reason is not None) == (policy in blocked_under), (rule, name, reason)
        assert blocked_reason(ipaddress.ip_address(outside), policy) is None, (rule, name)


def test_public_addresses_pass_everywhere() -> None:
    for address in ("93.184.216.34", "2606:4700::1111", "8.8.8.8"):
        for policy in POLICIES.values():
            assert blocked_reason(ipaddress.ip_address(address), policy) is None


def test_an_ipv4_mapped_v6_address_is_judged_as_its_v4_address() -> None:
    assert blocked_reason(ipaddress.ip_address("::ffff:169.254.169.254"), DEV) is not None
    assert blocked_reason(ipaddress.ip_address("::ffff:10.0.0.1"), PROD) is not None
    assert blocked_reason(ipaddress.ip_address("::ffff:8.8.8.8"), PROD) is None


def test_loopback_is_allowed_for_agents_the_platform_runs_itself() -> None:
    assert blocked_reason(ipaddress.ip_address("127.0.0.1"), Policy(allow_loopback=True)) is None
    assert blocked_reason(ipaddress.ip_address("169.254.169.254"), Policy(allow_loopback=True)) is not None
    assert runs_beside_platform("process", "molecule") and runs_beside_platform("docker", "host")
    assert not runs_beside_platform("docker", "molecule")  # a bridge network: 127.0.0.1 is the platform's
    assert not runs_beside_platform("external", "host") and not runs_beside_platform("ec2", "host")


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:169.254.169.254",  # IPv4-mapped
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b:1::a9fe:a9fe",  # local-use NAT64
        "::169.254.169.254",  # IPv4-compatible
    ],
)
def test_ipv6_forms_that_carry_a_blocked_ipv4_address_are_blocked(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address), DEV) is not None


def test_ipv6_forms_of_a_public_ipv4_address_pass() -> None:
    for address in ("64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"):
        assert blocked_reason(ipaddress.ip_address(address), PROD) is None, address


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://a/b", "scheme"),
        ("http://", "no host"),
        ("http://u:p@a.example/", "credentials"),
        ("x", "scheme"),
    ],
)
def test_malformed_urls_are_refused(url: str, problem: str) -> None:
    with pytest.raises(UnsafeUrl, match=problem):
        parse_target(url)


async def test_names_are_checked_after_resolution() -> None:
    # localhost resolves to loopback: refused in production even though the name looks harmless.
    with pytest.raises(UnsafeUrl, match="loopback"):
        await resolve("localhost", 80, PROD)
    assert str(await resolve("localhost", 80, DEV)) in ("127.0.0.1", "::1")
    with pytest.raises(UnresolvedHost):
        await resolve("no-such-host.invalid", 80, DEV)


async def test_register_check_refuses_blocked_and_lets_unresolved_names_wait_for_dispatch() -> None:
    with pytest.raises(UnsafeUrl):
        await check_url("http://169.254.169.254/latest/meta-data", DEV)
    with pytest.raises(UnsafeUrl):
        await check_url("http://127.0.0.1:8000", PROD)
    await check_url("http://127.0.0.1:8000", PROD, local_agent=True)
    await check_url("http://not-yet-in-dns.invalid:8000", PROD)  # checked again at every dispatch
