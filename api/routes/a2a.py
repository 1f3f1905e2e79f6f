"""The A2A proxy: `POST /workspaces/{id}/a2a` forwards a JSON-RPC request to the target's agent, or
queues it when the agent is busy.

The hot path is one SQL round trip (token, caller and target together), the dispatch, and the reply
streamed from its spool; the log rows and the event are written after the reply."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from api.deps import (
    GatewayDep,
    Operator,
    PoolDep,
    bearer,
    check_auth_limit,
    check_claimed_workspace,
    client_address,
    parse_workspace_id,
)
from api.errors import ApiError
from api.openapi import AUTHENTICATED, errors
from api.platform import Platform
from domain.a2a import InvalidA2ARequest, Refusal, normalise
from domain.access import Node, can_communicate
from domain.models import QueuedDelivery
from relay.dispatch import Outcome
from relay.forward import write_log
from store import a2a as a2a_store
from store.a2a import Party
from store.tokens import hash_token

log = logging.getLogger("molecule.api")
router = APIRouter(tags=["a2a"])

_A2A_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": "A JSON-RPC 2.0 A2A request (message/send, tasks/get, …); a bare "
                "{method, params} is wrapped in an envelope, and a message without a messageId gets one.",
                "properties": {
                    "jsonrpc": {"type": "string", "enum": ["2.0"]},
                    "id": {"type": ["string", "integer", "null"]},
                    "method": {"type": "string", "minLength": 1},
                    "params": {"type": "object"},
                },
                "required": ["method"],
            }
        }
    },
}


def _refusal_error(refusal: Refusal) -> ApiError:
    error = ApiError(refusal.http_status, refusal.message, refusal.code)
    error.extra = dict(refusal.extra)  # may carry "status" (the workspace's), not ApiError's own
    if refusal.retry_after is not None:
        error.headers = {"Retry-After": str(refusal.retry_after)}
    return error


async def _caller(request: Request, platform: Platform, target_id: str) -> tuple[str | None, Party]:
    """(the calling workspace, or None for the operator; the target). 401 without a valid token,
    403 when the caller may not reach the target, and the same 403 when the target does not exist:
    a workspace learns nothing about workspaces it may not call."""
    address = client_address(request)
    token = bearer(request.headers.get("authorization"))
    digest = hash_token(token) if token is not None else None
    check_auth_limit(platform, address, digest)
    settings = platform.settings
    if token is None and not settings.admin_token and settings.molecule_env == "development":
        # Operator routes are open in development without ADMIN_TOKEN; so is the operator's proxy.
        target = (await a2a_store.call_rows(await platform.pool(), None, target_id)).target
        if target is None:
            raise ApiError(404, f"workspace {target_id} not found", "not_found")
        return None, target
    if token is None or digest is None:
        raise ApiError(
            401, "missing bearer token (Authorization: Bearer <workspace or admin token>)", "unauthorized"
        )
    admin = settings.admin_token
    operator = bool(admin) and hmac.compare_digest(token.encode(), str(admin).encode())
    pool = await platform.pool()
    rows = await a2a_store.call_rows(pool, None if operator else digest, target_id)
    if operator:
        platform.auth_failures.succeeded(address, digest)
        if rows.target is None:
            raise ApiError(404, f"workspace {target_id} not found", "not_found")
        return None, rows.target
    if rows.token_id is None:
        platform.auth_failures.failed(address)
        raise ApiError(401, "invalid or revoked workspace token", "unauthorized")
    platform.auth_failures.succeeded(address, digest)
    caller = rows.caller
    assert caller is not None
    if caller.removed:
        raise ApiError(410, f"workspace {caller.id} was removed", "workspace_removed", id=caller.id)
    if rows.token_revoked:
        raise ApiError(401, "invalid or revoked workspace token", "unauthorized")
    check_claimed_workspace(request.headers.get("x-workspace-id"), caller.id)
    target = rows.target
    if target is None or not can_communicate(
        Node(caller.id, caller.parent_id), Node(target.id, target.parent_id)
    ):
        raise ApiError(
            403, f"workspace {caller.id} may not call workspace {target_id}", "forbidden", caller_id=caller.id
        )
    return caller.id, target


@router.post(
    "/workspaces/{workspace_id}/a2a",
    summary="Send an A2A JSON-RPC request to a workspace's agent",
    responses={
        200: {"description": "The agent's JSON-RPC answer, passed through"},
        202: {"description": "The agent is busy (the request was queued), or polls (it waits in its inbox)"},
        **errors(400, 401, 403, 404, 409, 410, 413, 422, 429, 502, 503),
    },
    openapi_extra={"requestBody": _A2A_BODY, "security": [{"WorkspaceToken": []}, {"AdminToken": []}]},
)
async def proxy(workspace_id: str, request: Request) -> Response:
    platform: Platform = request.app.state.platform
    target_id = parse_workspace_id(workspace_id)
    caller_id, target = await _caller(request, platform, target_id)
    raw = await request.body()
    try:
        parsed: Any = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}", "invalid_json") from None
    except RecursionError:
        raise ApiError(400, "body is nested too deeply", "invalid_json") from None
    try:
        a2a_request = normalise(parsed)
    except InvalidA2ARequest as exc:
        raise ApiError(400, f"invalid A2A request: {exc}", "invalid_a2a_request") from None

    forwarder = await platform.forwarder()
    result = await forwarder.forward(caller_id, target, a2a_request)
    platform.spawn(write_log(forwarder.pool, result.record), "A2A call log")
    if result.refusal is not None:
        if result.refusal.wake:
            platform.spawn(platform.gateway.wake(target.id), "wake")
        raise _refusal_error(result.refusal)
    if result.inboxed is not None:
        return JSONResponse(
            {
                "queued": True,
                "delivery_mode": "poll",
                "activity_id": result.inboxed,
                "message": "the workspace agent polls for its messages: this one waits in its inbox",
            },
            status_code=202,
        )
    if result.queued is not None:
        return JSONResponse(
            {
                "queued": True,
                "queue_id": result.queued.queue_id,
                "queue_depth": result.queued.depth,
                "message": "workspace agent busy: request queued, dispatched when the agent has capacity",
            },
            status_code=202,
        )
    delivery = result.delivery
    assert delivery is not None
    if delivery.outcome == Outcome.BLOCKED:
        raise ApiError(502, f"workspace URL is not allowed: {delivery.detail}", "target_url_blocked")
    if delivery.outcome == Outcome.TOO_LARGE:
        raise ApiError(502, delivery.detail, "response_too_large")
    if delivery.outcome == Outcome.UNREACHABLE:
        raise ApiError(502, f"failed to reach the workspace agent: {delivery.detail}", "agent_unreachable")
    if delivery.status_code >= 400:
        delivery.close()
        raise ApiError(
            502,
            f"the workspace agent answered HTTP {delivery.status_code}",
            "agent_error",
            agent_status=delivery.status_code,
        )
    return StreamingResponse(
        delivery.chunks(),
        status_code=delivery.status_code,
        media_type=delivery.content_type,
        headers={"Content-Length": str(delivery.size)},
    )


admin_router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Operator], responses=AUTHENTICATED)


@admin_router.post("/a2a-queue/drop-stale", responses=errors(400))
async def drop_stale(
    pool: PoolDep,
    gateway: GatewayDep,
    workspace_id: Annotated[str | None, Query(max_length=64)] = None,
    max_age_minutes: Annotated[int | None, Query(ge=1, le=10**6)] = None,
) -> dict[str, int]:
    """Drop queued messages past their expiry (or older than `max_age_minutes`); a delegation whose
    message is dropped fails with that reason."""
    wid = parse_workspace_id(workspace_id) if workspace_id is not None else None
    dropped = await a2a_store.drop_stale(pool, wid, max_age_minutes)
    for _queue_id, delegation_id in dropped:
        if delegation_id is not None:
            try:  # the drop stands either way; an untold delegation still ends at its timeout
                await gateway.delegation_delivered(
                    QueuedDelivery(delegation_id, False, "its queued message was dropped as stale")
                )
            except Exception as exc:
                log.warning(
                    "delegation %s not told of its dropped message (%s)", delegation_id, type(exc).__name__
                )
    return {"dropped": len(dropped)}
