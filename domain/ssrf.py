"""Which addresses the platform may send an agent's traffic to (the SSRF rules).

Pure: the caller resolves the host and asks about each address. A URL an agent registers is checked
when it registers and again, after DNS resolution, on every dispatch, so a name that re-resolves
to the metadata service later is still refused.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_net = ipaddress.ip_network

# Refused whatever the environment.
ALWAYS_BLOCKED: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (_net("169.254.0.0/16"), "link-local / cloud metadata"),
    (_net("fe80::/10"), "IPv6 link-local"),
    (_net("0.0.0.0/8"), "unspecified network"),
    (_net("::/128"), "unspecified address"),
    (_net("192.0.2.0/24"), "TEST-NET-1"),
    (_net("198.51.100.0/24"), "TEST-NET-2"),
    (_net("203.0.113.0/24"), "TEST-NET-3"),
    (_net("2001:db8::/32"), "IPv6 documentation range"),
    (_net("100.64.0.0/10"), "carrier-grade NAT"),
    (_net("224.0.0.0/4"), "multicast"),
    (_net("ff00::/8"), "IPv6 multicast"),
    (_net("240.0.0.0/4"), "reserved"),
)
LOOPBACK = (_net("127.0.0.0/8"), _net("::1/128"))
# fc00::/7 is unique-local; its fd00::/8 half (locally assigned) is allowed in development.
UNIQUE_LOCAL = _net("fc00::/7")
UNIQUE_LOCAL_ASSIGNED = _net("fd00::/8")
PRIVATE = (_net("10.0.0.0/8"), _net("172.16.0.0/12"), _net("192.168.0.0/16"))


@dataclass(frozen=True)
class Policy:
    development: bool = False
    allow_private: bool = False  # the operator allows RFC 1918 networks outside development
    # Loopback outside development: only for agents the platform itself runs on this machine (the
    # process backend), never for a URL an external or remote agent hands it.
    allow_loopback: bool = False


_NAT64 = (_net("64:ff9b::/96"), _net("64:ff9b:1::/48"))
_V4_COMPATIBLE = _net("::/96")


def _embedded_v4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries to the network: mapped (::ffff:a.b.c.d), 6to4
    (2002::/16), NAT64 (64:ff9b::/96, 64:ff9b:1::/48) or the old IPv4-compatible form (::a.b.c.d)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if any(address in network for network in _NAT64):
        return low32
    if address in _V4_COMPATIBLE and int(address) > 1:  # not :: or ::1
        return low32
    return None


def blocked_reason(address: IPAddress, policy: Policy) -> str | None:
    """Why traffic to `address` is refused, or None when it may go there."""
    inner = _embedded_v4(address)
    if inner is not None:
        return blocked_reason(inner, policy)
    for network, reason in ALWAYS_BLOCKED:
        if address in network:
            return reason
    if any(address in network for network in LOOPBACK):
        if policy.development or policy.allow_loopback:
            return None
        return "loopback (allowed only with MOLECULE_ENV=development)"
    if address in UNIQUE_LOCAL:
        if policy.development and address in UNIQUE_LOCAL_ASSIGNED:
            return None
        return "IPv6 unique-local"
    if any(address in network for network in PRIVATE):
        if policy.development or policy.allow_private:
            return None
        return "private network (allowed with MOLECULE_ENV=development or A2A_ALLOW_PRIVATE_NETWORKS=true)"
    return None


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int


class UnsafeUrl(ValueError):
    """The URL may not be used for agent traffic; the message says why (never the resolved list)."""


def parse_target(url: str) -> Target:
    """The scheme, host and port of an agent URL, or UnsafeUrl for one that is not http(s)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"malformed URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeUrl(f"URL scheme must be http or https, got {scheme or 'none'!r}")
    if not parts.hostname:
        raise UnsafeUrl("URL has no host")
    if parts.username or parts.password:
        raise UnsafeUrl("URL must not carry credentials")
    return Target(scheme, parts.hostname, port or (443 if scheme == "https" else 80))


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_addresses(host: str, addresses: list[IPAddress], policy: Policy) -> None:
    """UnsafeUrl unless every address `host` resolved to is allowed (a name with one bad answer is
    refused: the resolver may hand out either)."""
    if not addresses:
        raise UnsafeUrl(f"host {host!r} does not resolve")
    for address in addresses:
        reason = blocked_reason(address, policy)
        if reason is not None:
            raise UnsafeUrl(f"host {host!r} resolves to a blocked address ({reason})")


def runs_beside_platform(backend: str | None, docker_network: str) -> bool:
    """Agents the platform launches on its own machine listen on loopback, where the platform put
    them: a local process, or a container on its own Docker daemon with host networking (a container
    on a bridge network has a loopback of its own, and 127.0.0.1 from it means the platform's)."""
    return backend == "process" or (backend == "docker" and docker_network == "host")
