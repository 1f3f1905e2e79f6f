"""The agent's A2A surface: agent card, health probe and a JSON-RPC 2.0 ``message/send`` echo.

``message/send`` can be told to misbehave at run time (see :class:`A2AFault`); the overrides come from
the ``faults`` callable given to :func:`create_app`, which is called on every request, so a test can
switch modes while the agent runs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

try:
    AGENT_VERSION = version("molecule")
except PackageNotFoundError:  # running from a source tree without an install
    AGENT_VERSION = "0.0.0"

log = logging.getLogger("molecule.agent")

AGENT_NAME = "molecule-reference-agent"
AGENT_DESCRIPTION = "Molecule reference agent: echoes A2A messages back (stands in for a real runtime)."
CAPABILITIES: dict[str, Any] = {
    "streaming": False,
    "pushNotifications": False,
    "stateTransitionHistory": False,
}

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602

RECEIVED_KEPT = 100  # message ids remembered for GET /debug/received
BUSY_RETRY_AFTER_SECONDS = 5
HOLD_POLL_SECONDS = 0.05
MAX_WAIT_SECONDS = 600.0  # bound on "slow" delays and "hold" waits
LARGE_CHUNK_BYTES = 64 * 1024
_FILL_CHUNK = b"x" * LARGE_CHUNK_BYTES
DISCONNECT_WAIT_SECONDS = 5.0

A2A_MODES = frozenset({"reset", "busy", "slow", "hold", "large"})

Faults = Callable[[], Mapping[str, Any]]


def agent_card(url: str) -> dict[str, Any]:
    return {
        "name": AGENT_NAME,
        "description": AGENT_DESCRIPTION,
        "version": AGENT_VERSION,
        "url": url,
        "protocolVersion": "0.3.0",
        "preferredTransport": "JSONRPC",
        "capabilities": dict(CAPABILITIES),
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [
            {
                "id": "echo",
                "name": "Echo",
                "description": "Replies with the text parts of the message, prefixed with 'echo: '.",
                "tags": ["echo", "test"],
                "examples": ["hello"],
            }
        ],
    }


class AgentState:
    """What the heartbeat reports about the agent's work; shared by the A2A app and the heartbeat loop."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._ids = itertools.count()
        self._tasks: dict[int, str] = {}
        self.platform_inbound_secret: str | None = None  # from the platform's replies; never logged
        self.a2a_requests = 0  # message/send requests received (answered or not)
        self.received_message_ids: deque[str | None] = deque(maxlen=RECEIVED_KEPT)

    @contextmanager
    def task(self, description: str) -> Iterator[None]:
        key = next(self._ids)
        self._tasks[key] = description
        try:
            yield
        finally:
            del self._tasks[key]

    def note_received(self, message_id: str | None) -> None:
        self.a2a_requests += 1
        self.received_message_ids.append(message_id)

    @property
    def active_tasks(self) -> int:
        return len(self._tasks)

    @property
    def current_task(self) -> str | None:
        """The most recently started task still in flight."""
        return next(reversed(self._tasks.values()), None)

    def uptime_seconds(self) -> int:
        return int(time.monotonic() - self._started)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < float("inf"):
        return float(value)
    return None


@dataclass(frozen=True, slots=True)
class A2AFault:
    """How ``message/send`` misbehaves, from the run-time overrides (``faults.json``):

    - ``"a2a": "reset"``: drop the connection without any HTTP response;
    - ``"a2a": "busy"``: HTTP 503 ``{"error": "busy", "busy": true}`` with ``Retry-After: 5``;
    - ``"a2a": "slow"`` + ``"a2a_delay_seconds"``: answer after that delay (an active task meanwhile);
    - ``"a2a": "hold"`` + ``"a2a_hold_file"``: answer once that file is gone (an active task meanwhile);
    - ``"a2a": "large"`` + ``"a2a_response_bytes"``: a streamed answer of about that many bytes
      (chunked; ``"a2a_content_length": true`` also sends an exact Content-Length).

    Delays and holds are bounded by :data:`MAX_WAIT_SECONDS`. Anything absent or malformed means normal.
    """

    mode: str | None = None
    delay_seconds: float = 0.0
    hold_file: Path | None = None
    response_bytes: int = 0
    content_length: bool = False

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any]) -> A2AFault:
        mode = overrides.get("a2a")
        if mode is None:
            return cls()
        if mode not in A2A_MODES:
            log.warning("faults: ignoring unknown a2a mode %r (expected one of %s)", mode, sorted(A2A_MODES))
            return cls()
        if mode == "slow":
            delay = _number(overrides.get("a2a_delay_seconds"))
            if delay is None:
                log.warning("faults: a2a=slow needs a2a_delay_seconds >= 0; answering at once")
                return cls()
            return cls(mode, delay_seconds=min(delay, MAX_WAIT_SECONDS))
        if mode == "hold":
            hold_file = overrides.get("a2a_hold_file")
            if not isinstance(hold_file, str) or not hold_file:
                log.warning("faults: a2a=hold needs a2a_hold_file (a path); answering at once")
                return cls()
            return cls(mode, hold_file=Path(hold_file))
        if mode == "large":
            size = overrides.get("a2a_response_bytes")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                log.warning(
                    "faults: a2a=large needs a2a_response_bytes (an integer >= 0); answering normally"
                )
                return cls()
            return cls(mode, response_bytes=size, content_length=overrides.get("a2a_content_length") is True)
        return cls(mode)


class _ConnectionDrop(Response):
    """Not a response: abort the TCP connection so the client sees a reset, never an HTTP status."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # uvicorn's h11 and httptools request cycles hand the app bound methods of an object that
        # holds the connection's transport; ASGI itself has no "reset the connection" message.
        transport = None
        for channel in (receive, send):
            candidate = getattr(getattr(channel, "__self__", None), "transport", None)
            if callable(getattr(candidate, "abort", None)):
                transport = candidate
                break
        if transport is None:
            log.error("faults: a2a=reset, but the server's transport is out of reach; sending nothing")
            return
        transport.abort()
        # Wait for the server to notice the connection is gone; returning earlier would make uvicorn
        # log "returned without starting response" and try to write a 500 to the dead transport.
        try:
            async with asyncio.timeout(DISCONNECT_WAIT_SECONDS):
                while (await receive())["type"] != "http.disconnect":
                    pass
        except TimeoutError:
            log.warning("faults: a2a=reset: no disconnect seen %gs after the abort", DISCONNECT_WAIT_SECONDS)


def _rpc_error(request_id: Any, code: int, message: str) -> JSONResponse:
    return JSONResponse({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}})


def _message_texts(params: Any) -> tuple[dict[str, Any], list[str]] | None:
    message = params.get("message") if isinstance(params, dict) else None
    parts = message.get("parts") if isinstance(message, dict) else None
    if not isinstance(message, dict) or not isinstance(parts, list):
        return None
    texts = [
        part["text"]
        for part in parts
        if isinstance(part, dict)
        and isinstance(part.get("text"), str)
        and part.get("kind", part.get("type", "text")) == "text"
    ]
    return message, texts


def _encode(content: Any) -> bytes:
    """The bytes :class:`JSONResponse` would send for ``content``."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode()


def _large_response(
    envelope: dict[str, Any], text: str, size: int, content_length: bool, state: AgentState
) -> StreamingResponse:
    """``envelope`` with a text part padded so the body is ``size`` bytes (or its minimum), streamed
    in :data:`LARGE_CHUNK_BYTES` chunks; the padding is never held in memory as a whole."""
    sentinel = f"<fill-{uuid.uuid4().hex}>"
    envelope["result"]["parts"] = [{"kind": "text", "text": f"echo: {text}\n{sentinel}"}]
    head, tail = _encode(envelope).split(sentinel.encode(), 1)
    fill = max(0, size - len(head) - len(tail))

    async def body() -> AsyncIterator[bytes]:
        with state.task(f"message/send (large, {size} bytes): {text[:80]}"):
            yield head
            remaining = fill
            while remaining > 0:
                chunk = min(remaining, LARGE_CHUNK_BYTES)
                yield _FILL_CHUNK if chunk == LARGE_CHUNK_BYTES else _FILL_CHUNK[:chunk]
                remaining -= chunk
            yield tail

    headers = {"Content-Length": str(len(head) + fill + len(tail))} if content_length else None
    return StreamingResponse(body(), media_type="application/json", headers=headers)


async def _hold(hold_file: Path) -> None:
    """Wait until ``hold_file`` no longer exists (at most :data:`MAX_WAIT_SECONDS`)."""
    deadline = asyncio.get_running_loop().time() + MAX_WAIT_SECONDS
    while await asyncio.to_thread(hold_file.exists):  # a stat may block on a slow file system
        if asyncio.get_running_loop().time() >= deadline:
            log.warning("faults: a2a=hold: %s still exists after %gs; answering", hold_file, MAX_WAIT_SECONDS)
            return
        await asyncio.sleep(HOLD_POLL_SECONDS)


def _no_faults() -> Mapping[str, Any]:
    return {}


def create_app(card: dict[str, Any], state: AgentState, faults: Faults = _no_faults) -> FastAPI:
    """The agent's ASGI app. ``faults()`` gives the run-time overrides; it is called per request."""
    app = FastAPI(title=AGENT_NAME, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/.well-known/agent.json")
    @app.get("/.well-known/agent-card.json")
    async def get_card() -> dict[str, Any]:
        return card

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/debug/received")
    async def received() -> dict[str, Any]:
        """How many ``message/send`` requests arrived, and the last messageIds (null when absent)."""
        return {"count": state.a2a_requests, "message_ids": list(state.received_message_ids)}

    @app.post("/")
    async def jsonrpc(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:  # bad JSON or bad encoding
            return _rpc_error(None, PARSE_ERROR, "Parse error")
        if not isinstance(body, dict):
            return _rpc_error(None, INVALID_REQUEST, "Invalid Request")
        request_id = body.get("id")
        if request_id is not None and not isinstance(request_id, str | int):
            return _rpc_error(None, INVALID_REQUEST, "Invalid Request: bad id")
        method = body.get("method")
        if body.get("jsonrpc") != "2.0" or not isinstance(method, str):
            return _rpc_error(request_id, INVALID_REQUEST, "Invalid Request")
        if method != "message/send":
            return _rpc_error(request_id, METHOD_NOT_FOUND, f"Method not found: {method}")
        parsed = _message_texts(body.get("params"))
        if parsed is None:
            return _rpc_error(request_id, INVALID_PARAMS, "Invalid params: expected params.message.parts")
        message, texts = parsed
        message_id = message.get("messageId") if isinstance(message.get("messageId"), str) else None
        state.note_received(message_id)

        fault = A2AFault.from_overrides(faults())
        if fault.mode == "reset":
            return _ConnectionDrop()
        if fault.mode == "busy":
            return JSONResponse(
                {"error": "busy", "busy": True},
                status_code=503,
                headers={"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)},
            )

        text = "\n".join(texts)
        result: dict[str, Any] = {
            "kind": "message",
            "role": "agent",
            "messageId": uuid.uuid4().hex,
            "parts": [{"kind": "text", "text": f"echo: {text}"}],
            "metadata": {"request_message_id": message_id},
        }
        if isinstance(message.get("contextId"), str):
            result["contextId"] = message["contextId"]
        envelope = {"jsonrpc": "2.0", "id": request_id, "result": result}
        if fault.mode == "large":
            return _large_response(envelope, text, fault.response_bytes, fault.content_length, state)
        with state.task(f"message/send: {text[:80]}"):
            if fault.mode == "slow":
                await asyncio.sleep(fault.delay_seconds)
            elif fault.mode == "hold" and fault.hold_file is not None:
                await _hold(fault.hold_file)
        return JSONResponse(envelope)

    return app
