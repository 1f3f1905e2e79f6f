"""The cascade workflow's side effects: who is left to reach, and reaching one workspace through its
own workflow's update (so the workflow stays the only writer of that workspace's status)."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from domain import contract
from domain.contract import Rejection, Update, implements
from domain.events import EventType
from domain.models import (
    ActionResult,
    CascadeKind,
    CascadeRequest,
    CascadeTarget,
    DeleteRequest,
    PauseRequest,
    workflow_id_for,
)
from domain.status import WorkspaceStatus
from store import workspaces as ws_store

log = logging.getLogger("molecule.activities.cascade")

# Descendants a cascade still has to reach, by kind.
_DONE: dict[CascadeKind, frozenset[WorkspaceStatus]] = {
    CascadeKind.DELETE: frozenset({WorkspaceStatus.REMOVED}),
    CascadeKind.PAUSE: frozenset({WorkspaceStatus.REMOVED, WorkspaceStatus.PAUSED}),
}


class CascadeActivities:
    def __init__(self, pool: asyncpg.Pool, client: Client) -> None:
        self.pool = pool
        self.client = client

    @implements(contract.cascade_targets)
    async def cascade_targets(self, req: CascadeRequest) -> list[CascadeTarget]:
        below = await ws_store.descendants(self.pool, req.root_id)
        return [
            CascadeTarget(req.kind, d["id"], req.root_id)
            for d in below
            if WorkspaceStatus(d["status"]) not in _DONE[req.kind]
        ]

    @implements(contract.cascade_one)
    async def cascade_one(self, target: CascadeTarget) -> str:
        root = target.workspace_id == target.root_id
        cascade_of = None if root else target.root_id
        args: list[Any]
        if target.kind == CascadeKind.DELETE:
            name, args = (
                Update.DELETE,
                [DeleteRequest(cascade_deleted=target.descendants, cascade_of=cascade_of)],
            )
        else:
            name, args = Update.PAUSE, [PauseRequest(cascade_of=cascade_of)]
        handle = self.client.get_workflow_handle(workflow_id_for(target.workspace_id))
        try:
            result: ActionResult = await handle.execute_update(name, args=args, result_type=ActionResult)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == Rejection.REMOVED:
                return "removed"  # pausing a workspace that was deleted meanwhile: nothing to do
            raise
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise  # the retry policy keeps at it until the workspace is reached
            return await self._without_workflow(target, root)
        return result.teardown if target.kind == CascadeKind.DELETE and result.teardown else result.status

    async def _without_workflow(self, target: CascadeTarget, root: bool) -> str:
        """A workspace whose workflow is gone: a delete marks its row removed (reconcile reaps its
        instance, since its workflow is closed); a pause has nobody to stop, so it is skipped."""
        if target.kind == CascadeKind.PAUSE:
            return "no workflow"
        row = await ws_store.get_workspace(self.pool, target.workspace_id)
        if row is not None and row["status"] == WorkspaceStatus.REMOVED:
            return "complete" if (row["teardown"] or {}).get("complete") else "pending"
        payload: dict[str, Any] = {"cascade_deleted": target.descendants, "workflow": "not running"}
        if not root:
            payload["cascade_of"] = target.root_id
        await ws_store.apply_status_change(
            self.pool, target.workspace_id, WorkspaceStatus.REMOVED, EventType.WORKSPACE_REMOVED, payload,
            f"cascade-delete:{target.workspace_id}", None, False,
        )  # fmt: skip
        log.warning(
            "workspace %s: removed without a running workflow; reconcile reaps its instance",
            target.workspace_id,
        )
        return "pending"

    def all(self) -> list[Any]:
        return [self.cascade_targets, self.cascade_one]
