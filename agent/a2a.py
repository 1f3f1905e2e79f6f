"""The agent's A2A surface: agent card, health probe and a JSON-RPC 2.0 ``message/send`` echo."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

try:
    AGENT_VERSION = version("molecule")
except PackageNotFoundError:  # running from a source tree without an install
    AGENT_VERSION = "0.0.0"

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

    @contextmanager
    def task(self, description: str) -> Iterator[None]:
        key = next(self._ids)
        self._tasks[key] = description
        try:
            yield
        finally:
            del self._tasks[key]

    @property
    def active_tasks(self) -> int:
        return len(self._tasks)

    @property
    def current_task(self) -> str | None:
        """The most recently started task still in flight."""
        return next(reversed(self._tasks.values()), None)

    def uptime_seconds(self) -> int:
        return int(time.monotonic() - self._started)


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


def create_app(card: dict[str, Any], state: AgentState) -> FastAPI:
    app = FastAPI(title=AGENT_NAME, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/.well-known/agent.json")
    @app.get("/.well-known/agent-card.json")
    async def get_card() -> dict[str, Any]:
        return card

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/")
    async def jsonrpc(request: Request) -> JSONResponse:
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
        text = "\n".join(texts)
        with state.task(f"message/send: {text[:80]}"):
            result: dict[str, Any] = {
                "kind": "message",
                "role": "agent",
                "messageId": uuid.uuid4().hex,
                "parts": [{"kind": "text", "text": f"echo: {text}"}],
            }
            if isinstance(message.get("contextId"), str):
                result["contextId"] = message["contextId"]
        return JSONResponse({"jsonrpc": "2.0", "id": request_id, "result": result})

    return app
