"""Delete, restart, pause, hibernate and the rescue grace as workflow logic (time-skipping server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio.client import WorkflowUpdateFailedError

from domain.failures import STOP_FAILED
from domain.models import ActionResult, BootstrapFailedSignal, DeleteRequest, RegisterSignal
from domain.search_attributes import LEAK_SUSPECT
from tests.workflows.harness import Running, make_catalog, manifest, provisioning
from workflows.workspace import WorkspaceWorkflow


@asynccontextmanager
async def workspace(
    time_env, tmp_path, settings_factory, *, register: bool = True, idle_minutes: int = 0, timeout: int = 600
) -> AsyncIterator[Running]:
    catalog = make_catalog(tmp_path, {"claude-code": manifest("claude-code", timeout=timeout)})
    settings = settings_factory(None)
    settings.rescue_grace_seconds = 3600
    async with provisioning(
        time_env, "claude-code", settings, catalog, hibernation_idle_minutes=idle_minutes
    ) as run:
        if register:
            await run.advance_to(10)
            await run.handle.signal(WorkspaceWorkflow.register, RegisterSignal("http://agent:1", {}))
            await run.fake.wait_for_status("online")
        yield run


async def delete(run: Running) -> ActionResult:
    result = await run.handle.execute_update("delete", DeleteRequest(), result_type=ActionResult)
    return result


async def leak_suspect(run: Running) -> bool | None:
    description = await run.env.client.get_workflow_handle(run.handle.id).describe()
    return description.typed_search_attributes.get(LEAK_SUSPECT)


def event_types(run: Running) -> list[str]:
    return [e.event_type for e in run.fake.events]


async def test_delete_removes_at_once_then_stops_before_removing_volumes(
    time_env, tmp_path, settings_factory
):
    async with workspace(time_env, tmp_path, settings_factory) as run:
        run.fake.stop_failures = 2
        result = await delete(run)
        assert result.status == "removed" and result.teardown == "pending"
        assert run.fake.statuses()[-1] == "removed"
        assert await run.handle.result() == "removed"
        assert len(run.fake.stops) == 3
        _, stops_before = run.fake.volume_removals[0]
        assert stops_before == 1, "volumes are removed only after a confirmed stop"
        assert run.fake.teardowns[-1].teardown.complete
        assert run.fake.teardowns[-1].teardown.attempts == 2
        assert "WORKSPACE_LEAK_SUSPECT" not in event_types(run), "two failures are not a leak yet"
        again = await run.env.client.get_workflow_handle(run.handle.id).describe()
        assert again.status is not None and again.status.name == "COMPLETED"


async def test_stop_always_failing_is_a_leak_suspect_after_three_and_never_given_up(
    time_env, tmp_path, settings_factory
):
    async with workspace(time_env, tmp_path, settings_factory) as run:
        run.fake.stop_failures = -1
        await delete(run)
        await run.fake.wait_until(lambda: "WORKSPACE_LEAK_SUSPECT" in event_types(run))
        leak = run.fake.events[event_types(run).index("WORKSPACE_LEAK_SUSPECT")]
        assert leak.payload["attempts"] == 3
        assert leak.payload["instance_id"] == f"fake:{leak.workspace_id}:1"
        # Events carry the failure's class in fixed words; the backend's own text stays in the log.
        assert leak.payload["last_error"] == STOP_FAILED
        assert all("injected" not in str(e.payload) for e in run.fake.events)
        assert await leak_suspect(run) is True
        await run.env.sleep(3 * 3600)
        await run.fake.wait_until(lambda: len(run.fake.stops) >= 40)
        assert run.fake.volume_removals == [], "never removed while the instance may still run"
        assert run.fake.teardowns[-1].teardown.leak_suspect


async def test_stop_succeeding_after_fifty_failures_clears_the_leak_and_completes(
    time_env, tmp_path, settings_factory
):
    async with workspace(time_env, tmp_path, settings_factory) as run:
        run.fake.stop_failures = 50
        await delete(run)
        assert await run.handle.result() == "removed"
        assert len(run.fake.stops) == 51
        assert len(run.fake.volume_removals) == 1 and run.fake.volume_removals[0][1] == 1
        assert await leak_suspect(run) is False
        assert event_types(run) == [
            "WORKSPACE_LEAK_SUSPECT",
            "WORKSPACE_LEAK_CLEARED",
            "WORKSPACE_TEARDOWN_COMPLETE",
        ]
        final = run.fake.teardowns[-1].teardown
        assert final.complete and final.instance_stopped and final.volumes_removed and not final.leak_suspect
        assert final.attempts == 50


async def test_delete_twice_is_idempotent(time_env, tmp_path, settings_factory):
    async with workspace(time_env, tmp_path, settings_factory) as run:
        run.fake.stop_failures = -1  # keep the teardown pending so the second delete finds it running
        first = await delete(run)
        second = await delete(run)
        assert (first.status, second.status) == ("removed", "removed")
        assert run.fake.statuses().count("removed") == 1


async def test_restarts_while_one_is_in_flight_are_coalesced(time_env, tmp_path, settings_factory):
    async with workspace(time_env, tmp_path, settings_factory) as run:
        run.fake.stop_failures = 2  # the first restart is busy stopping for ~3 s
        first = await run.handle.execute_update(WorkspaceWorkflow.restart)
        second = await run.handle.execute_update(WorkspaceWorkflow.restart)
        assert first.status == "provisioning" and not first.coalesced
        assert second.coalesced
        await run.fake.wait_until(lambda: len(run.fake.starts) == 2)
        await run.env.sleep(60)
        assert len(run.fake.starts) == 2, "never two instances"
        assert [s.generation for s in run.fake.starts] == [1, 2]


async def test_restart_is_rejected_once_removed(time_env, tmp_path, settings_factory):
    async with workspace(time_env, tmp_path, settings_factory) as run:
        run.fake.stop_failures = -1
        await delete(run)
        try:
            await run.handle.execute_update(WorkspaceWorkflow.restart)
            raise AssertionError("restart of a removed workspace was accepted")
        except WorkflowUpdateFailedError as err:
            assert "removed" in str(err.cause)


async def test_pause_blocks_the_deadline_and_resume_reprovisions(time_env, tmp_path, settings_factory):
    async with workspace(time_env, tmp_path, settings_factory, register=False, timeout=60) as run:
        paused = await run.handle.execute_update("pause", result_type=ActionResult)
        assert paused.status == "paused"
        await run.fake.wait_until(lambda: len(run.fake.stopped) == 1)
        await run.env.sleep(600)  # far past the 60 s deadline
        assert run.fake.statuses() == ["paused"]
        assert run.fake.volume_removals == [], "pause keeps the volumes"
        resumed = await run.handle.execute_update(WorkspaceWorkflow.resume)
        assert resumed.status == "provisioning"
        await run.fake.wait_until(lambda: len(run.fake.starts) == 2)
        await run.env.sleep(120)
        assert run.fake.statuses() == ["paused", "provisioning", "failed"], (
            "the new generation has a deadline"
        )


async def test_hibernates_after_the_idle_timer(time_env, tmp_path, settings_factory):
    async with workspace(time_env, tmp_path, settings_factory, idle_minutes=5) as run:
        run.fake.beating = True
        run.fake.last_active = (await run.env.get_current_time()).timestamp()
        await run.env.sleep(4 * 60)
        assert run.fake.statuses() == ["online"]
        await run.env.sleep(2 * 60)
        await run.fake.wait_for_status("hibernated")
        assert run.fake.statuses() == ["online", "hibernating", "hibernated"]
        assert len(run.fake.stopped) == 1 and run.fake.volume_removals == []
        await run.env.sleep(3600)
        assert run.fake.statuses()[-1] == "hibernated", "liveness never flips a hibernated workspace"


async def test_busy_workspace_does_not_hibernate(time_env, tmp_path, settings_factory):
    async with workspace(time_env, tmp_path, settings_factory, idle_minutes=5) as run:
        run.fake.beating = True
        run.fake.active_tasks = 1
        await run.env.sleep(30 * 60)
        assert run.fake.statuses() == ["online"]


async def test_rescue_grace_expiry_reaps_the_failed_instance(time_env, tmp_path, settings_factory):
    async with workspace(time_env, tmp_path, settings_factory, register=False, timeout=60) as run:
        await run.env.sleep(70)
        await run.fake.wait_for_status("failed")
        await run.fake.wait_until(lambda: len(run.fake.rescues) == 1)
        assert run.fake.rescues[0].reason == "provision_timeout"
        await run.env.sleep(1800)
        assert run.fake.stops == [], "kept for debugging during the grace"
        await run.env.sleep(1900)
        await run.fake.wait_until(lambda: "WORKSPACE_RESCUE_REAPED" in event_types(run))
        assert len(run.fake.stopped) == 1 and len(run.fake.volume_removals) == 1
        assert run.fake.statuses() == ["failed"]


async def test_bootstrap_failed_fails_only_a_provisioning_workspace(time_env, tmp_path, settings_factory):
    async with workspace(time_env, tmp_path, settings_factory, register=False) as run:
        await run.handle.signal(
            WorkspaceWorkflow.bootstrap_failed, BootstrapFailedSignal("x" * 10000 + "boom")
        )
        change, _ = await run.fake.wait_for_status("failed")
        assert change.payload["source"] == "bootstrap_watcher"
        assert len(change.payload["log_tail"].encode()) == 8192
        assert change.payload["log_tail"].endswith("boom")
        await run.fake.wait_until(lambda: len(run.fake.rescues) == 1)
        assert run.fake.rescues[0].reason == "bootstrap_watcher"
        await run.handle.signal(WorkspaceWorkflow.register, RegisterSignal("http://agent:1", {}))
        await run.fake.wait_for_status("online")
        await run.handle.signal(WorkspaceWorkflow.bootstrap_failed, BootstrapFailedSignal("late"))
        await run.state()
        assert run.fake.statuses() == ["failed", "online"]


async def test_a_delete_lets_the_reaper_of_an_old_instance_finish_at_once(
    time_env, tmp_path, settings_factory
):
    async with workspace(time_env, tmp_path, settings_factory) as run:
        run.fake.stop_failures = -1  # the restart's three attempts fail: a reaper takes over
        await run.handle.execute_update(WorkspaceWorkflow.restart)
        await run.fake.wait_until(lambda: len(run.fake.starts) == 2)
        await run.env.sleep(600)  # the reaper has failed for a while: its backoff is at minutes now
        reaper_calls = len(run.fake.stops)
        assert reaper_calls >= 6
        run.fake.stop_failures = 0
        await delete(run)
        assert await run.handle.result() == "removed"
        done_at = run.fake.teardowns[-1]
        await run.fake.wait_until(lambda: len(run.fake.stops) >= reaper_calls + 2)  # teardown + reaper
        gap = (run.fake.stop_times[-1] - run.fake.stop_times[-2]).total_seconds()
        assert gap < 5, f"the reaper waited {gap:.0f}s after the teardown confirmed everything gone"
        assert done_at.teardown.complete
