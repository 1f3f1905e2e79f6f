"""DelegationWorkflow on the time-skipping server: queued → answered, queued → timed out, the wake
retry, and the workspace workflow's drain telling a delegation its queued message was answered."""

from __future__ import annotations

import uuid

from temporalio.worker import Worker

from domain import contract
from domain.contract import Signal
from domain.models import (
    DelegationInput,
    DelegationOutcome,
    DelegationStatus,
    DrainReport,
    DrainSignal,
    QueuedDelivery,
    RegisterSignal,
)
from tests.workflows.fakes import FakeActivities
from tests.workflows.harness import make_catalog, manifest, provisioning
from workers.main import WORKFLOWS


def fake_for(time_env, tmp_path, settings_factory) -> FakeActivities:
    catalog = make_catalog(tmp_path, {"claude-code": manifest("claude-code", timeout=600)})
    return FakeActivities(time_env, settings_factory(None), catalog)


def delegation(timeout: int = 600) -> DelegationInput:
    return DelegationInput(str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()), timeout)


async def run_delegation(time_env, fake: FakeActivities, inp: DelegationInput) -> str:
    """Run one delegation to its end on a worker with the fakes; its result."""
    task_queue = f"tq-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=task_queue, workflows=WORKFLOWS, activities=fake.all()):
        result: str = await time_env.client.execute_workflow(
            contract.DELEGATION_WORKFLOW,
            inp,
            id=contract.delegation_workflow_id(inp.delegation_id),
            task_queue=task_queue,
        )
    return result


async def test_a_queued_delegation_completes_when_the_drain_delivers_it(time_env, tmp_path, settings_factory):
    fake = fake_for(time_env, tmp_path, settings_factory)
    fake.dispatch_outcomes = [DelegationOutcome(DelegationStatus.QUEUED)]
    inp, task_queue = delegation(), f"tq-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=task_queue, workflows=WORKFLOWS, activities=fake.all()):
        handle = await time_env.client.start_workflow(
            contract.DELEGATION_WORKFLOW,
            inp,
            id=contract.delegation_workflow_id(inp.delegation_id),
            task_queue=task_queue,
        )
        await fake.wait_until(lambda: [f.status for f in fake.finished] == [DelegationStatus.QUEUED])
        await time_env.sleep(300)  # waits (no polling) however long the target stays busy
        assert [f.status for f in fake.finished] == [DelegationStatus.QUEUED]
        await handle.signal(Signal.DELEGATION_DELIVERED, QueuedDelivery(inp.delegation_id, True))
        assert await handle.result() == "completed"
    assert [f.status for f in fake.finished] == [DelegationStatus.QUEUED, DelegationStatus.COMPLETED]


async def test_a_queued_delegation_fails_with_a_reason_at_its_timeout(time_env, tmp_path, settings_factory):
    fake = fake_for(time_env, tmp_path, settings_factory)
    fake.dispatch_outcomes = [DelegationOutcome(DelegationStatus.QUEUED)]
    result = await run_delegation(time_env, fake, delegation(timeout=900))
    assert result == "failed"
    last = fake.finished[-1]
    assert last.status == DelegationStatus.FAILED and last.error == "no answer from the target within 900 s"


async def test_a_hibernated_target_is_tried_again_after_its_wake(time_env, tmp_path, settings_factory):
    fake = fake_for(time_env, tmp_path, settings_factory)
    fake.dispatch_outcomes = [
        DelegationOutcome(DelegationStatus.PENDING, "waking", retry_after=15),
        DelegationOutcome(DelegationStatus.COMPLETED),
    ]
    result = await run_delegation(time_env, fake, delegation())
    assert result == "completed" and len(fake.dispatches) == 2
    assert [f.status for f in fake.finished] == [DelegationStatus.COMPLETED]


async def test_a_dispatch_that_keeps_failing_ends_failed_at_the_deadline(
    time_env, tmp_path, settings_factory
):
    fake = fake_for(time_env, tmp_path, settings_factory)
    fake.dispatch_outcomes = [None] * 10_000  # every attempt raises
    result = await run_delegation(time_env, fake, delegation(timeout=120))
    assert result == "failed"
    assert fake.finished[-1].error == "the task could not be dispatched in time"
    attempts = len(fake.dispatches)
    assert 1 < attempts < 10_000  # retried, then stopped by the deadline (not retried forever)


async def test_the_drain_tells_the_delegation_its_message_was_answered(time_env, tmp_path, settings_factory):
    catalog = make_catalog(tmp_path, {"claude-code": manifest("claude-code", timeout=600)})
    async with provisioning(time_env, "claude-code", settings_factory(None), catalog) as run:
        fake = run.fake
        inp = delegation()
        fake.dispatch_outcomes = [DelegationOutcome(DelegationStatus.QUEUED)]
        fake.drain_reports = [
            DrainReport(dispatched=1, completed=1, deliveries=[QueuedDelivery(inp.delegation_id, True)])
        ]
        # A drain signal before the agent is online is not acted on.
        await run.handle.signal(Signal.DRAIN_QUEUE, DrainSignal(capacity=1))
        await run.handle.signal(Signal.REGISTER, RegisterSignal("http://agent:1", {}))
        await fake.wait_for_status("online")
        task_queue = (await run.handle.describe()).task_queue
        handle = await time_env.client.start_workflow(
            contract.DELEGATION_WORKFLOW,
            inp,
            id=contract.delegation_workflow_id(inp.delegation_id),
            task_queue=task_queue,
        )
        await fake.wait_until(lambda: [f.status for f in fake.finished] == [DelegationStatus.QUEUED])
        await run.handle.signal(Signal.DRAIN_QUEUE, DrainSignal(capacity=2))
        assert await handle.result() == "completed"
        assert [(d.workspace_id, d.capacity) for d in fake.drains] == [
            (run.handle.id.removeprefix("workspace-"), 2)
        ]
