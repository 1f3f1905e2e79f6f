"""A2A (JSON-RPC 2.0) requests through the platform: what a valid request is, how the clients' shapes
are normalised, and the limits and answers of the proxy and its busy queue. Pure."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

MAX_RESPONSE_BYTES = 10 * 1024 * 1024
AGENT_CALL_CEILING_SECONDS = 30 * 60
BUSY_RETRY_AFTER = 30
WAKING_RETRY_AFTER = 15
QUEUE_PRIORITY = 50
QUEUE_MAX_ATTEMPTS = 5
SUMMARY_CHARS = 200
LOGGED_BODY_BYTES = 64 * 1024

# The runtime's wire names for the capabilities an agent declares in its heartbeat.
NATIVE_SESSION_KEYS = ("session", "provides_native_session")


class InvalidA2ARequest(ValueError):
    """The body is not an A2A request; the message names what is wrong."""


@dataclass(frozen=True)
class A2ARequest:
    method: str
    body: dict[str, Any]  # the normalised envelope that is sent
    message_id: str | None  # params.message.messageId (generated when the client sent none)


def normalise(raw: Any) -> A2ARequest:
    """Validate a parsed body and give it the envelope every agent expects.

    Accepts the shapes the platform's clients send: a full JSON-RPC 2.0 envelope, or a bare
    `{method, params}` (the runtime's self-messages), parts typed `kind` or the legacy `type`, and a
    message without a `messageId` (one is generated, so a retried request is still one entry)."""
    if not isinstance(raw, dict):
        raise InvalidA2ARequest("body must be a JSON-RPC 2.0 object")
    if "jsonrpc" in raw and raw["jsonrpc"] != "2.0":
        raise InvalidA2ARequest('"jsonrpc" must be "2.0"')
    method = raw.get("method")
    if not isinstance(method, str) or not method.strip():
        raise InvalidA2ARequest('"method" is required and must be a non-empty string')
    request_id = raw.get("id", str(uuid.uuid4()))
    if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, str | int)):
        raise InvalidA2ARequest('"id" must be a string, an integer or null')
    params = raw.get("params")
    if params is not None and not isinstance(params, dict | list):
        raise InvalidA2ARequest('"params" must be an object or an array')
    message_id: str | None = None
    if method in ("message/send", "message/stream"):
        if not isinstance(params, dict) or not isinstance(params.get("message"), dict):
            raise InvalidA2ARequest(f'{method} needs "params.message" (an object)')
        message = dict(params["message"])
        parts = message.get("parts")
        if not isinstance(parts, list) or not parts:
            raise InvalidA2ARequest('"params.message.parts" must be a non-empty array')
        if not all(isinstance(p, dict) for p in parts):
            raise InvalidA2ARequest('every entry of "params.message.parts" must be an object')
        given = message.get("messageId")
        if given is not None and not isinstance(given, str):
            raise InvalidA2ARequest('"params.message.messageId" must be a string')
        message_id = given or str(uuid.uuid4())
        message["messageId"] = message_id
        message.setdefault("role", "user")
        params = {**params, "message": message}
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    return A2ARequest(method, body, message_id)


def message_send(text: str, message_id: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """A `message/send` request carrying `text` (a delegation, a cron prompt)."""
    message: dict[str, Any] = {
        "role": "user",
        "messageId": message_id,
        "parts": [{"kind": "text", "text": text}],
    }
    if metadata:
        message["metadata"] = metadata
    return {"jsonrpc": "2.0", "id": message_id, "method": "message/send", "params": {"message": message}}


def declares_native_session(capabilities: dict[str, Any] | None) -> bool:
    return any((capabilities or {}).get(key) is True for key in NATIVE_SESSION_KEYS)


def part_texts(parts: Any) -> list[str]:
    if not isinstance(parts, list):
        return []
    return [
        p["text"]
        for p in parts
        if isinstance(p, dict)
        and isinstance(p.get("text"), str)
        and p.get("kind", p.get("type", "text")) == "text"
    ]


def response_text(response: Any) -> str | None:
    """The text of an agent's JSON-RPC answer: artifacts' text parts, then the message's, as the
    runtime reads them; None when the answer has no result."""
    if not isinstance(response, dict) or not isinstance(response.get("result"), dict):
        return None
    result = response["result"]
    texts: list[str] = []
    artifacts = result.get("artifacts")
    if isinstance(artifacts, list):
        for artifact in artifacts:
            if isinstance(artifact, dict):
                texts += part_texts(artifact.get("parts"))
    texts += part_texts(result.get("parts"))
    status = result.get("status")
    if not texts and isinstance(status, dict) and isinstance(status.get("message"), dict):
        texts += part_texts(status["message"].get("parts"))
    return "\n".join(texts)


def rpc_error(response: Any) -> str | None:
    """The JSON-RPC error message of an answer, if it is an error."""
    if isinstance(response, dict) and isinstance(response.get("error"), dict):
        message = response["error"].get("message")
        return message if isinstance(message, str) else json.dumps(response["error"])[:SUMMARY_CHARS]
    return None


def preview(text: str, limit: int = SUMMARY_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bounded_json(value: Any, limit: int = LOGGED_BODY_BYTES) -> Any:
    """`value` when its JSON fits in `limit` bytes, else a marker with its size (a log row stays small)."""
    encoded = json.dumps(value, default=str)
    if len(encoded.encode()) <= limit:
        return value
    return {"truncated": True, "bytes": len(encoded.encode())}


@dataclass(frozen=True)
class Refusal:
    """Why the platform does not forward a call, as the HTTP answer the proxy gives."""

    http_status: int
    code: str
    message: str
    retry_after: int | None = None
    extra: tuple[tuple[str, Any], ...] = ()
    wake: bool = False  # the workspace is hibernated: the proxy tells its workflow to resume


def has_inbound_url(url: str | None) -> bool:
    """An agent without inbound A2A registers no URL, or `remote://no-inbound` (the SDK's poll mode)."""
    return bool(url) and not str(url).startswith("remote://")


def target_refusal(status: str, url: str | None, removed: bool, poll: bool = False) -> Refusal | None:
    """The answer for a target that cannot take a call in its state; None when it can (a poll-mode
    agent needs no URL: its inbox takes the call)."""
    if removed or status == "removed":
        return Refusal(410, "workspace_removed", "workspace removed")
    if status == "paused":
        return Refusal(409, "workspace_paused", "workspace is paused; resume it to reach it")
    if status in ("hibernated", "hibernating"):
        return Refusal(
            503,
            "waking",
            f"workspace is waking from hibernation; retry in ~{WAKING_RETRY_AFTER} seconds",
            WAKING_RETRY_AFTER,
            (("waking", True), ("retry_after", WAKING_RETRY_AFTER)),
            wake=status == "hibernated",
        )
    if status == "failed":
        return Refusal(
            503,
            "workspace_failed",
            "workspace has failed; restart it to reach it",
            None,
            (("status", status),),
        )
    if status in ("online", "degraded"):
        if not poll and not has_inbound_url(url):
            return Refusal(
                503, "no_url", "workspace is online but registered no A2A URL", None, (("status", status),)
            )
        return None
    return Refusal(
        503,
        f"workspace_{status}",
        f"workspace is {status}, not reachable yet",
        WAKING_RETRY_AFTER,
        (("status", status),),
    )


def busy_native_session() -> Refusal:
    return Refusal(
        503,
        "busy",
        "workspace agent is busy; its runtime keeps its own session, so nothing was queued: retry later",
        BUSY_RETRY_AFTER,
        (("busy", True), ("retry_after", BUSY_RETRY_AFTER), ("native_session", True)),
    )


def busy_not_queued() -> Refusal:
    return Refusal(
        503,
        "busy",
        "workspace agent is busy and the request could not be queued; retry after a short backoff",
        BUSY_RETRY_AFTER,
        (("busy", True), ("retry_after", BUSY_RETRY_AFTER)),
    )
