"""The API's one door to Temporal: start, signal, update and wait for workspace workflows and
cascades, with every Temporal failure turned into the HTTP error the routes reply with. Routes call
this and nothing else of Temporal; the names come from domain.contract."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ApiError, OrchestratorUnavailable, is_temporal_unavailable
from domain import contract
from domain import search_attributes as sa
from domain.contract import Rejection, Signal, Update
from domain.models import (
    ActionResult,
    CascadeReport,
    CascadeRequest,
    DelegationInput,
    QueuedDelivery,
    WorkspaceInput,
    workflow_id_for,
)
from domain.status import WorkspaceStatus

log = logging.getLogger("molecule.api")


class WorkflowNotRunning(ApiError):
    def __init__(self, workspace_id: str) -> None:
        super().__init__(409, f"workspace {workspace_id} has no running workflow", "workflow_not_running")


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


@contextmanager
def _temporal_errors(workspace_id: str, *, not_found_is_gone: bool = True) -> Iterator[None]:
    """Temporal down → 503; NOT_FOUND on a call to an existing workflow → its workflow is gone (on
    a start it means the namespace is missing: left to the generic 502)."""
    try:
        yield
    except RPCError as err:
        if is_temporal_unavailable(err):
            raise OrchestratorUnavailable() from None
        if not_found_is_gone and err.status == RPCStatusCode.NOT_FOUND:
            raise WorkflowNotRunning(workspace_id) from None
        raise


class WorkflowGateway:
    def __init__(
        self, client: Callable[[], Awaitable[Client]], task_queue: str, reply_timeout: float
    ) -> None:
        self._client = client
        self.task_queue = task_queue
        self.reply_timeout = reply_timeout

    async def client(self) -> Client:
        return await self._client()

    async def check_health(self, seconds: float) -> None:
        """Raises when the Temporal frontend does not answer its health check within `seconds`."""
        client = await self.client()
        await asyncio.wait_for(client.service_client.check_health(), seconds)

    async def _handle(self, workspace_id: str) -> WorkflowHandle[Any, Any]:
        return (await self.client()).get_workflow_handle(workflow_id_for(workspace_id))

    # --- workspace workflows --------------------------------------------------------------------

    async def start_workspace(self, inp: WorkspaceInput, status: WorkspaceStatus) -> WorkflowHandle[Any, Any]:
        with _temporal_errors(inp.workspace_id, not_found_is_gone=False):
            return await (await self.client()).start_workflow(
                contract.WORKSPACE_WORKFLOW,
                inp,
                id=workflow_id_for(inp.workspace_id),
                task_queue=self.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.WORKSPACE_STATUS, status.value),
                        SearchAttributePair(sa.WORKSPACE_RUNTIME, inp.runtime),
                        SearchAttributePair(sa.WORKSPACE_BACKEND, inp.backend),
                        SearchAttributePair(sa.LEAK_SUSPECT, False),
                    ]
                ),
            )

    async def terminate_quietly(self, handle: WorkflowHandle[Any, Any], reason: str) -> None:
        try:
            await handle.terminate(reason=reason)
        except Exception:
            log.warning("could not terminate %s (%s); it ends itself without its row", handle.id, reason)

    async def signal(self, workspace_id: str, signal: Signal, arg: object) -> None:
        with _temporal_errors(workspace_id):
            await (await self._handle(workspace_id)).signal(signal, arg)

    async def update(self, row: dict[str, Any], update: Update, *args: Any) -> ActionResult:
        """Send an operator action and wait at most UPDATE_REPLY_TIMEOUT_SECONDS for the answer."""
        workspace_id = row["id"]
        handle = await self._handle(workspace_id)
        try:
            with _temporal_errors(workspace_id):
                result: ActionResult = await asyncio.wait_for(
                    handle.execute_update(update, args=list(args), result_type=ActionResult),
                    self.reply_timeout,
                )
                return result
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            # No worker is running the workflow, or its store writes keep failing: say so instead of
            # holding the caller (the SDK reports the cancelled wait as its own error). An update the
            # workflow already accepted still completes later.
            raise self._timeout(workspace_id, update) from None
        except WorkflowUpdateFailedError as err:
            raise self._rejection(row, err) from None

    def _timeout(self, workspace_id: str, action: str) -> ApiError:
        return ApiError(
            503,
            f"workspace {workspace_id}: its workflow did not answer the {action} "
            f"within {self.reply_timeout:g}s "
            "(is a worker running, and can it reach PostgreSQL?); the action may still be applied, "
            f"check GET /workspaces/{workspace_id}",
            "orchestrator_timeout",
        )

    @staticmethod
    def _rejection(row: dict[str, Any], err: WorkflowUpdateFailedError) -> Exception:
        cause = err.cause
        kind = cause.type if isinstance(cause, ApplicationError) else None
        message = cause.message if isinstance(cause, ApplicationError) else str(err)
        if kind == Rejection.REMOVED:
            return removed_error(row)
        if kind == Rejection.EXTERNAL:
            return ApiError(409, message, "external_runtime")
        if kind == Rejection.INVALID_STATE:
            return ApiError(409, message, "invalid_state", current_status=row["status"])
        return err

    async def wait_closed(self, workspace_ids: list[str], seconds: float) -> bool:
        """Wait until every one of these workflows has completed (teardown done); False on timeout."""

        async def one(workspace_id: str) -> bool:
            try:
                return bool(await (await self._handle(workspace_id)).result() == "removed")
            except WorkflowFailureError:
                return False  # terminated, failed or timed out: closed, but not torn down
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND and not is_temporal_unavailable(err):
                    raise
                return False  # no such workflow (any more): nothing says its teardown finished

        try:
            done = await asyncio.wait_for(asyncio.gather(*(one(w) for w in workspace_ids)), seconds)
        except TimeoutError:
            return False
        return all(done)

    # --- cascades -------------------------------------------------------------------------------

    async def cascade(self, req: CascadeRequest) -> CascadeReport:
        """Run a delete or pause over a workspace and its live descendants as a workflow, and wait
        (bounded) for its answer. A cascade already running for this root is joined, not repeated."""
        client = await self.client()
        workflow_id = contract.cascade_workflow_id(req.kind, req.root_id)
        with _temporal_errors(req.root_id, not_found_is_gone=False):
            try:
                handle = await client.start_workflow(
                    contract.CASCADE_WORKFLOW,
                    req,
                    id=workflow_id,
                    task_queue=self.task_queue,
                    result_type=CascadeReport,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                )
            except WorkflowAlreadyStartedError:
                handle = client.get_workflow_handle(workflow_id, result_type=CascadeReport)
            try:
                return await asyncio.wait_for(handle.result(), self.reply_timeout)
            except TimeoutError:
                raise self._timeout(req.root_id, f"{req.kind} cascade") from None
            except WorkflowFailureError:
                log.error("cascade %s failed or was terminated", workflow_id)
                raise ApiError(
                    502,
                    f"the {req.kind} cascade of {req.root_id} failed; retry the request",
                    "cascade_failed",
                ) from None

    # --- agent-to-agent -------------------------------------------------------------------------

    async def wake(self, workspace_id: str) -> None:
        """Tell a hibernated workspace's workflow to resume; a call that finds it hibernated does not
        wait for the answer, and a wake already under way (or refused) changes nothing."""
        try:
            handle = await self._handle(workspace_id)
            await asyncio.wait_for(
                handle.execute_update(Update.RESUME, result_type=ActionResult), self.reply_timeout
            )
        except Exception as exc:  # the caller already has its 503 waking; the next call retries
            log.info("workspace %s: wake not applied (%s)", workspace_id, type(exc).__name__)

    async def start_delegation(self, inp: DelegationInput) -> None:
        """Start the delegation's workflow; one already started for this id is left to run."""
        with _temporal_errors(inp.source_id, not_found_is_gone=False):
            try:
                await (await self.client()).start_workflow(
                    contract.DELEGATION_WORKFLOW,
                    inp,
                    id=contract.delegation_workflow_id(inp.delegation_id),
                    task_queue=self.task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                )
            except WorkflowAlreadyStartedError:
                pass

    async def delegation_delivered(self, delivery: QueuedDelivery) -> None:
        """Tell a delegation what became of its queued message; one that already ended is left alone."""
        client = await self.client()
        handle = client.get_workflow_handle(contract.delegation_workflow_id(delivery.delegation_id))
        try:
            await handle.signal(Signal.DELEGATION_DELIVERED, delivery)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
