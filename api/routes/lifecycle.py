"""Operator actions on a workspace: delete, restart, pause, resume, hibernate; rescue bundles; the boot
watcher's verdict. Each action is a Temporal update (or signal) to the workspace's workflow, which
stays the only writer of its status; one reaching descendants is a cascade workflow."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.deps import GatewayDep, Operator, PlatformDep, PoolDep, existing_workspace_id, workspace_row
from api.errors import ApiError
from api.gateway import WorkflowGateway, WorkflowNotRunning, removed_error
from api.openapi import AUTHENTICATED, errors
from api.schemas import ActionReply, BootstrapAccepted, BootstrapFailedBody, DeleteReply, RescueBundle
from domain.contract import Signal, Update
from domain.events import EventType
from domain.models import BootstrapFailedSignal, CascadeKind, CascadeRequest, DeleteRequest, PauseRequest
from domain.status import WorkspaceStatus
from domain.teardown import truncate_utf8
from domain.transitions import RESUMABLE, can_hibernate
from store import rescue as rescue_store
from store import workspaces as ws_store
from store.keyring import Keyring

log = logging.getLogger("molecule.api")
router = APIRouter(prefix="/workspaces", tags=["lifecycle"], dependencies=[Operator], responses=AUTHENTICATED)
admin_router = APIRouter(
    prefix="/admin/workspaces", tags=["admin"], dependencies=[Operator], responses=AUTHENTICATED
)
# An action on one workspace: a bad id, an unknown or removed workspace, a state the action does not
# apply to, and the workflow orchestrator refusing the update. Any POST body is size-capped.
ACTION_ERRORS = errors(400, 404, 409, 410, 502)

EXTERNAL_NOOP = "external agent: restart it on your side"


async def load(pool: asyncpg.Pool, workspace_id: str) -> dict[str, Any]:
    """The row, or 400 (not a UUID) / 404 (unknown) / 410 (removed)."""
    row = await workspace_row(pool, workspace_id)
    if row["status"] == WorkspaceStatus.REMOVED:
        raise removed_error(row)
    return row


async def _live_below(pool: asyncpg.Pool, workspace_id: str, done: tuple[WorkspaceStatus, ...]) -> int:
    return sum(1 for d in await ws_store.descendants(pool, workspace_id) if d["status"] not in done)


# --- delete -----------------------------------------------------------------------------------


async def _delete_alone(pool: asyncpg.Pool, gateway: WorkflowGateway, row: dict[str, Any]) -> str:
    """Delete a workspace without descendants through its workflow; one whose workflow is gone is
    marked removed here and its instance left to the reconcile schedule (it reaps removed rows whose
    workflow is closed)."""
    try:
        result = await gateway.update(row, Update.DELETE, DeleteRequest())
        return result.teardown or "pending"
    except WorkflowNotRunning:
        pass
    await ws_store.apply_status_change(
        pool, row["id"], WorkspaceStatus.REMOVED, EventType.WORKSPACE_REMOVED,
        {"cascade_deleted": 0, "workflow": "not running"}, f"api-delete:{row['id']}", None, False,
    )  # fmt: skip
    log.warning("workspace %s: deleted without a running workflow; reconcile reaps its instance", row["id"])
    return "pending"


@router.delete(
    "/{workspace_id}",
    status_code=202,
    response_model=DeleteReply,
    responses={200: {"model": DeleteReply, "description": "teardown completed"}, **ACTION_ERRORS},
)
async def delete_workspace(
    workspace_id: str,
    pool: PoolDep,
    gateway: GatewayDep,
    confirm: bool = False,
    wait: float = Query(default=0, ge=0, le=300, description="seconds to wait for teardown to complete"),
) -> Any:
    row = await workspace_row(pool, workspace_id)
    below = await _live_below(pool, row["id"], (WorkspaceStatus.REMOVED,))
    if row["status"] == WorkspaceStatus.REMOVED and below == 0:
        raise removed_error(row)
    if below and not confirm and row["status"] != WorkspaceStatus.REMOVED:
        raise ApiError(
            409,
            f"workspace {row['id']} has {below} descendant workspace(s); "
            "repeat with ?confirm=true to delete them all",
            "confirmation_required",
            children=below,
        )
    if below:
        # A cascade belongs to Temporal: it finishes whatever happens to this process, and a retried
        # DELETE of a removed parent finishes any descendant it had not reached yet.
        report = await gateway.cascade(CascadeRequest(CascadeKind.DELETE, row["id"], below))
        states = [report.root, *report.reached.values()]
        ids = [row["id"], *report.reached]
    else:
        states = [await _delete_alone(pool, gateway, row)]
        ids = [row["id"]]
        # A child created while the delete was on its way (before the row said removed) is not
        # left live under a removed parent: it is reached as a cascade would.
        late = await _live_below(pool, row["id"], (WorkspaceStatus.REMOVED,))
        if late:
            report = await gateway.cascade(CascadeRequest(CascadeKind.DELETE, row["id"], late))
            states += list(report.reached.values())
            ids += list(report.reached)
            below = late
    teardown = "complete" if all(s == "complete" for s in states) else "pending"
    if teardown == "pending" and wait > 0 and await gateway.wait_closed(ids, wait):
        teardown = "complete"
    reply = DeleteReply(cascade_deleted=below, teardown=teardown)  # type: ignore[arg-type]
    return JSONResponse(reply.model_dump(), status_code=200 if teardown == "complete" else 202)


# --- restart, pause, resume, hibernate ----------------------------------------------------------


@router.post(
    "/{workspace_id}/restart",
    status_code=202,
    response_model=ActionReply,
    responses={200: {"model": ActionReply, "description": "external agent: nothing to restart"}}
    | ACTION_ERRORS
    | errors(413),
)
async def restart_workspace(workspace_id: str, pool: PoolDep, gateway: GatewayDep) -> Any:
    row = await load(pool, workspace_id)
    if row["backend"] == "external":
        return JSONResponse({"status": "noop", "message": EXTERNAL_NOOP}, status_code=200)
    result = await gateway.update(row, Update.RESTART)
    return ActionReply(status=result.status, coalesced=result.coalesced)


@router.post(
    "/{workspace_id}/pause",
    status_code=202,
    response_model=ActionReply,
    responses=ACTION_ERRORS | errors(413),
)
async def pause_workspace(workspace_id: str, pool: PoolDep, gateway: GatewayDep) -> ActionReply:
    row = await load(pool, workspace_id)
    below = await _live_below(pool, row["id"], (WorkspaceStatus.REMOVED, WorkspaceStatus.PAUSED))
    if below:
        report = await gateway.cascade(CascadeRequest(CascadeKind.PAUSE, row["id"], below))
        if report.root == "removed":  # deleted meanwhile
            raise removed_error({**row, "removed_at": None})
        return ActionReply(status=report.root, cascade_paused=below)
    result = await gateway.update(row, Update.PAUSE, PauseRequest())
    return ActionReply(status=result.status, cascade_paused=0)


@router.post(
    "/{workspace_id}/resume",
    status_code=202,
    response_model=ActionReply,
    responses=ACTION_ERRORS | errors(413),
)
async def resume_workspace(workspace_id: str, pool: PoolDep, gateway: GatewayDep) -> ActionReply:
    row = await load(pool, workspace_id)
    if row["status"] not in RESUMABLE:
        raise ApiError(
            409, f"only a paused or hibernated workspace resumes; it is {row['status']}", "invalid_state"
        )
    result = await gateway.update(row, Update.RESUME)
    return ActionReply(status=result.status, coalesced=result.coalesced)


@router.post(
    "/{workspace_id}/hibernate",
    status_code=202,
    response_model=ActionReply,
    responses=ACTION_ERRORS | errors(413),
)
async def hibernate_workspace(workspace_id: str, pool: PoolDep, gateway: GatewayDep) -> ActionReply:
    row = await load(pool, workspace_id)
    if not can_hibernate(row["status"], row["active_tasks"]):
        raise ApiError(
            409,
            f"only an online or degraded workspace with no active task hibernates; it is {row['status']} "
            f"with {row['active_tasks']} active task(s)",
            "invalid_state",
        )
    result = await gateway.update(row, Update.HIBERNATE)
    return ActionReply(status=result.status)


# --- evidence and the boot watcher -------------------------------------------------------------


@router.get("/{workspace_id}/rescue", response_model=RescueBundle, responses=errors(400, 404))
async def get_rescue_bundle(workspace_id: str, pool: PoolDep) -> RescueBundle:
    wid = await existing_workspace_id(pool, workspace_id)
    bundle = await rescue_store.latest_bundle(pool, wid)
    if bundle is None:
        raise ApiError(
            404, f"workspace {wid} has no rescue bundle (only failed boots get one)", "no_rescue_bundle"
        )
    return RescueBundle(**bundle)


@admin_router.post(
    "/{workspace_id}/bootstrap-failed",
    status_code=202,
    response_model=BootstrapAccepted,
    responses=ACTION_ERRORS | errors(413),
)
async def bootstrap_failed(
    workspace_id: str, body: BootstrapFailedBody, platform: PlatformDep, pool: PoolDep, gateway: GatewayDep
) -> dict[str, Any]:
    row = await load(pool, workspace_id)
    if row["status"] != WorkspaceStatus.PROVISIONING:
        raise ApiError(
            409, f"only a provisioning workspace can fail its boot; it is {row['status']}", "invalid_state",
            current_status=row["status"],
        )  # fmt: skip
    log_tail, tail_status = await _redacted_tail(pool, platform.keyring, row["id"], body.log_tail)
    await gateway.signal(row["id"], Signal.BOOTSTRAP_FAILED, BootstrapFailedSignal(log_tail))
    return {"accepted": True, "log_tail_bytes": len(log_tail.encode()), "log_tail_status": tail_status}


async def _redacted_tail(
    pool: asyncpg.Pool, keyring: Keyring, workspace_id: str, log_tail: str
) -> tuple[str, str]:
    """The tail as it may be signalled, stored and served: redacted by the rescue bundles' redactor
    (known secret shapes, this workspace's env values and tokens), then kept to its last bytes. Without
    a redactor the tail is dropped and the verdict alone goes on (fail closed)."""
    if not log_tail:
        return "", "empty"
    redactor = await rescue_store.redactor_for(pool, workspace_id, keyring)
    if redactor is None:
        log.warning("workspace %s: boot watcher's log tail dropped: it cannot be redacted", workspace_id)
        return "", "dropped: it could not be redacted"
    # Redacted whole, then cut: a secret cut in half by the cut would no longer be recognised.
    return truncate_utf8(redactor.redact(log_tail)), "redacted"
