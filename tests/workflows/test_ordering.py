"""Issue 10: status writes reach the store in the workflow's order; cascades are driven by Temporal
and reach every descendant even when an update fails; the deadline counts from the row's created_at."""

from __future__ import annotations

import asyncio
import uuid

from temporalio.client import WorkflowUpdateStage
from temporalio.worker import Worker

from domain import contract
from domain.contract import Signal, Update
from domain.models import (
    ActionResult,
    CascadeKind,
    CascadeReport,
    CascadeRequest,
    HeartbeatSignal,
    PauseRequest,
    RegisterSignal,
    WorkspaceInput,
    workflow_id_for,
)
from tests.workflows.fakes import FakeActivities
from tests.workflows.harness import make_catalog, manifest, provisioning
from workers.main import WORKFLOWS


async def test_a_pause_during_a_slow_online_write_leaves_the_row_paused(time_env, tmp_path, settings_factory):
    catalog = make_catalog(tmp_path, {"claude-code": manifest("claude-code", timeout=600)})
    async with provisioning(time_env, "claude-code", settings_factory(None), catalog) as run:
        gate = asyncio.Event()
        run.fake.status_gates["online"] = gate
        await run.handle.signal(Signal.REGISTER, RegisterSignal("http://agent:1", {}))
        await run.fake.wait_until(lambda: run.fake.held == ["online"])  # the ONLINE write is in flight
        # The pause is running in the workflow while the ONLINE write is still in flight.
        pause = await run.handle.start_update(
            Update.PAUSE,
            PauseRequest(),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            result_type=ActionResult,
        )
        gate.set()
        assert (await pause.result()).status == "paused"
        await run.fake.wait_until(lambda: run.fake.row_status == "paused")
        state = await run.state()
        assert state.status == "paused"
        assert run.fake.row_status == state.status
        assert run.fake.statuses() == ["online", "paused"], "written in the workflow's order"
        seqs = [c.seq for c, _ in run.fake.changes]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_the_deadline_counts_from_the_rows_created_at(time_env, tmp_path, settings_factory):
    catalog = make_catalog(tmp_path, {"claude-code": manifest("claude-code", timeout=600)})
    fake = FakeActivities(time_env, settings_factory(None), catalog)
    task_queue, workspace_id = f"tq-{uuid.uuid4()}", str(uuid.uuid4())
    created_at = (await time_env.get_current_time()).timestamp() - 5.0  # the create was 5 s ago
    async with Worker(time_env.client, task_queue=task_queue, workflows=WORKFLOWS, activities=fake.all()):
        await time_env.client.start_workflow(
            contract.WORKSPACE_WORKFLOW,
            WorkspaceInput(workspace_id, "claude-code", "process", created_at=created_at),
            id=workflow_id_for(workspace_id),
            task_queue=task_queue,
        )
        await fake.wait_until(lambda: bool(fake.starts))
        assert fake.starts[0].deadline_at == created_at + 600
        await time_env.sleep(590)
        _, at = await fake.wait_for_status("failed")
        assert abs(at.timestamp() - (created_at + 600)) < 1


async def cascade(time_env, fake: FakeActivities, kind: CascadeKind) -> CascadeReport:
    task_queue, root = f"tq-{uuid.uuid4()}", str(uuid.uuid4())
    async with Worker(time_env.client, task_queue=task_queue, workflows=WORKFLOWS, activities=fake.all()):
        report: CascadeReport = await time_env.client.execute_workflow(
            contract.CASCADE_WORKFLOW,
            CascadeRequest(kind, root, len(fake.cascade_below)),
            id=contract.cascade_workflow_id(kind, root),
            task_queue=task_queue,
            result_type=CascadeReport,
        )
    fake.cascade_calls.remove(root)
    return report


async def test_a_cascade_whose_second_child_fails_still_reaches_every_descendant(
    time_env, tmp_path, settings_factory
):
    fake = FakeActivities(time_env, settings_factory(None), make_catalog(tmp_path, {}))
    children = [str(uuid.uuid4()) for _ in range(3)]
    fake.cascade_below = children
    fake.cascade_failures = {children[1]: 4}  # its update fails four times, then lands
    report = await cascade(time_env, fake, CascadeKind.DELETE)
    assert sorted(report.reached) == sorted(children)
    assert sorted(fake.reached[1:]) == sorted(children), "root first, then every child"
    assert fake.cascade_calls.count(children[1]) == 5 and fake.cascade_calls.count(children[0]) == 1


async def test_a_pause_cascade_reports_each_descendant(time_env, tmp_path, settings_factory):
    fake = FakeActivities(time_env, settings_factory(None), make_catalog(tmp_path, {}))
    fake.cascade_below = [str(uuid.uuid4())]
    report = await cascade(time_env, fake, CascadeKind.PAUSE)
    assert report.root == "paused" and list(report.reached.values()) == ["paused"]


async def online_with_a_write_in_flight(run) -> asyncio.Event:
    """An online workspace whose main loop is busy with a held DEGRADED write, so the updates that
    follow queue up behind it; the returned gate releases the write."""
    await run.handle.signal(Signal.REGISTER, RegisterSignal("http://agent:1", {}))
    await run.fake.wait_until(lambda: run.fake.row_status == "online")
    gate = asyncio.Event()
    run.fake.status_gates["degraded"] = gate
    await run.handle.signal(Signal.HEARTBEAT, HeartbeatSignal(error_rate=0.9))
    await run.fake.wait_until(lambda: run.fake.held == ["degraded"])
    return gate


async def accepted(run, update: Update, *args):
    return await run.handle.start_update(
        update, args=list(args), wait_for_stage=WorkflowUpdateStage.ACCEPTED, result_type=ActionResult
    )


async def test_a_pause_after_a_queued_restart_wins(time_env, tmp_path, settings_factory):
    catalog = make_catalog(tmp_path, {"claude-code": manifest("claude-code", timeout=600)})
    async with provisioning(time_env, "claude-code", settings_factory(None), catalog) as run:
        gate = await online_with_a_write_in_flight(run)
        restart = await accepted(run, Update.RESTART)
        pause = await accepted(run, Update.PAUSE, PauseRequest())
        gate.set()
        assert (await restart.result()).status == "provisioning"
        assert (await pause.result()).status == "paused"
        await time_env.sleep(3600)
        state = await run.state()
        assert state.status == "paused" and run.fake.row_status == "paused", run.fake.statuses()
        assert len(run.fake.starts) == 1, "the restart asked for before the pause never ran"
        resumed = await run.handle.execute_update(Update.RESUME, result_type=ActionResult)
        assert resumed.status == "provisioning" and not resumed.coalesced
        await run.fake.wait_until(lambda: len(run.fake.starts) == 2)


async def test_a_pause_after_a_hibernate_wins(time_env, tmp_path, settings_factory):
    catalog = make_catalog(tmp_path, {"claude-code": manifest("claude-code", timeout=600)})
    async with provisioning(time_env, "claude-code", settings_factory(None), catalog) as run:
        gate = await online_with_a_write_in_flight(run)
        hibernate = await accepted(run, Update.HIBERNATE)
        pause = await accepted(run, Update.PAUSE, PauseRequest())
        gate.set()
        assert (await hibernate.result()).status == "hibernating"
        assert (await pause.result()).status == "paused"
        await time_env.sleep(60)
        state = await run.state()
        assert state.status == "paused" and run.fake.row_status == "paused", run.fake.statuses()
        assert run.fake.statuses()[-2:] == ["hibernating", "paused"]


async def test_a_beat_from_the_old_generation_during_a_restart_is_ignored(
    time_env, tmp_path, settings_factory
):
    catalog = make_catalog(tmp_path, {"claude-code": manifest("claude-code", timeout=600)})
    async with provisioning(time_env, "claude-code", settings_factory(None), catalog) as run:
        old_token = 101  # the fake's token for generation 1
        await run.handle.signal(Signal.REGISTER, RegisterSignal("http://agent:1", {}, token_id=old_token))
        await run.fake.wait_until(lambda: run.fake.row_status == "online")
        run.fake.stop_gate = asyncio.Event()
        await run.handle.execute_update(Update.RESTART, result_type=ActionResult)
        await run.fake.wait_until(lambda: len(run.fake.stops) == 1)  # stopping the old instance
        # The old agent, still running, beats; the row says provisioning, so the API signals it.
        await run.handle.signal(Signal.HEARTBEAT, HeartbeatSignal(token_id=old_token))
        run.fake.stop_gate.set()
        await run.fake.wait_until(lambda: len(run.fake.starts) == 2)
        state = await run.state()
        assert run.fake.statuses() == ["online", "provisioning"], "the old instance's beat counted"
        assert state.deadline_at is not None, "the new generation keeps its deadline"
        await run.handle.signal(Signal.REGISTER, RegisterSignal("http://agent:2", {}, token_id=102))
        await run.fake.wait_until(lambda: run.fake.row_status == "online")
