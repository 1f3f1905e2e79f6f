"""The workspace workflow's queue drain: a heartbeat that shows spare capacity while messages wait
is news; the drain activity dispatches them, and the delegations among them are told the outcome."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from domain import contract
    from domain.a2a import AGENT_CALL_CEILING_SECONDS
    from domain.contract import Signal
    from domain.models import DrainRequest

_DRAIN_TIMEOUT = timedelta(seconds=AGENT_CALL_CEILING_SECONDS + 120)
_DRAIN_HEARTBEAT = timedelta(seconds=30)
_DRAIN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=10
)


class QueueDrainer:
    def __init__(self, workspace_id: str) -> None:
        self.workspace_id = workspace_id
        self._capacity = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def done(self) -> bool:
        return self._task is None or self._task.done()

    def cancel(self) -> None:
        """Stop the drain under way (its activity is cancelled; its entries are taken again later)."""
        self._capacity = 0
        if not self.done:
            assert self._task is not None
            self._task.cancel()

    def request(self, capacity: int) -> None:
        """Drain now, or again as soon as the drain under way ends."""
        self._capacity = max(self._capacity, capacity, 1)
        if self.done:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self._capacity:
            if workflow.info().is_continue_as_new_suggested():
                # Let the workflow continue as new: the next heartbeat with room drains the rest.
                self._capacity = 0
                return
            capacity, self._capacity = self._capacity, 0
            try:
                report = await workflow.execute_activity(
                    contract.drain_queue,
                    DrainRequest(self.workspace_id, capacity),
                    start_to_close_timeout=_DRAIN_TIMEOUT,
                    heartbeat_timeout=_DRAIN_HEARTBEAT,
                    retry_policy=_DRAIN_RETRY,
                )
            except asyncio.CancelledError:
                return
            except ActivityError:
                # Entries it claimed are taken again after their lease; the next heartbeat with
                # capacity drains the rest.
                workflow.logger.warning("workspace %s: queue drain failed", self.workspace_id)
                return
            for delivery in report.deliveries:
                handle = workflow.get_external_workflow_handle(
                    contract.delegation_workflow_id(delivery.delegation_id)
                )
                try:
                    await handle.signal(Signal.DELEGATION_DELIVERED, delivery)
                except Exception:  # noqa: S112 - the delegation already ended (it timed out): nothing to tell
                    continue
            # An agent that just answered has room again: keep going while messages wait.
            if report.completed and report.remaining:
                self._capacity = max(self._capacity, report.completed)
