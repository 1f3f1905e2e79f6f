from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import APIRouter, Query

from api.deps import GatewayDep, Operator, PlatformDep, PoolDep, workspace_row
from api.errors import ApiError, PlatformUnavailable
from api.gateway import removed_error
from api.openapi import AUTHENTICATED, errors
from api.platform import Platform
from api.schemas import INT8_MAX, CreatedWorkspace, CreateWorkspace, Workspace
from domain.events import EventType
from domain.json_bounds import UNREADABLE, unservable_reason
from domain.models import WorkspaceInput
from domain.runtimes import EXTERNAL_RUNTIME, normalize_runtime
from domain.status import WorkspaceStatus
from store import events as event_store
from store import tokens
from store import workspaces as ws_store

log = logging.getLogger("molecule.api")
router = APIRouter(
    prefix="/workspaces", tags=["workspaces"], dependencies=[Operator], responses=AUTHENTICATED
)


# JSON maps that agents (or workflows) wrote: a stored one that cannot be served is replaced by a
# note saying why, so one bad row never fails a read, least of all the whole list.
_STORED_MAPS = ("agent_card", "capabilities", "teardown")


def _servable(row: dict[str, Any]) -> dict[str, Any]:
    for name in _STORED_MAPS:
        value = row.get(name)
        reason = None if value is None else unservable_reason(value)
        if reason is not None:
            log.warning("workspace %s: %s not served: %s", row.get("id"), name, reason)
            row = {**row, name: {UNREADABLE: reason}}
    return row


def to_public(platform: Platform, row: dict[str, Any]) -> Workspace:
    manifest = platform.templates.manifest_timeout(row["runtime"])
    return Workspace(**_servable(row), provision_timeout_ms=manifest * 1000 if manifest else None)


def _choose_backend(platform: Platform, body: CreateWorkspace, runtime: str) -> str:
    if body.external or runtime == EXTERNAL_RUNTIME:
        return "external"
    template = platform.templates.for_workspace(body.template, runtime)
    return body.backend or (template.backend if template else None) or platform.settings.default_backend


@router.post("", status_code=201, response_model=CreatedWorkspace, responses=errors(413, 502))
async def create_workspace(
    body: CreateWorkspace, platform: PlatformDep, pool: PoolDep, gateway: GatewayDep
) -> CreatedWorkspace:
    runtime, replaced = normalize_runtime(body.runtime)
    if replaced:
        log.info(
            "create %r: runtime %r is not one of the allowed runtimes; using %s",
            body.name,
            body.runtime,
            runtime,
        )
    if body.template and platform.templates.get(body.template) is None:
        available = ", ".join(platform.templates.names()) or "none"
        raise ApiError(
            422, f"unknown template {body.template!r} (available: {available})", "unknown_template"
        )
    backend = _choose_backend(platform, body, runtime)
    status = WorkspaceStatus.AWAITING_AGENT if backend == "external" else WorkspaceStatus.PROVISIONING
    parent_id = str(body.parent_id) if body.parent_id else None

    workspace_id = str(uuid.uuid4())
    new = ws_store.NewWorkspace(
        id=workspace_id,
        name=body.name,
        runtime=runtime,
        backend=backend,
        status=status,
        template=body.template,
        model=body.model,
        role=body.role,
        tier=body.tier,
        parent_id=parent_id,
        max_concurrent_tasks=body.max_concurrent_tasks,
        budget_limit=body.budget_limit,
        hibernation_idle_minutes=body.hibernation_idle_minutes,
    )
    minted = tokens.mint_token()
    # Row and workflow together or neither: the workflow starts inside the row's transaction and is
    # terminated if the commit fails; a workflow whose row never commits gives up on its own.
    handle = None
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            if parent_id and not await ws_store.lock_live_parent(conn, parent_id):
                raise ApiError(
                    422, f"parent workspace {parent_id} does not exist or was removed", "unknown_parent"
                )
            # Held to the commit: the workflow's first activity waits on it rather than finding no row.
            await ws_store.hold_create_lock(conn, workspace_id)
            created_at = await ws_store.insert_workspace(conn, new, body.env)
            await tokens.insert_token(conn, workspace_id, minted, "api")
            await event_store.insert_event(
                conn,
                EventType.WORKSPACE_CREATED,
                workspace_id,
                {"name": body.name, "runtime": runtime, "backend": backend, "status": status.value},
            )
            inp = WorkspaceInput(
                workspace_id=workspace_id,
                runtime=runtime,
                backend=backend,
                template=body.template,
                continue_as_new_after_events=platform.settings.continue_as_new_after_events,
                hibernation_idle_minutes=body.hibernation_idle_minutes,
                created_at=created_at.timestamp(),  # the first deadline counts from here
            )
            handle = await gateway.start_workspace(inp, status)
            await tx.commit()
        except BaseException as exc:
            await tx.rollback()
            if handle is not None:
                await gateway.terminate_quietly(handle, "workspace create rolled back")
            if isinstance(exc, OSError):
                raise PlatformUnavailable() from None
            raise
    row = await ws_store.get_workspace(pool, workspace_id)
    assert row is not None
    return CreatedWorkspace(workspace=to_public(platform, row), auth_token=minted.token)


@router.get("", response_model=list[Workspace])
async def list_workspaces(
    platform: PlatformDep,
    pool: PoolDep,
    status: WorkspaceStatus | None = None,
    limit: int = Query(default=500, ge=1, le=5000),
    offset: int = Query(default=0, ge=0, le=INT8_MAX),
) -> list[Workspace]:
    rows = await ws_store.list_workspaces(pool, status, limit, offset)
    return [to_public(platform, r) for r in rows]


@router.get("/{workspace_id}", response_model=Workspace, responses=errors(400, 404, 410))
async def get_workspace(
    workspace_id: str,
    platform: PlatformDep,
    pool: PoolDep,
    include_removed: bool = Query(default=False, description="show a removed workspace and its teardown"),
) -> Workspace:
    row = await workspace_row(pool, workspace_id)
    if row["status"] == WorkspaceStatus.REMOVED and not include_removed:
        raise removed_error(row)
    return to_public(platform, row)
