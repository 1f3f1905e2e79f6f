"""ReconcileWorkflow: run by a Temporal Schedule (visible in the UI) to reap leaked instances."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

RECONCILE_WORKFLOW = "ReconcileWorkflow"


def schedule_id(task_queue: str) -> str:
    return f"molecule-reconcile-{task_queue}"


@workflow.defn(name=RECONCILE_WORKFLOW)
class ReconcileWorkflow:
    @workflow.run
    async def run(self) -> dict[str, Any]:
        report: dict[str, Any] = await workflow.execute_activity(
            "reconcile",
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=5), maximum_attempts=3),
            result_type=dict,
        )
        return report
