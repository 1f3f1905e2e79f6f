"""The reconcile schedule on real components: it reaps only what no workspace owns."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.client import Client, ScheduleDescription
from temporalio.service import RPCError, RPCStatusCode

from backends.base import InstanceSpec
from backends.process import ProcessProvisioner
from domain import contract
from domain.contract import reconcile_schedule_id as schedule_id
from domain.events import EventType
from domain.models import workflow_id_for
from domain.status import WorkspaceStatus
from domain.templates import Template
from store import workspaces as ws_store
from store.db import create_pool
from tests.integration.api import create
from tests.integration.sse import EventStream

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
    """One reconcile pass, run as the schedule runs it, and its report."""
    report: dict = await client.execute_workflow(
        contract.RECONCILE_WORKFLOW,
        id=f"{contract.reconcile_workflow_id(task_queue)}-{uuid.uuid4().hex[:6]}",
        task_queue=task_queue,
        result_type=dict,
    )
    return report


class LaunchNobodyRecorded(ProcessProvisioner):
    """Plants a stray: a launch that completed after its attempt was given up on, so no start
    replaced it and no row records it (a real start replaces every instance it can see)."""

    async def list_managed(self, workspace_id=None):
        return [] if workspace_id else await super().list_managed()


async def older_than(seconds: float, launched: datetime) -> None:
    """Wait until an instance launched at `launched` is past the stray age (wall clock, as reconcile
    judges it): a condition to wait for, never an assumption about how long setup took."""
    async with asyncio.timeout(30):
        while datetime.now(UTC) - launched <= timedelta(seconds=seconds):
            await asyncio.sleep(0.05)


async def test_reconcile_reaps_orphans_strays_and_closed_removed_rows_only(
    make_stack, database_url, tmp_path
):
    # The schedule is off: the passes this test runs are the only ones, so nothing else reaps first.
    stack = await make_stack(HEARTBEAT_INTERVAL=1, RECONCILE_STRAY_AFTER_SECONDS=1, RECONCILE_ENABLED="false")
    backend = ProcessProvisioner(stack.data_dir, stack.platform_id)
    # Same platform, its own directory: an instance the live workspace's row does not record.
    elsewhere = LaunchNobodyRecorded(tmp_path / "elsewhere", stack.platform_id)
    temporal = await Client.connect(stack.temporal_address)
    pool = await create_pool(database_url)
    try:
        async with stack.client() as client, EventStream(client) as events:
            live = (await create(client, runtime="claude-code", env={"HEARTBEAT_INTERVAL": "1"}))[
                "workspace"
            ]["id"]
            await events.wait_type("WORKSPACE_ONLINE", live)
            stray_instance = await elsewhere.start(spec(live))  # a launch that outlived its attempt
            assert stray_instance
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
        assert stray_launched is not None
        await older_than(1, stray_launched)

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
