"""Delegations: `POST /workspaces/{id}/delegate` starts one durable workflow per task; a runtime that
made the call itself records it and reports its end."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import (
    GatewayDep,
    PoolDep,
    SettingsDep,
    WorkspaceOrOperator,
    check_owner_or_operator,
    parse_workspace_id,
)
from api.errors import ApiError
from api.openapi import AUTHENTICATED, errors
from domain.access import can_communicate
from domain.models import DelegationInput, DelegationStatus
from store import delegations as delegation_store
from store import peers as peer_store

router = APIRouter(prefix="/workspaces/{workspace_id}", tags=["delegations"], responses=AUTHENTICATED)

MAX_TASK_CHARS = 64 * 1024
Text = Annotated[str, Field(max_length=MAX_TASK_CHARS)]


class DelegateBody(BaseModel):
    """Both shapes the clients send: `{target_id, task}` to the source's own path (runtime, CLI), or
    `{task, idempotency_key}` to the target's path (the SDK, which names itself in X-Workspace-ID)."""

    task: Text = Field(min_length=1)
    target_id: str | None = Field(default=None, max_length=64)
    idempotency_key: str | None = Field(default=None, max_length=200)


class Delegated(BaseModel):
    delegation_id: str
    status: str
    target_id: str
    idempotent_hit: bool = False


class RecordBody(BaseModel):
    target_id: str = Field(max_length=64)
    task: Text
    delegation_id: str = Field(max_length=64)


class UpdateBody(BaseModel):
    status: Literal["queued", "dispatched", "in_progress", "completed", "failed"]
    error: str | None = Field(default=None, max_length=8192)
    response_preview: str | None = Field(default=None, max_length=MAX_TASK_CHARS)


async def _check_reach(pool: Any, source_id: str, target_id: str) -> None:
    """403 unless the source may call the target (and the same 403 for a target that does not exist)."""
    found = await peer_store.facts(pool, source_id, target_id)
    source, target = found.get(source_id), found.get(target_id)
    if source is None:
        raise ApiError(404, f"workspace {source_id} not found", "not_found")
    if source.removed:
        raise ApiError(410, f"workspace {source_id} was removed", "workspace_removed", id=source_id)
    if target is None or not can_communicate(source.node(), target.node()):
        raise ApiError(403, f"workspace {source_id} may not delegate to workspace {target_id}", "forbidden")


@router.post(
    "/delegate", status_code=202, response_model=Delegated, responses=errors(400, 403, 404, 410, 413)
)
async def delegate(
    workspace_id: str,
    body: DelegateBody,
    caller: WorkspaceOrOperator,
    pool: PoolDep,
    gateway: GatewayDep,
    settings: SettingsDep,
) -> JSONResponse:
    path_id = parse_workspace_id(workspace_id)
    if body.target_id is not None:
        source_id, target_id = path_id, parse_workspace_id(body.target_id)
        check_owner_or_operator(caller, source_id)
    elif caller is not None:
        source_id, target_id = caller.workspace_id, path_id
    else:
        raise ApiError(
            400, "target_id is required (the operator delegates on behalf of a workspace)", "invalid_body"
        )
    if source_id == target_id:
        raise ApiError(400, "a workspace cannot delegate to itself", "self_delegation")
    await _check_reach(pool, source_id, target_id)

    key = body.idempotency_key or None
    async with pool.acquire() as conn, conn.transaction():
        if key is not None:
            existing = await delegation_store.by_key(conn, source_id, key)
            if existing is not None and existing["status"] != DelegationStatus.FAILED:
                hit = Delegated(
                    delegation_id=existing["id"],
                    status=existing["status"],
                    target_id=existing["target_id"],
                    idempotent_hit=True,
                )
                return JSONResponse(hit.model_dump(), status_code=202)
            if existing is not None:
                await delegation_store.release_key(conn, existing["id"])
        delegation_id = str(uuid.uuid4())
        row = await delegation_store.insert(
            conn, delegation_id, source_id, target_id, body.task, DelegationStatus.PENDING, key
        )
        if row is None:  # a concurrent request with the same key won
            raise ApiError(409, "a delegation with this idempotency_key is being created; retry", "conflict")
        # Started before the commit: a failure rolls the row back (never a row without a workflow);
        # a workflow whose row never commits finds none and ends failed.
        await gateway.start_delegation(
            DelegationInput(delegation_id, source_id, target_id, settings.delegation_timeout_seconds)
        )
    reply = Delegated(delegation_id=delegation_id, status=DelegationStatus.PENDING.value, target_id=target_id)
    return JSONResponse(reply.model_dump(), status_code=202)


@router.get("/delegations", responses=errors(400, 403, 404, 410))
async def list_delegations(
    workspace_id: str,
    caller: WorkspaceOrOperator,
    pool: PoolDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    wid = parse_workspace_id(workspace_id)
    check_owner_or_operator(caller, wid)
    return [delegation_store.public(row) for row in await delegation_store.list_for(pool, wid, limit)]


@router.post("/delegations/record", status_code=202, responses=errors(400, 403, 404, 409, 410, 413))
async def record(
    workspace_id: str, body: RecordBody, caller: WorkspaceOrOperator, pool: PoolDep
) -> dict[str, str]:
    """A delegation the runtime sent itself (straight to the peer): recorded, no workflow."""
    source_id = parse_workspace_id(workspace_id)
    check_owner_or_operator(caller, source_id)
    target_id = parse_workspace_id(body.target_id)
    delegation_id = parse_workspace_id(body.delegation_id)
    await _check_reach(pool, source_id, target_id)
    async with pool.acquire() as conn, conn.transaction():
        row = await delegation_store.insert(
            conn,
            delegation_id,
            source_id,
            target_id,
            body.task,
            DelegationStatus.DISPATCHED,
            None,
            self_reported=True,
        )
    if row is None:
        existing = await delegation_store.get(pool, delegation_id)
        if existing is None or existing["source_id"] != source_id:
            raise ApiError(409, f"delegation {delegation_id} already exists", "conflict")
    return {"delegation_id": delegation_id, "status": "recorded"}


@router.post("/delegations/{delegation_id}/update", responses=errors(400, 403, 404, 409, 410, 413))
async def update(
    workspace_id: str, delegation_id: str, body: UpdateBody, caller: WorkspaceOrOperator, pool: PoolDep
) -> dict[str, str]:
    """The runtime reports how a delegation it recorded went (only the source's own delegations)."""
    source_id = parse_workspace_id(workspace_id)
    check_owner_or_operator(caller, source_id)
    did = parse_workspace_id(delegation_id)
    row = await delegation_store.get(pool, did)
    if row is None or row["source_id"] != source_id:
        raise ApiError(404, f"delegation {did} not found for workspace {source_id}", "not_found")
    if not row["self_reported"]:
        raise ApiError(
            409,
            f"delegation {did} is run by the platform; only delegations recorded with /delegations/record "
            "take updates",
            "platform_delegation",
        )
    status = DelegationStatus(body.status)
    await delegation_store.set_status(pool, did, status, body.error or None, body.response_preview)
    return {"status": body.status, "delegation_id": did}
