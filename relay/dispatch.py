"""Send one A2A request to an agent: resolve its host, check every address against the SSRF rules,
connect to the checked address (no second lookup a rebinding DNS could answer differently), and
spool the answer (memory up to 1 MiB, then disk) so a 10 MiB reply costs the process no 10 MiB and
an oversized one is refused cleanly."""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from domain.a2a import LOGGED_BODY_BYTES, MAX_RESPONSE_BYTES
from domain.ssrf import IPAddress, Policy, UnsafeUrl, check_addresses, literal_address, parse_target

log = logging.getLogger("molecule.a2a")
_RESOLVE_TIMEOUT = 5.0
_SPOOL_IN_MEMORY = 1024 * 1024
_CHUNK = 64 * 1024
# The agent's own "busy" answers.
BUSY_STATUSES = frozenset({429, 503})


class UnresolvedHost(UnsafeUrl):
    """The host has no address (yet)."""


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"  # the agent answered (any status but a busy one)
    BUSY = "busy"  # timeout, reset, EOF, or the agent said it is busy
    UNREACHABLE = "unreachable"  # refused, no route, DNS failure
    BLOCKED = "blocked"  # the URL resolves to an address the SSRF rules refuse
    TOO_LARGE = "too_large"  # the answer is over the response cap


@dataclass
class Delivery:
    outcome: Outcome
    detail: str = ""  # why, for the caller and the log (never the resolved address)
    status_code: int = 0
    content_type: str = "application/json"
    size: int = 0
    body: IO[bytes] | None = field(default=None, repr=False)

    def parsed(self, limit: int | None = LOGGED_BODY_BYTES) -> Any:
        """The answer as JSON when it is at most `limit` bytes (None: whatever its size), else None."""
        if self.body is None or (limit is not None and self.size > limit):
            return None
        self.body.seek(0)
        try:
            return json.loads(self.body.read())
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            return None
        finally:
            self.body.seek(0)

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.body is None:
            return
        try:
            self.body.seek(0)
            while chunk := self.body.read(_CHUNK):
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        if self.body is not None:
            self.body.close()


async def resolve(host: str, port: int, policy: Policy) -> IPAddress:
    """The address to connect to for `host`; UnsafeUrl when it does not resolve or any of its
    addresses is blocked."""
    literal = literal_address(host)
    if literal is not None:
        check_addresses(host, [literal], policy)
        return literal
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), _RESOLVE_TIMEOUT
        )
    except UnicodeError:  # a label over 63 characters, or an empty one: not a host name at all
        raise UnsafeUrl(f"host {host!r} is not a valid host name") from None
    except (OSError, TimeoutError):
        raise UnresolvedHost(f"host {host!r} does not resolve") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = literal_address(str(info[4][0]).split("%")[0])
        if address is not None and address not in addresses:
            addresses.append(address)
    check_addresses(host, addresses, policy)
    return addresses[0]


async def check_url(url: str, policy: Policy, *, local_agent: bool = False) -> None:
    """UnsafeUrl when agent traffic may not go to `url` (the register-time check): not http(s), or a
    host that is, or resolves to, a blocked address. A name that does not resolve yet is let through:
    every dispatch resolves and checks it again before a byte is sent."""
    target = parse_target(url)
    policy = replace(policy, allow_loopback=True) if local_agent else policy
    try:
        await resolve(target.host, target.port, policy)
    except UnresolvedHost:
        log.info(
            "registered agent host %r does not resolve yet; it is checked at every dispatch", target.host
        )


@dataclass(frozen=True)
class Deadline:
    """An idle timeout that `touch()` pushes back, bounded by an absolute ceiling."""

    idle: float
    ceiling: float | None = None


class Dispatcher:
    """One connection pool per process (aiohttp: its pool hands out a connection in O(1), where
    httpx's walked every idle connection with a syscall on each request and release)."""

    def __init__(self, policy: Policy, max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.policy = policy
        self.max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop (the API builds its Platform before the loop).
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512, limit_per_host=128, use_dns_cache=False),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0),
                auto_decompress=True,
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        deadline: Deadline,
        watch: Callable[[Callable[[], None]], Callable[[], None]] | None = None,
        *,
        local_agent: bool = False,
    ) -> Delivery:
        """POST `body` to `url`. `watch(touch)` subscribes `touch` to the target's events (each one
        restarts the idle timeout) and returns the unsubscribe function. `local_agent`: the platform
        runs this agent on this machine itself (loopback is where it is)."""
        policy = replace(self.policy, allow_loopback=True) if local_agent else self.policy
        try:
            target = parse_target(url)
            address = await resolve(target.host, target.port, policy)
        except UnsafeUrl as exc:
            return Delivery(Outcome.BLOCKED, str(exc))
        loop = asyncio.get_running_loop()
        hard = loop.time() + deadline.ceiling if deadline.ceiling else None

        def due() -> float:
            at = loop.time() + deadline.idle
            return min(at, hard) if hard is not None else at

        scope = asyncio.timeout_at(due())

        def touch() -> None:
            if not scope.expired():
                scope.reschedule(due())

        unwatch = watch(touch) if watch is not None else None
        try:
            async with scope:
                return await self._post(url, address, body, headers)
        except TimeoutError:
            if hard is not None and loop.time() >= hard:
                return Delivery(Outcome.BUSY, "the call reached its ceiling")
            return Delivery(Outcome.BUSY, "no event from the workspace within the idle timeout")
        finally:
            if unwatch is not None:
                unwatch()

    async def _post(self, url: str, address: IPAddress, body: bytes, headers: dict[str, str]) -> Delivery:
        parts = urlsplit(url)
        host = f"[{address}]" if address.version == 6 else str(address)
        netloc = f"{host}:{parts.port}" if parts.port else host
        pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        request_headers = {
            **headers,
            "Host": parts.netloc.rsplit("@", 1)[-1],
            "Content-Type": "application/json",
        }
        tls_name = parts.hostname if parts.scheme == "https" else None
        try:
            async with self._client().post(
                pinned, data=body, headers=request_headers, allow_redirects=False, server_hostname=tls_name
            ) as response:
                if response.status in BUSY_STATUSES:
                    return Delivery(Outcome.BUSY, f"the agent answered HTTP {response.status} (busy)")
                return await self._spool(response)
        except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:
            return Delivery(Outcome.UNREACHABLE, f"cannot connect to the agent ({type(exc).__name__})")
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError) as exc:
            return Delivery(Outcome.BUSY, f"the agent dropped the connection ({type(exc).__name__})")
        except aiohttp.ServerTimeoutError as exc:
            return Delivery(Outcome.BUSY, f"the agent did not answer in time ({type(exc).__name__})")
        except aiohttp.ClientError as exc:
            return Delivery(Outcome.UNREACHABLE, f"cannot reach the agent ({type(exc).__name__})")

    async def _spool(self, response: aiohttp.ClientResponse) -> Delivery:
        declared = response.content_length
        if declared is not None and declared > self.max_response_bytes:
            return Delivery(Outcome.TOO_LARGE, self._too_large())
        spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
        size = 0
        try:
            async for chunk in response.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > self.max_response_bytes:
                    spool.close()
                    return Delivery(Outcome.TOO_LARGE, self._too_large())
                spool.write(chunk)
        except BaseException:
            spool.close()
            raise
        content_type = response.headers.get("content-type", "application/json")
        return Delivery(Outcome.DELIVERED, "", response.status, content_type, size, spool)

    def _too_large(self) -> str:
        return f"the agent's answer is larger than {self.max_response_bytes // (1024 * 1024)} MiB"
