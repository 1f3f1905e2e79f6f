"""CascadeWorkflow: a delete or pause that reaches a workspace and every live descendant.

The API starts it and waits (bounded) for its answer; from then on it belongs to Temporal, so it
finishes whatever happens to the API, and a child whose update fails is retried until it is
reached. Started again for a root that is already removed, it finishes any descendant still live."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from domain import contract
    from domain.models import CascadeReport, CascadeRequest, CascadeTarget

_DB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
# Each descendant's update is retried until it lands (a worker down, a workflow busy): never skipped.
_UNTIL_REACHED = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
# A descendant created while the cascade ran is picked up by the next look; the parent being removed
# stops new ones, so a few looks are enough.
_MAX_ROUNDS = 5


@workflow.defn(name=contract.CASCADE_WORKFLOW)
class CascadeWorkflow:
    @workflow.run
    async def run(self, req: CascadeRequest) -> CascadeReport:
        report = CascadeReport()
        root = CascadeTarget(req.kind, req.root_id, req.root_id, descendants=req.descendants)
        report.root = await self._reach(root)
        for _ in range(_MAX_ROUNDS):
            targets = await workflow.execute_activity(
                contract.cascade_targets,
                req,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=_DB_RETRY,
            )
            # Each one is reached once: a descendant with no workflow stays unpaused, and asking it
            # again in the next look would change nothing.
            targets = [t for t in targets if t.workspace_id not in report.reached]
            if not targets:
                break
            outcomes = await asyncio.gather(*(self._reach(t) for t in targets))
            for target, outcome in zip(targets, outcomes, strict=True):
                report.reached[target.workspace_id] = outcome
        return report

    async def _reach(self, target: CascadeTarget) -> str:
        return await workflow.execute_activity(
            contract.cascade_one,
            target,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=_UNTIL_REACHED,
        )
