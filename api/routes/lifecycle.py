"""Operator actions on a workspace: delete, restart, pause, resume, hibernate; rescue bundles; the boot
watcher's verdict. Each action is a Temporal update (or signal) to the workspace's workflow, which
stays the only writer of its status."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import Operator, PoolDep, SettingsDep, TemporalDep, existing_workspace_id, workspace_row
from api.errors import ApiError, OrchestratorUnavailable, is_temporal_unavailable
from api.openapi import AUTHENTICATED, errors
from api.schemas import ActionReply, BootstrapAccepted, BootstrapFailedBody, DeleteReply, RescueBundle
from domain.events import EventType
from domain.models import ActionResult, BootstrapFailedSignal, DeleteRequest, workflow_id_for
from domain.status import WorkspaceStatus
from domain.teardown import truncate_utf8
from domain.transitions import RESUMABLE, can_hibernate
from store import rescue as rescue_store
from store import workspaces as ws_store
from workflows.workspace import REJECT_EXTERNAL, REJECT_REMOVED, REJECT_STATE

log = logging.getLogger("molecule.api")
router = APIRouter(prefix="/workspaces", tags=["lifecycle"], dependencies=[Operator], responses=AUTHENTICATED)
admin_router = APIRouter(
    prefix="/admin/workspaces", tags=["admin"], dependencies=[Operator], responses=AUTHENTICATED
)
# An action on one workspace: a bad id, an unknown or removed workspace, a state the action does not
# apply to, and the workflow orchestrator refusing the update. Any POST body is size-capped.
ACTION_ERRORS = errors(400, 404, 409, 410, 502)

EXTERNAL_NOOP = "external agent: restart it on your side"


def removed_error(row: dict[str, Any]) -> ApiError:
    removed_at = row.get("removed_at")
    return ApiError(
        410,
        "workspace removed",
        "workspace_removed",
        id=row["id"],
        removed_at=removed_at.isoformat() if removed_at else None,
        hint="a removed workspace cannot come back: create a new one with POST /workspaces "
        "(same name, runtime and template); ?include_removed=true shows this one's teardown",
    )


async def load(pool: asyncpg.Pool, workspace_id: str) -> dict[str, Any]:
    """The row, or 400 (not a UUID) / 404 (unknown) / 410 (removed)."""
    row = await workspace_row(pool, workspace_id)
    if row["status"] == WorkspaceStatus.REMOVED:
        raise removed_error(row)
    return row


@dataclass(frozen=True)
class Updates:
    """Sends operator actions to workspace workflows and waits a bounded time for their answer."""

    client: Client
    timeout: float

    async def send(self, row: dict[str, Any], name: str, *args: Any) -> ActionResult:
        handle = self.client.get_workflow_handle(workflow_id_for(row["id"]))
        try:
            result: ActionResult = await asyncio.wait_for(
                handle.execute_update(name, args=list(args), result_type=ActionResult), self.timeout
            )
            return result
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            # No worker is running the workflow, or its store writes keep failing: say so instead of
            # holding the caller (the SDK reports the cancelled wait as its own error). An update the
            # workflow already accepted still completes later.
            raise ApiError(
                503,
                f"workspace {row['id']}: its workflow did not answer the {name} within {self.timeout:g}s "
                "(is a worker running, and can it reach PostgreSQL?); the action may still be applied, "
                f"check GET /workspaces/{row['id']}",
                "orchestrator_timeout",
            ) from None
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            kind = cause.type if isinstance(cause, ApplicationError) else None
            message = cause.message if isinstance(cause, ApplicationError) else str(err)
            if kind == REJECT_REMOVED:
                raise removed_error(row) from None
            if kind == REJECT_EXTERNAL:
                raise ApiError(409, message, "external_runtime") from None
            if kind == REJECT_STATE:
                raise ApiError(409, message, "invalid_state", current_status=row["status"]) from None
            raise
        except RPCError as err:
            if is_temporal_unavailable(err):
                raise OrchestratorUnavailable() from None
            if err.status == RPCStatusCode.NOT_FOUND:
                raise ApiError(
                    409, f"workspace {row['id']} has no running workflow", "workflow_not_running"
                ) from None
            raise


async def get_updates(client: TemporalDep, settings: SettingsDep) -> Updates:
    return Updates(client, settings.update_reply_timeout_seconds)


UpdatesDep = Annotated[Updates, Depends(get_updates)]


# --- delete -----------------------------------------------------------------------------------


async def _delete_one(pool: asyncpg.Pool, updates: Updates, row: dict[str, Any], req: DeleteRequest) -> str:
    """Delete through the workflow; a workspace whose workflow is gone is marked removed here and
    its instance left to the reconcile schedule (it reaps removed rows whose workflow is closed)."""
    try:
        result = await updates.send(row, "delete", req)
        return result.teardown or "pending"
    except ApiError as err:
        if err.code != "workflow_not_running":
            raise
    payload = {"cascade_deleted": req.cascade_deleted, "workflow": "not running"}
    await ws_store.apply_status_change(
        pool, row["id"], WorkspaceStatus.REMOVED, EventType.WORKSPACE_REMOVED, payload,
        f"api-delete:{row['id']}", None, False,
    )  # fmt: skip
    log.warning("workspace %s: deleted without a running workflow; reconcile reaps its instance", row["id"])
    return "pending"


async def _teardown_done(client: Client, workspace_ids: list[str]) -> None:
    async def one(workspace_id: str) -> None:
        try:
            await client.get_workflow_handle(workflow_id_for(workspace_id)).result()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise

    await asyncio.gather(*(one(w) for w in workspace_ids))


@router.delete(
    "/{workspace_id}",
    status_code=202,
    response_model=DeleteReply,
    responses={200: {"model": DeleteReply, "description": "teardown completed"}, **ACTION_ERRORS},
)
async def delete_workspace(
    workspace_id: str,
    pool: PoolDep,
    updates: UpdatesDep,
    confirm: bool = False,
    wait: float = Query(default=0, ge=0, le=300, description="seconds to wait for teardown to complete"),
) -> Any:
    row = await load(pool, workspace_id)
    tree = [d for d in await ws_store.descendants(pool, row["id"]) if d["status"] != WorkspaceStatus.REMOVED]
    if tree and not confirm:
        raise ApiError(
            409,
            f"workspace {row['id']} has {len(tree)} descendant workspace(s); "
            "repeat with ?confirm=true to delete them all",
            "confirmation_required",
            children=len(tree),
        )
    rows = [row] + [{"id": d["id"], "status": d["status"], "removed_at": None} for d in tree]
    requests = [DeleteRequest(cascade_deleted=len(tree))] + [
        DeleteRequest(cascade_of=row["id"]) for _ in tree
    ]
    states = await asyncio.gather(
        *(_delete_one(pool, updates, r, q) for r, q in zip(rows, requests, strict=True))
    )
    teardown = "complete" if all(s == "complete" for s in states) else "pending"
    if teardown == "pending" and wait > 0:
        try:
            await asyncio.wait_for(_teardown_done(updates.client, [r["id"] for r in rows]), wait)
            teardown = "complete"
        except TimeoutError:
            pass
    reply = DeleteReply(cascade_deleted=len(tree), teardown=teardown)  # type: ignore[arg-type]
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
async def restart_workspace(workspace_id: str, pool: PoolDep, updates: UpdatesDep) -> Any:
    row = await load(pool, workspace_id)
    if row["backend"] == "external":
        return JSONResponse({"status": "noop", "message": EXTERNAL_NOOP}, status_code=200)
    result = await updates.send(row, "restart")
    return ActionReply(status=result.status, coalesced=result.coalesced)


@router.post(
    "/{workspace_id}/pause",
    status_code=202,
    response_model=ActionReply,
    responses=ACTION_ERRORS | errors(413),
)
async def pause_workspace(workspace_id: str, pool: PoolDep, updates: UpdatesDep) -> ActionReply:
    row = await load(pool, workspace_id)
    below = [
        {"id": d["id"], "status": d["status"]}
        for d in await ws_store.descendants(pool, row["id"])
        if d["status"] not in (WorkspaceStatus.REMOVED, WorkspaceStatus.PAUSED)
    ]
    results = await asyncio.gather(*(updates.send(r, "pause") for r in [row, *below]))
    return ActionReply(status=results[0].status, cascade_paused=len(below))


@router.post(
    "/{workspace_id}/resume",
    status_code=202,
    response_model=ActionReply,
    responses=ACTION_ERRORS | errors(413),
)
async def resume_workspace(workspace_id: str, pool: PoolDep, updates: UpdatesDep) -> ActionReply:
    row = await load(pool, workspace_id)
    if row["status"] not in RESUMABLE:
        raise ApiError(
            409, f"only a paused or hibernated workspace resumes; it is {row['status']}", "invalid_state"
        )
    result = await updates.send(row, "resume")
    return ActionReply(status=result.status, coalesced=result.coalesced)


@router.post(
    "/{workspace_id}/hibernate",
    status_code=202,
    response_model=ActionReply,
    responses=ACTION_ERRORS | errors(413),
)
async def hibernate_workspace(workspace_id: str, pool: PoolDep, updates: UpdatesDep) -> ActionReply:
    row = await load(pool, workspace_id)
    if not can_hibernate(row["status"], row["active_tasks"]):
        raise ApiError(
            409,
            f"only an online or degraded workspace with no active task hibernates; it is {row['status']} "
            f"with {row['active_tasks']} active task(s)",
            "invalid_state",
        )
    result = await updates.send(row, "hibernate")
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
    workspace_id: str, body: BootstrapFailedBody, pool: PoolDep, client: TemporalDep
) -> dict[str, Any]:
    row = await load(pool, workspace_id)
    if row["status"] != WorkspaceStatus.PROVISIONING:
        raise ApiError(
            409, f"only a provisioning workspace can fail its boot; it is {row['status']}", "invalid_state",
            current_status=row["status"],
        )  # fmt: skip
    log_tail = truncate_utf8(body.log_tail)
    try:
        await client.get_workflow_handle(workflow_id_for(row["id"])).signal(
            "bootstrap_failed", BootstrapFailedSignal(log_tail)
        )
    except RPCError as err:
        if is_temporal_unavailable(err):
            raise OrchestratorUnavailable() from None
        raise
    return {"accepted": True, "log_tail_bytes": len(log_tail.encode())}
