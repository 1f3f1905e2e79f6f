"""WorkspaceWorkflow provisioning on the time-skipping test server, activities replaced by fakes."""

from __future__ import annotations

import uuid

import pytest
from temporalio.worker import Worker

from domain.models import HeartbeatSignal, RegisterSignal, WorkspaceInput, workflow_id_for
from domain.timeouts import PROVISION_TIMEOUT_ERROR
from tests.workflows.fakes import FakeActivities
from tests.workflows.harness import RUNTIMES, Running, make_catalog, manifest, provisioning
from workers.main import WORKFLOWS
from workflows.workspace import WorkspaceWorkflow


async def assert_fails_between(run: Running, spared_at: float, failed_by: float, timeout_secs: int) -> None:
    await run.advance_to(spared_at)
    assert (await run.state()).status == "provisioning"
    assert run.fake.statuses() == []

    await run.advance_to(failed_by)
    change, at = await run.fake.wait_for_status("failed")
    assert change.event_type == "WORKSPACE_PROVISION_FAILED"
    assert change.payload["timeout_secs"] == timeout_secs
    assert change.payload["source"] == "provision_timeout"
    assert change.payload["error"] == PROVISION_TIMEOUT_ERROR
    assert change.last_sample_error == PROVISION_TIMEOUT_ERROR
    # Failed at its deadline (start + timeout): not before, and within a second after.
    deadline_at = run.fake.starts[0].deadline_at if run.fake.starts else (await run.state()).deadline_at
    assert deadline_at is not None
    assert abs(deadline_at - run.started_at.timestamp() - timeout_secs) < 1
    assert deadline_at <= at.timestamp() + 0.001 < deadline_at + 1
    assert (await run.state()).status == "failed"


async def test_claude_code_default_deadline_is_720s(time_env, tmp_path, settings_factory):
    catalog = make_catalog(tmp_path, {"claude-code": manifest("claude-code")})
    async with provisioning(time_env, "claude-code", settings_factory(None), catalog) as run:
        await assert_fails_between(run, 660, 800, 720)


async def test_hermes_default_deadline_is_30_minutes(time_env, tmp_path, settings_factory):
    catalog = make_catalog(tmp_path, {"hermes": manifest("hermes")})
    async with provisioning(time_env, "hermes", settings_factory(None), catalog) as run:
        await assert_fails_between(run, 660, 1860, 1800)


async def test_manifest_timeout_1200_for_claude_code(time_env, tmp_path, settings_factory):
    catalog = make_catalog(tmp_path, {"claude-code": manifest("claude-code", 1200)})
    async with provisioning(time_env, "claude-code", settings_factory(None), catalog) as run:
        await assert_fails_between(run, 800, 1260, 1200)


async def test_manifest_takes_the_max_over_templates_of_the_runtime(time_env, tmp_path, settings_factory):
    catalog = make_catalog(
        tmp_path,
        {
            "claude-code": manifest("claude-code", 600),
            "claude-code-big": manifest("claude-code", 1200),
            "codex": manifest("codex", 5000),
        },
    )
    async with provisioning(time_env, "claude-code", settings_factory(None), catalog) as run:
        await assert_fails_between(run, 800, 1260, 1200)


async def test_manifest_beats_the_hermes_default(time_env, tmp_path, settings_factory):
    catalog = make_catalog(tmp_path, {"hermes": manifest("hermes", 900)})
    async with provisioning(time_env, "hermes", settings_factory(None), catalog) as run:
        await assert_fails_between(run, 800, 960, 900)


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_env_override_applies_to_every_runtime(time_env, tmp_path, settings_factory, runtime):
    # The env value beats a manifest value and the hermes default alike.
    catalog = make_catalog(tmp_path, {runtime: manifest(runtime, 1200)})
    async with provisioning(time_env, runtime, settings_factory("60"), catalog) as run:
        await assert_fails_between(run, 50, 70, 60)


@pytest.mark.parametrize("bad", ["garbage", "0", "-5"])
async def test_malformed_env_falls_back_to_default(time_env, tmp_path, settings_factory, bad, caplog):
    catalog = make_catalog(tmp_path, {"claude-code": manifest("claude-code")})
    settings = settings_factory(bad)
    assert f"PROVISION_TIMEOUT_SECONDS={bad!r}" in caplog.text
    assert "using default" in caplog.text
    async with provisioning(time_env, "claude-code", settings, catalog) as run:
        await assert_fails_between(run, 660, 800, 720)


async def test_register_at_700s_goes_online_and_never_fails(time_env, tmp_path, settings_factory):
    catalog = make_catalog(tmp_path, {"claude-code": manifest("claude-code")})
    async with provisioning(time_env, "claude-code", settings_factory(None), catalog) as run:
        await run.advance_to(700)
        run.fake.beating = True  # the agent beats from now on (steady beats reach Postgres only)
        await run.handle.signal(WorkspaceWorkflow.register, RegisterSignal("http://agent:1", {"name": "a"}))
        change, _ = await run.fake.wait_for_status("online")
        assert change.event_type == "WORKSPACE_ONLINE"
        assert change.payload == {"url": "http://agent:1", "agent_card": {"name": "a"}}
        await run.advance_to(3000)
        assert (await run.state()).status == "online"
        assert run.fake.statuses() == ["online"]


async def test_register_after_the_failure_recovers_online(time_env, tmp_path, settings_factory):
    catalog = make_catalog(tmp_path, {"claude-code": manifest("claude-code")})
    async with provisioning(time_env, "claude-code", settings_factory(None), catalog) as run:
        await run.advance_to(800)
        await run.fake.wait_for_status("failed")
        await run.handle.signal(WorkspaceWorkflow.register, RegisterSignal("http://late:1", None))
        change, _ = await run.fake.wait_for_status("online")
        assert change.payload["recovered_from"] == "failed"
        assert change.clear_sample_error
        assert run.fake.statuses() == ["failed", "online"]


async def test_heartbeat_while_provisioning_brings_it_online(time_env, tmp_path, settings_factory):
    catalog = make_catalog(tmp_path, {"claude-code": manifest("claude-code")})
    async with provisioning(time_env, "claude-code", settings_factory(None), catalog) as run:
        await run.advance_to(10)
        await run.handle.signal(WorkspaceWorkflow.heartbeat, HeartbeatSignal())
        change, _ = await run.fake.wait_for_status("online")
        assert change.payload["recovered_from"] == "provisioning"


async def test_forced_continue_as_new_keeps_deadline_and_status(time_env, tmp_path, settings_factory):
    catalog = make_catalog(tmp_path, {"claude-code": manifest("claude-code")})
    async with provisioning(
        time_env, "claude-code", settings_factory(None), catalog, continue_as_new_after=12
    ) as run:
        first_deadline = run.fake.starts[0].deadline_at
        await run.advance_to(300)
        description = await run.handle.describe()
        assert description.run_id != run.handle.first_execution_run_id, "expected a continue-as-new"
        state = await run.state()
        assert state.status == "provisioning"
        assert state.deadline_at == first_deadline
        assert len(run.fake.starts) == 1, "continue-as-new must not start a second instance"
        await assert_fails_between(run, 660, 800, 720)


async def test_required_env_missing_fails_before_anything_starts(time_env, tmp_path, settings_factory):
    catalog = make_catalog(
        tmp_path, {"claude-code": manifest("claude-code", required_env=["ANTHROPIC_API_KEY", "OTHER", "SET"])}
    )
    async with provisioning(
        time_env,
        "claude-code",
        settings_factory(None),
        catalog,
        workspace_env={"OTHER": "  ", "SET": "x"},
        expect_start=False,
    ) as run:
        change, _ = await run.fake.wait_for_status("failed")
        assert change.payload["missing"] == ["ANTHROPIC_API_KEY", "OTHER"]
        assert "ANTHROPIC_API_KEY" in change.payload["error"]
        assert run.fake.starts == []


async def test_workflow_whose_row_never_commits_ends_without_starting_anything(
    time_env, tmp_path, settings_factory
):
    # The API's create transaction rolled back after the workflow started: it must not linger.
    catalog = make_catalog(tmp_path, {"claude-code": manifest("claude-code")})
    fake = FakeActivities(time_env, settings_factory(None), catalog, row_exists=False)
    task_queue = f"tq-{uuid.uuid4()}"
    workspace_id = str(uuid.uuid4())
    async with Worker(
        time_env.client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=fake.all(),
    ):
        result = await time_env.client.execute_workflow(
            WorkspaceWorkflow.run,
            WorkspaceInput(workspace_id, "claude-code", "process"),
            id=workflow_id_for(workspace_id),
            task_queue=task_queue,
        )
    assert result.startswith("abandoned")
    assert fake.prepare_attempts > 1, "retried before giving up: the commit may just be late"
    assert fake.starts == []
    assert fake.changes == []
