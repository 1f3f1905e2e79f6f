"""DelegationWorkflow: one task a workspace gave another, from dispatch to its answer or its timeout.

Durable where the system this replaces kept delegations in memory: a delegation survives a restart
of the API and the worker, a queued one waits (no polling) for the drain to say it was answered, and
every delegation ends completed or failed with a reason. The task and the answer stay in Postgres."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows.calls import store

with workflow.unsafe.imports_passed_through():
    from domain import contract
    from domain.contract import Signal
    from domain.models import (
        DelegationFinish,
        DelegationInput,
        DelegationOutcome,
        DelegationStatus,
        QueuedDelivery,
    )

_DISPATCH_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
# The dispatch waits for the target's answer; it heartbeats meanwhile, so a dead worker is noticed fast.
_DISPATCH_HEARTBEAT = timedelta(seconds=10)


@workflow.defn(name=contract.DELEGATION_WORKFLOW)
class DelegationWorkflow:
    def __init__(self) -> None:
        self.delivery: QueuedDelivery | None = None

    @workflow.signal(name=Signal.DELEGATION_DELIVERED)
    def delivered(self, delivery: QueuedDelivery) -> None:
        self.delivery = delivery

    def _remaining(self, deadline: float) -> float:
        return max(0.0, deadline - workflow.now().timestamp())

    @workflow.run
    async def run(self, inp: DelegationInput) -> str:
        deadline = workflow.now().timestamp() + inp.timeout_secs
        outcome = await self._dispatch(inp, deadline)
        if outcome.status == DelegationStatus.QUEUED:
            await store(
                contract.finish_delegation, DelegationFinish(inp.delegation_id, DelegationStatus.QUEUED)
            )
            try:
                await workflow.wait_condition(
                    lambda: self.delivery is not None, timeout=self._remaining(deadline)
                )
            except TimeoutError:
                outcome = DelegationOutcome(DelegationStatus.FAILED, self._timed_out(inp))
            else:
                assert self.delivery is not None
                if self.delivery.delivered and self.delivery.error is None:
                    outcome = DelegationOutcome(DelegationStatus.COMPLETED)
                else:
                    outcome = DelegationOutcome(
                        DelegationStatus.FAILED, self.delivery.error or "not delivered"
                    )
        status = outcome.status if outcome.status != DelegationStatus.PENDING else DelegationStatus.FAILED
        await store(contract.finish_delegation, DelegationFinish(inp.delegation_id, status, outcome.error))
        return status.value

    async def _dispatch(self, inp: DelegationInput, deadline: float) -> DelegationOutcome:
        """Send the task; a hibernated target is woken and tried again until the deadline."""
        while True:
            remaining = self._remaining(deadline)
            if remaining <= 0:
                return DelegationOutcome(DelegationStatus.FAILED, self._timed_out(inp))
            try:
                # Bounded by the deadline, retries included: a dispatch that keeps failing never
                # outlives the delegation (nor sends its task again after it).
                outcome = await workflow.execute_activity(
                    contract.dispatch_delegation,
                    inp,
                    schedule_to_close_timeout=timedelta(seconds=remaining),
                    heartbeat_timeout=_DISPATCH_HEARTBEAT,
                    retry_policy=_DISPATCH_RETRY,
                )
            except ActivityError:
                return DelegationOutcome(DelegationStatus.FAILED, "the task could not be dispatched in time")
            if outcome.status != DelegationStatus.PENDING:
                return outcome
            await workflow.sleep(min(float(outcome.retry_after or 15), max(remaining - 1, 1)))

    @staticmethod
    def _timed_out(inp: DelegationInput) -> str:
        return f"no answer from the target within {inp.timeout_secs} s"
