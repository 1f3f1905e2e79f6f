from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from api.deps import (
    AdminBearer,
    GatewayDep,
    Operator,
    PlatformDep,
    PoolDep,
    WorkspaceBearer,
    WorkspaceOrOperator,
    check_owner_or_operator,
    parse_workspace_id,
    require_workspace_or_operator,
    workspace_row,
)
from api.errors import ApiError, PlatformUnavailable
from api.gateway import removed_error
from api.openapi import AUTHENTICATED, errors
from api.platform import Platform
from api.schemas import (
    INT8_MAX,
    TOKEN_AT_REGISTER,
    CreatedWorkspace,
    CreateWorkspace,
    Workspace,
    WorkspaceState,
)
from domain.events import EventType
from domain.json_bounds import UNREADABLE, unservable_reason
from domain.models import WorkspaceInput
from domain.providers import PROVIDER_SECRET, model_secrets
from domain.runtimes import EXTERNAL_RUNTIME, normalize_runtime
from domain.status import WorkspaceStatus
from store import events as event_store
from store import secrets as secret_store
from store import tokens
from store import workspaces as ws_store

log = logging.getLogger("molecule.api")
router = APIRouter(prefix="/workspaces", tags=["workspaces"], responses=AUTHENTICATED)


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


@router.post(
    "", status_code=201, response_model=CreatedWorkspace, dependencies=[Operator], responses=errors(413, 502)
)
async def create_workspace(
    body: CreateWorkspace, platform: PlatformDep, pool: PoolDep, gateway: GatewayDep
) -> CreatedWorkspace:
    chosen = platform.templates.get(body.template) if body.template else None
    if body.template and chosen is None:
        available = ", ".join(platform.templates.names()) or "none"
        raise ApiError(
            422, f"unknown template {body.template!r} (available: {available})", "unknown_template"
        )
    # The request's runtime and model, else the named template's.
    runtime, replaced = normalize_runtime(body.runtime or (chosen.runtime if chosen else None))
    if replaced and body.runtime:
        log.info(
            "create %r: runtime %r is not one of the allowed runtimes; using %s",
            body.name,
            body.runtime,
            runtime,
        )
    template = chosen or platform.templates.for_workspace(None, runtime)
    model = body.model or (template.default_model if template else None)
    backend = _choose_backend(platform, body, runtime)
    if body.token_delivery == TOKEN_AT_REGISTER and backend != "external":
        raise ApiError(
            422,
            "token_delivery=register is for external workspaces (an instance the platform starts gets "
            "its token from the platform)",
            "invalid_token_delivery",
        )
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
        model=model,
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
            created_at = await ws_store.insert_workspace(conn, new)
            # The model choice is kept as secrets too, so a restart (or a later PUT /model) keeps it.
            await secret_store.put_workspace_secrets(
                conn,
                platform.keyring,
                workspace_id,
                body.env | model_secrets(model, provider=body.env.get(PROVIDER_SECRET)),
            )
            if body.token_delivery == TOKEN_AT_REGISTER:
                await tokens.open_register_claim(
                    conn, workspace_id, platform.settings.register_claim_window_seconds
                )
            else:
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
    public = to_public(platform, row)
    token = None if body.token_delivery == TOKEN_AT_REGISTER else minted.token
    return CreatedWorkspace(id=public.id, status=public.status, workspace=public, auth_token=token)


@router.get("", response_model=list[Workspace], dependencies=[Operator])
async def list_workspaces(
    platform: PlatformDep,
    pool: PoolDep,
    status: WorkspaceStatus | None = None,
    limit: int = Query(default=500, ge=1, le=5000),
    offset: int = Query(default=0, ge=0, le=INT8_MAX),
) -> list[Workspace]:
    rows = await ws_store.list_workspaces(pool, status, limit, offset)
    return [to_public(platform, r) for r in rows]


@router.get(
    "/{workspace_id}",
    response_model=Workspace,
    responses=errors(400, 403, 404, 410),
    description="The operator's token, or the workspace's own (an agent reads its own record).",
)
async def get_workspace(
    workspace_id: str,
    caller: WorkspaceOrOperator,
    platform: PlatformDep,
    pool: PoolDep,
    include_removed: bool = Query(default=False, description="show a removed workspace and its teardown"),
) -> Workspace:
    row = await workspace_row(pool, workspace_id)
    check_owner_or_operator(caller, row["id"])
    if row["status"] == WorkspaceStatus.REMOVED and not include_removed:
        raise removed_error(row)
    return to_public(platform, row)


_PAUSED = (WorkspaceStatus.PAUSED, WorkspaceStatus.HIBERNATING, WorkspaceStatus.HIBERNATED)


@router.get(
    "/{workspace_id}/state",
    response_model=WorkspaceState,
    responses={
        **errors(400, 403),
        404: {"model": WorkspaceState, "description": "removed (deleted: true), or never existed"},
    },
    description=(
        "What an agent's run loop polls: paused (paused, hibernating or hibernated) or deleted means "
        "stop. A removed workspace answers 404 with deleted: true, to its own token too."
    ),
)
async def get_state(
    workspace_id: str,
    request: Request,
    platform: PlatformDep,
    pool: PoolDep,
    admin: AdminBearer,
    workspace: WorkspaceBearer,
    x_workspace_id: Annotated[str | None, Header(alias="X-Workspace-ID")] = None,
) -> JSONResponse:
    wid = parse_workspace_id(workspace_id)
    try:
        caller = await require_workspace_or_operator(request, platform, admin, workspace, x_workspace_id)
    except ApiError as exc:
        # The agent of a removed workspace learns it the way its SDK expects: 404, deleted.
        if exc.code != "workspace_removed" or exc.extra.get("id") != wid:
            raise
        return JSONResponse(
            {"workspace_id": wid, "status": WorkspaceStatus.REMOVED.value, "paused": False, "deleted": True},
            status_code=404,
        )
    check_owner_or_operator(caller, wid)
    found = await ws_store.name_and_status(pool, wid)
    if found is None:
        never = {"workspace_id": wid, "status": "not_found", "paused": False, "deleted": True}
        return JSONResponse(never | {"error": f"workspace {wid} not found", "code": "not_found"}, 404)
    status = found[1]
    removed = status == WorkspaceStatus.REMOVED
    state = WorkspaceState(workspace_id=wid, status=status.value, paused=status in _PAUSED, deleted=removed)
    return JSONResponse(state.model_dump(), status_code=404 if removed else 200)
