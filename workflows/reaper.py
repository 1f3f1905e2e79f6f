"""ReaperWorkflow: keeps at the instances a workspace moved on from, so the workspace need not wait."""

from __future__ import annotations

from temporalio import workflow

from workflows.stopping import stop_once

with workflow.unsafe.imports_passed_through():
    from domain import contract
    from domain.models import InstanceReaped, ReapRequest, StopRequest
    from domain.teardown import LEAK_SUSPECT_AFTER, stop_backoff


@workflow.defn(name=contract.REAPER_WORKFLOW)
class ReaperWorkflow:
    """Keeps stopping the instances a workspace has moved on from, until they are gone."""

    def __init__(self) -> None:
        self._retry_now = False

    @workflow.signal(name=contract.Signal.RETRY_NOW)
    def retry_now(self) -> None:
        self._retry_now = True

    @workflow.run
    async def run(self, req: ReapRequest) -> int:
        stop = StopRequest(req.workspace_id, req.backend, req.instance_id, req.below_generation)
        attempts = 0
        while not await stop_once(stop):
            attempts += 1
            # The capped backoff, cut short when the workspace's own teardown confirmed them gone.
            try:
                await workflow.wait_condition(
                    lambda: self._retry_now, timeout=stop_backoff(LEAK_SUSPECT_AFTER + attempts)
                )
            except TimeoutError:
                pass
            self._retry_now = False
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(req)
        parent = workflow.get_external_workflow_handle(req.parent_workflow_id)
        try:
            await parent.signal(contract.Signal.INSTANCE_REAPED, InstanceReaped(req.instance_id))
        except Exception:
            workflow.logger.info("workspace workflow %s no longer running", req.parent_workflow_id)
        return attempts
