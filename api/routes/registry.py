"""Agent callbacks: register once booted, then heartbeat about every 30 s."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.deps import (
    GatewayDep,
    PlatformDep,
    PoolDep,
    WorkspaceBearer,
    bearer,
    check_auth_limit,
    check_owner,
    client_address,
    parse_workspace_id,
    require_workspace_token,
)
from api.errors import ApiError
from api.openapi import AUTHENTICATED, errors, inline_schema
from api.platform import Platform
from api.schemas import HeartbeatBody, HeartbeatReply, RegisterBody, Registered, RuntimeMetadata
from domain.a2a import has_inbound_url
from domain.contract import Signal
from domain.models import DrainSignal, HeartbeatSignal, RegisterSignal
from domain.ssrf import UnsafeUrl, runs_beside_platform
from domain.status import WorkspaceStatus
from domain.transitions import error_band, heartbeat_is_news, on_heartbeat
from relay.dispatch import check_url
from store import heartbeats
from store import tokens as token_store
from store import workspaces as ws_store
from store.tokens import hash_token

log = logging.getLogger("molecule.api")
router = APIRouter(prefix="/registry", tags=["registry"], responses=AUTHENTICATED)

MAX_MONTHLY_SPEND = 10**12


def _gone(workspace_id: str) -> ApiError:
    return ApiError(410, f"workspace {workspace_id} was removed", "workspace_removed", id=workspace_id)


def _metadata_update(meta: RuntimeMetadata | None) -> dict[str, Any]:
    """Absent metadata keeps what is stored; an explicit empty map clears capabilities and the idle
    override; within a map, each key present replaces its value (idle timeout <= 0 clears it)."""
    if meta is None:
        return {}
    sent = meta.model_fields_set
    if not sent:
        return {"set_capabilities": True, "capabilities": {}, "set_idle_timeout": True}
    update: dict[str, Any] = {}
    if "capabilities" in sent and meta.capabilities is not None:
        update |= {"set_capabilities": True, "capabilities": meta.capabilities}
    if "idle_timeout_seconds" in sent:
        idle = meta.idle_timeout_seconds
        update |= {"set_idle_timeout": True, "idle_timeout_seconds": idle if idle and idle > 0 else None}
    return update


@router.post(
    "/register",
    response_model=Registered,
    response_model_exclude_none=True,
    responses=errors(400, 403, 404, 409, 410, 413, 422, 502),
    description=(
        "With the workspace's bearer token; or, for a workspace created with token_delivery=register, "
        "once without one inside its claim window (REGISTER_CLAIM_WINDOW_SECONDS): that first register "
        "mints the token and returns it once as auth_token."
    ),
)
async def register(
    body: RegisterBody,
    request: Request,
    credentials: WorkspaceBearer,
    platform: PlatformDep,
    pool: PoolDep,
    gateway: GatewayDep,
) -> Registered:
    workspace_id = parse_workspace_id(body.id)
    claim = None
    if credentials is None:
        # A remote agent claiming the workspace the operator created for it: its first register mints
        # the token (returned once); afterwards, and once the claim window closes, a bearer is needed.
        address = client_address(request)
        check_auth_limit(platform, address)
        if not await token_store.claimable(pool, workspace_id):
            platform.auth_failures.failed(address)
            raise ApiError(
                401, "missing bearer token (Authorization: Bearer <workspace token>)", "unauthorized"
            )
    else:
        caller = await require_workspace_token(request, platform, credentials)
        check_owner(caller, workspace_id)
    await _check_agent_url(platform, pool, workspace_id, body.url)
    if credentials is None:
        claim = await token_store.claim_by_register(pool, workspace_id)
        if claim is None:  # another register claimed it meanwhile
            raise ApiError(
                401, "missing bearer token (Authorization: Bearer <workspace token>)", "unauthorized"
            )
    token_id = claim.token_id if claim is not None else caller.token_id
    # Without a mode, the URL says it: the SDK's `remote://no-inbound` polls, a real URL is pushed to.
    mode = body.delivery_mode or (
        None if body.url is None else "push" if has_inbound_url(body.url) else "poll"
    )
    try:
        secret = await ws_store.register(pool, workspace_id, body.url, body.agent_card, mode)
        if secret is None:
            raise ApiError(404, f"workspace {workspace_id} not found", "not_found")
        platform.inbound_secrets.put(workspace_id, secret)
        await gateway.signal(
            workspace_id,
            Signal.REGISTER,
            RegisterSignal(url=body.url, agent_card=body.agent_card, token_id=token_id),
        )
    except BaseException:
        if claim is not None:  # the token never reached the agent: its retry claims again
            await token_store.unclaim(pool, workspace_id, claim)
        raise
    return Registered(platform_inbound_secret=secret, auth_token=claim.token if claim else None)


async def _check_agent_url(platform: Platform, pool: Any, workspace_id: str, url: str | None) -> None:
    if url is None or not has_inbound_url(url):
        return
    try:
        backend = await ws_store.backend_of(pool, workspace_id)
        await check_url(
            url,
            platform.settings.ssrf_policy(),
            local_agent=runs_beside_platform(backend, platform.settings.docker_network),
        )
    except UnsafeUrl as exc:
        raise ApiError(
            422,
            f"url is not allowed for agent traffic: {exc}",
            "unsafe_url",
            fields=[{"field": "url", "location": "body", "message": str(exc)}],
        ) from None


@router.post(
    "/heartbeat",
    response_model=HeartbeatReply,
    response_model_exclude_none=True,
    responses=errors(400, 403, 409, 410, 413, 502),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(HeartbeatBody)}},
        },
        "security": [{"WorkspaceToken": []}],
    },
)
async def heartbeat(request: Request) -> Response:
    # The hot path, kept lean: the body is validated straight from its bytes by pydantic-core, the
    # token is checked inside the one SQL round trip (no dependencies), Temporal is reached only for
    # news, and the small reply skips the response-model pass.
    platform: Platform = request.app.state.platform
    address = client_address(request)
    token = bearer(request.headers.get("authorization"))
    digest = hash_token(token) if token is not None else None
    check_auth_limit(platform, address, digest)
    try:
        body = HeartbeatBody.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        ) from None
    if digest is None:
        raise ApiError(401, "missing bearer token (Authorization: Bearer <workspace token>)", "unauthorized")
    workspace_id = parse_workspace_id(body.workspace_id)
    beat = heartbeats.Beat(
        error_rate=body.error_rate,
        sample_error=body.sample_error,
        active_tasks=body.active_tasks,
        uptime_seconds=body.uptime_seconds,
        current_task=body.current_task,
        runtime_state=body.runtime_state,
        monthly_spend=min(max(body.monthly_spend, 0), MAX_MONTHLY_SPEND),
        **_metadata_update(body.runtime_metadata),
    )
    result = await platform.beats.record(digest, workspace_id, beat)
    if result.verdict in ("unknown_token", "revoked"):
        if result.verdict == "unknown_token":  # a guess; a revoked token is a stale agent
            platform.auth_failures.failed(address)
        raise ApiError(401, "invalid or revoked workspace token", "unauthorized")
    if result.verdict == "removed":
        platform.inbound_secrets.forget(result.token_workspace or workspace_id)
        raise _gone(result.token_workspace or workspace_id)
    platform.auth_failures.succeeded(address, digest)  # an issued token: it authenticated
    if result.verdict == "wrong_workspace":
        raise ApiError(403, f"this token does not belong to workspace {workspace_id}", "forbidden")
    assert result.status is not None

    status_mgmt = (result.capabilities or {}).get("status_mgmt") is True
    news = heartbeat_is_news(
        status=result.status,
        first_since_register=result.first_since_register,
        prev_runtime_state=result.prev_runtime_state,
        runtime_state=body.runtime_state,
        prev_error_rate=result.prev_error_rate,
        error_rate=body.error_rate,
        capabilities_changed=result.capabilities_changed,
        status_mgmt=status_mgmt,
    )
    signature = (result.status, error_band(body.error_rate), body.runtime_state, status_mgmt)
    if news and (result.first_since_register or platform.news.should_signal(workspace_id, signature)):
        await platform.gateway.signal(
            workspace_id,
            Signal.HEARTBEAT,
            HeartbeatSignal(
                error_rate=body.error_rate,
                sample_error=body.sample_error,
                runtime_state=body.runtime_state,
                active_tasks=body.active_tasks,
                status_mgmt=status_mgmt,
                token_id=result.token_id,
            ),
        )
    if result.drain_capacity and result.status in (WorkspaceStatus.ONLINE, WorkspaceStatus.DEGRADED):
        try:  # best effort: the next beat with capacity asks again
            await platform.gateway.signal(
                workspace_id, Signal.DRAIN_QUEUE, DrainSignal(result.drain_capacity)
            )
        except ApiError as exc:
            log.warning("workspace %s: could not ask for a queue drain (%s)", workspace_id, exc.code)
    # The workflow stays the only writer of status; the reply reports the status this beat leads to
    # (the first beat of an awaiting agent brings it online), by the rule the workflow applies.
    leads_to = on_heartbeat(
        result.status,
        error_rate=body.error_rate,
        sample_error=body.sample_error,
        runtime_state=body.runtime_state,
        status_mgmt=status_mgmt,
    )
    reply = {"status": (leads_to.status if leads_to else result.status).value}
    secret = await _inbound_secret(platform, workspace_id, result.platform_inbound_secret)
    if secret is not None:
        reply["platform_inbound_secret"] = secret
    return Response(json.dumps(reply), media_type="application/json")


async def _inbound_secret(platform: Platform, workspace_id: str, stored: str | None) -> str | None:
    cached = platform.inbound_secrets.get(workspace_id)
    if cached:
        return cached
    secret = stored
    if secret is None:
        try:  # heal a NULL column; a failure must not fail the beat
            secret = await ws_store.ensure_inbound_secret(await platform.pool(), workspace_id)
        except Exception:
            log.warning("workspace %s: could not mint platform_inbound_secret", workspace_id)
            return None
    platform.inbound_secrets.put(workspace_id, secret)
    return secret
