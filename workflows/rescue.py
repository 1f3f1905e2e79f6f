"""Rescue bundles from workflow code: evidence for a failed boot, captured after the verdict."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from domain import contract
    from domain.models import RescueRequest

_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
_BUDGET = timedelta(seconds=45)
# A burst of verdicts (50 workspaces created together share a deadline) must land on time: bundles,
# which take real work, wait this long after their own verdict so they never delay another's.
_AFTER = timedelta(seconds=2)


async def capture_after_the_verdict(request: RescueRequest) -> None:
    """Best effort: a bundle that cannot be captured within its budget is logged, never retried."""
    await workflow.sleep(_AFTER)
    try:
        await workflow.execute_activity(
            contract.capture_rescue, request, schedule_to_close_timeout=_BUDGET, retry_policy=_RETRY
        )
    except ActivityError:
        workflow.logger.warning("rescue bundle for %s not captured", request.workspace_id)
