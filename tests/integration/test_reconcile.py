"""The reconcile schedule on real components: it reaps only what no workspace owns."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.client import Client, ScheduleActionExecutionStartWorkflow, ScheduleDescription
from temporalio.service import RPCError, RPCStatusCode

from backends.base import InstanceSpec
from backends.process import ProcessProvisioner
from domain.events import EventType
from domain.models import workflow_id_for
from domain.status import WorkspaceStatus
from domain.templates import Template
from store import workspaces as ws_store
from store.db import create_pool
from tests.integration.api import create
from tests.integration.sse import EventStream
from workflows.reconcile import schedule_id

pytestmark = pytest.mark.integration

SLEEPER = Template(
    name="t", runtime="claude-code", command=["{python}", "-c", "import time; time.sleep(600)"]
)


def spec(workspace_id: str) -> InstanceSpec:
    return InstanceSpec(workspace_id, "claude-code", 1, SLEEPER, {}, "tok", "http://127.0.0.1:1")


async def schedule(client: Client, task_queue: str) -> ScheduleDescription:
    """The reconcile schedule, once the worker has created it at start-up."""
    async with asyncio.timeout(30):
        while True:
            try:
                return await client.get_schedule_handle(schedule_id(task_queue)).describe()
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
            await asyncio.sleep(0.1)


async def run_reconcile(client: Client, task_queue: str) -> dict:
    """Trigger the schedule now and wait for that run's report."""
    before = (await schedule(client, task_queue)).info.num_actions
    await client.get_schedule_handle(schedule_id(task_queue)).trigger()
    async with asyncio.timeout(30):
        while (description := await schedule(client, task_queue)).info.num_actions == before:
            await asyncio.sleep(0.05)
    action = description.info.recent_actions[-1].action
    assert isinstance(action, ScheduleActionExecutionStartWorkflow)
    report: dict = await client.get_workflow_handle(
        action.workflow_id, run_id=action.first_execution_run_id
    ).result()
    return report


async def test_reconcile_reaps_orphans_strays_and_closed_removed_rows_only(
    make_stack, database_url, tmp_path
):
    stack = await make_stack(HEARTBEAT_INTERVAL=1, RECONCILE_STRAY_AFTER_SECONDS=1)
    backend = ProcessProvisioner(stack.data_dir, stack.platform_id)
    # Same platform, its own directory: an instance the live workspace's row does not record.
    elsewhere = ProcessProvisioner(tmp_path / "elsewhere", stack.platform_id)
    temporal = await Client.connect(stack.temporal_address)
    pool = await create_pool(database_url)
    try:
        async with stack.client() as client, EventStream(client) as events:
            live = (await create(client, runtime="claude-code", env={"HEARTBEAT_INTERVAL": "1"}))[
                "workspace"
            ]["id"]
            stray_instance = await elsewhere.start(spec(live))  # a launch that outlived its attempt
            assert stray_instance
            await events.wait_type("WORKSPACE_ONLINE", live)
            # A removed row whose workflow is closed, and whose instance somehow still runs.
            ghost = (await create(client, external=True))["workspace"]["id"]
            await temporal.get_workflow_handle(workflow_id_for(ghost)).terminate("simulated crash")
            await ws_store.apply_status_change(
                pool,
                ghost,
                WorkspaceStatus.REMOVED,
                EventType.WORKSPACE_REMOVED,
                {},
                f"test:{ghost}",
                None,
                False,
            )
        ghost_instance = await backend.start(spec(ghost))
        orphan = str(uuid.uuid4())  # managed by this platform, but no row at all
        orphan_instance = await backend.start(spec(orphan))
        odd_instance = await backend.start(spec("NOT-A-UUID"))  # never touched, whatever it is

        current = await pool.fetchval("SELECT instance_id FROM workspaces WHERE id = $1", live)
        assert current and current != stray_instance
        launched = {m.instance_id: m.launched_at for m in await backend.list_managed()}
        stray_launched = launched[stray_instance]
        assert stray_launched and datetime.now(UTC) - stray_launched > timedelta(seconds=1), "old enough"

        report = await run_reconcile(temporal, stack.task_queue)

        assert sorted(report["reaped"]) == sorted(
            f"process:{i}" for i in (ghost_instance, orphan_instance, stray_instance)
        )
        assert report["skipped"] == {"not a strict UUID": 1, "row is online": 1}  # live's current instance
        assert await backend.is_running(current) and not await backend.is_running(stray_instance)
        assert sorted(report["volumes_removed"]) == sorted([ghost, orphan])
        running = {m.workspace_id for m in await backend.list_managed()}
        assert running == {live, "NOT-A-UUID"}
        assert backend.workspace_dir(live).exists() and not backend.workspace_dir(orphan).exists()
        recorded = await pool.fetch(
            """SELECT payload->>'workspace_id' AS ws, payload->>'reason' AS reason FROM structure_events
               WHERE event_type = $1 AND payload->>'workspace_id' = ANY($2)""",
            EventType.INSTANCE_REAPED_BY_RECONCILE.value,
            [ghost, orphan, live],
        )
        assert sorted((r["ws"], r["reason"]) for r in recorded) == sorted(
            [(ghost, "removed"), (orphan, "orphan"), (live, "stray")]
        )
        assert odd_instance
    finally:
        await pool.close()


async def test_reconcile_schedule_is_visible_with_its_interval(make_stack):
    stack = await make_stack(RECONCILE_INTERVAL_SECONDS=600)
    temporal = await Client.connect(stack.temporal_address)
    description = await schedule(temporal, stack.task_queue)
    (interval,) = description.schedule.spec.intervals
    assert interval.every.total_seconds() == 600
