"""Heartbeat status rules and liveness as workflow logic (time-skipping server, fake activities)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from domain.models import HeartbeatSignal, RegisterSignal
from domain.transitions import HEARTBEAT_STALE
from tests.workflows.harness import Running, make_catalog, manifest, provisioning
from workflows.workspace import WorkspaceWorkflow


@asynccontextmanager
async def online(time_env, tmp_path, settings_factory, backend: str = "process") -> AsyncIterator[Running]:
    """A workspace that registered 10 s after its instance started."""
    catalog = make_catalog(tmp_path, {"claude-code": manifest("claude-code")})
    async with provisioning(time_env, "claude-code", settings_factory(None), catalog, backend=backend) as run:
        await run.advance_to(10)
        await run.handle.signal(WorkspaceWorkflow.register, RegisterSignal("http://agent:1", {}))
        await run.fake.wait_for_status("online")
        yield run


async def beat(run: Running, **kw) -> None:
    await run.handle.signal(WorkspaceWorkflow.heartbeat, HeartbeatSignal(**kw))


async def settle(run: Running) -> list[str]:
    """Statuses after the workflow has applied everything sent so far."""
    await run.state()  # a query is answered after pending signals are applied
    return run.fake.statuses()


async def test_wedged_degrades_even_with_native_status_mgmt(time_env, tmp_path, settings_factory):
    async with online(time_env, tmp_path, settings_factory) as run:
        run.fake.beating = True
        await beat(run, runtime_state="wedged", sample_error="stuck in tool call", status_mgmt=True)
        change, _ = await run.fake.wait_for_status("degraded")
        assert change.event_type == "WORKSPACE_DEGRADED"
        assert change.payload == {"runtime_state": "wedged", "sample_error": "stuck in tool call"}


async def test_native_status_mgmt_skips_both_error_rate_branches(time_env, tmp_path, settings_factory):
    async with online(time_env, tmp_path, settings_factory) as run:
        run.fake.beating = True
        await beat(run, error_rate=0.9, status_mgmt=True)
        assert await settle(run) == ["online"]
        await beat(run, runtime_state="wedged", status_mgmt=True)
        await run.fake.wait_for_status("degraded")
        await beat(run, error_rate=0.0, runtime_state="", status_mgmt=True)
        assert await settle(run) == ["online", "degraded"], "recovery by error rate is the agent's call"


async def test_error_rate_degrades_and_recovery_needs_an_empty_runtime_state(
    time_env, tmp_path, settings_factory
):
    async with online(time_env, tmp_path, settings_factory) as run:
        run.fake.beating = True
        await beat(run, error_rate=0.2)
        assert await settle(run) == ["online"], "0.2 stays online"
        await beat(run, error_rate=0.6, sample_error="429 from model")
        change, _ = await run.fake.wait_for_status("degraded")
        assert change.payload == {"error_rate": 0.6, "sample_error": "429 from model"}
        assert change.last_sample_error == "429 from model"
        await beat(run, error_rate=0.05, runtime_state="compacting")
        assert await settle(run) == ["online", "degraded"]
        await beat(run, error_rate=0.05, runtime_state="")
        await run.fake.wait_until(lambda: run.fake.statuses() == ["online", "degraded", "online"])
        assert run.fake.changes[-1][0].payload["recovered_from"] == "degraded"


async def test_stale_external_awaits_its_agent_then_comes_back(time_env, tmp_path, settings_factory):
    async with online(time_env, tmp_path, settings_factory, backend="external") as run:
        assert run.fake.starts == []
        await run.advance_to(10 + 170)
        assert await settle(run) == ["online"]
        await run.advance_to(10 + 185)
        change, at = await run.fake.wait_for_status("awaiting_agent")
        assert change.event_type == "WORKSPACE_AWAITING_AGENT"
        assert 180 <= (at - run.started_at).total_seconds() - 10 < 181
        await beat(run)
        await run.fake.wait_until(lambda: run.fake.statuses() == ["online", "awaiting_agent", "online"])
        assert run.fake.changes[-1][0].payload["recovered_from"] == "awaiting_agent"


async def test_beats_in_postgres_rearm_the_timer_without_acting(time_env, tmp_path, settings_factory):
    async with online(time_env, tmp_path, settings_factory, backend="external") as run:
        run.fake.beating = True
        await run.advance_to(2000)
        assert await settle(run) == ["online"]
        assert run.fake.liveness_checks >= 5, "the timer fired and confirmed from Postgres"


async def test_stale_process_not_running_goes_offline_and_restarts(time_env, tmp_path, settings_factory):
    async with online(time_env, tmp_path, settings_factory) as run:
        first = run.fake.starts[0]
        run.fake.instance_running = False  # the agent died: no beats, no process
        await run.advance_to(10 + 185)
        offline, _ = await run.fake.wait_for_status("offline")
        assert offline.event_type == "WORKSPACE_OFFLINE"
        await run.fake.wait_until(lambda: len(run.fake.starts) == 2)
        assert [s.instance_id for s in run.fake.stops] == [f"fake:{first.workspace_id}:1"]
        restart = run.fake.starts[1]
        assert restart.generation == 2
        assert restart.deadline_at > first.deadline_at, "a fresh deadline for the new instance"
        assert run.fake.statuses()[-2:] == ["offline", "provisioning"]
        await run.handle.signal(WorkspaceWorkflow.register, RegisterSignal("http://agent:2", {}))
        await run.fake.wait_until(lambda: run.fake.statuses()[-1] == "online")
        assert (await run.state()).generation == 2


async def test_restart_stop_failing_three_times_flags_a_leak_hands_it_to_a_reaper_and_reprovisions(
    time_env, tmp_path, settings_factory
):
    async with online(time_env, tmp_path, settings_factory) as run:
        run.fake.instance_running = False
        run.fake.stop_failures = 5  # the restart's 3 attempts fail, then the reaper's first 2
        await run.advance_to(10 + 185)
        await run.fake.wait_until(lambda: len(run.fake.starts) == 2, timeout=30)
        old = run.fake.starts[0]
        assert all((stop.instance_id or "").endswith(":1") for stop in run.fake.stops)
        leak = run.fake.events[0]
        assert leak.event_type == "WORKSPACE_LEAK_SUSPECT"
        assert leak.payload["attempts"] == 3
        assert leak.payload["instance_id"] == f"fake:{old.workspace_id}:1"
        # The reaper keeps at it on its own backoff until the old instance is gone.
        await run.env.sleep(120)
        await run.fake.wait_until(lambda: len(run.fake.stopped) == 1, timeout=30)
        assert len(run.fake.stops) == 6
        await run.fake.wait_until(lambda: "WORKSPACE_LEAK_CLEARED" in [e.event_type for e in run.fake.events])


async def test_stale_process_still_running_is_degraded_then_recovers(time_env, tmp_path, settings_factory):
    async with online(time_env, tmp_path, settings_factory) as run:
        await run.advance_to(10 + 185)
        change, _ = await run.fake.wait_for_status("degraded")
        assert change.payload["sample_error"] == HEARTBEAT_STALE
        assert change.last_sample_error == HEARTBEAT_STALE
        run.fake.beating = True
        await beat(run)
        await run.fake.wait_until(lambda: run.fake.statuses() == ["online", "degraded", "online"])


async def test_steady_beats_for_ten_minutes_add_fewer_than_50_history_events(
    time_env, tmp_path, settings_factory
):
    # Beating every second: each beat lands in Postgres; the workflow only sees its liveness checks.
    async with online(time_env, tmp_path, settings_factory) as run:
        run.fake.beating = True
        await run.advance_to(60)
        before = await history_length(run)
        await run.advance_to(60 + 600)
        added = await history_length(run) - before
        assert await settle(run) == ["online"]
        assert added < 50, added
        print(f"history events added in 10 simulated minutes of steady beats: {added}")


async def history_length(run: Running) -> int:
    handle = run.env.client.get_workflow_handle(run.handle.id)
    return len((await handle.fetch_history()).events)
