"""ReconcileWorkflow: run by a Temporal Schedule (visible in the UI) to reap leaked instances."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from domain import contract
    from domain.models import ReconcileReport


@workflow.defn(name=contract.RECONCILE_WORKFLOW)
class ReconcileWorkflow:
    @workflow.run
    async def run(self) -> ReconcileReport:
        return await workflow.execute_activity(
            contract.reconcile,
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=5), maximum_attempts=3),
        )
