"""The HTTP server the API runs under: uvicorn with httptools, plus the limits uvicorn does not set.

uvicorn bounds neither the size nor the number of request headers under httptools, and never times
out a client that sends part of a request and stalls (its keep-alive timer runs only between
requests, and any byte cancels it). `GuardedHttpToolsProtocol` adds:

- a request head (request line + headers) over `max_header_bytes` -> 431, then close;
- more than `max_headers` header fields -> 431, then close;
- a head not complete `header_timeout` seconds after its first byte (or after the connection opened)
  -> 408, then close;
- a body not complete `body_timeout` seconds after its head -> 408 (or, if the reply has started,
  just close).

Every refusal is sent before the socket closes, with `Connection: close`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from config.settings import Settings


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 30.0
    body_timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            header_timeout=settings.http_header_timeout_seconds,
            body_timeout=settings.http_body_timeout_seconds,
        )


# How long a refused client gets to finish sending (and read the refusal) before a hard close.
LINGER_SECONDS = 5.0


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that is over a limit."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # reading a request's head (or waiting for the first request)
        self._head_bytes = 0
        self._header_count = 0
        self._read_timer: asyncio.TimerHandle | None = None
        self._discarding = False  # a refusal was sent: what the client still sends is dropped

    @classmethod
    def with_limits(cls, limits: HttpLimits) -> type[GuardedHttpToolsProtocol]:
        configured: type[GuardedHttpToolsProtocol] = type(cls.__name__, (cls,), {"limits": limits})
        return configured

    # --- timers -------------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(seconds, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_complete and not self._in_head:
            self.transport.close()  # replied before the body came: nothing to refuse any more
            return
        self._refuse(408, "the request was not received in time", "request_timeout")

    # --- refusals -----------------------------------------------------------------------------

    def _refuse(self, status: int, error: str, code: str) -> None:
        self._disarm()
        if self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete:
            self.transport.close()  # a reply is under way: a refusal cannot take its place
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            self.cycle.disconnected = True  # the app's reply, if any comes, is dropped
            self.cycle.message_event.set()
        body = json.dumps({"error": error, "code": code}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self._close_after_reply()

    def _close_after_reply(self) -> None:
        """Half-close and drain what the client still sends, then close. Closing at once with its
        request unread makes the kernel send a reset, which can destroy the reply before the client
        reads it."""
        self._discarding = True
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._read_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    # --- protocol and parser callbacks --------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        # The head is measured as it arrives: httptools would buffer a header of any size before
        # handing it over.
        if self._in_head:
            self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Refused):
                self._refuse(431, str(exc.__context__), "request_header_fields_too_large")
            else:
                self.logger.warning("Invalid HTTP request received.")
                self._refuse(400, "invalid HTTP request", "bad_request")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(
                431,
                f"request headers exceed {self.limits.max_header_bytes} bytes",
                "request_header_fields_too_large",
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        if self._read_timer is None:
            self._arm(self.limits.header_timeout)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            raise _Refused(f"more than {self.limits.max_headers} request headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(self.limits.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        # Bytes of a pipelined next request in this same chunk go uncounted: at most one read.
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()


def server_config(app: Any, host: str, port: int, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """How the API is served (by `molecule api`, which `molecule up` runs, and by the tests)."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": GuardedHttpToolsProtocol.with_limits(HttpLimits.from_settings(settings)),
        "log_level": "warning",
        "access_log": False,
    }
    return uvicorn.Config(app, **(options | overrides))
