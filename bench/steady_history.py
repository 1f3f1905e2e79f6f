"""Temporal history one steadily beating workspace adds in a simulated hour, on the time-skipping
server: the workflows run for real (the worker's own list), their side effects are stand-ins that
say "the agent beat just now", so only liveness checks write history."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain import contract
from domain.contract import Signal, implements
from domain.models import (
    EventRecord,
    IdleReport,
    LivenessReport,
    LivenessRequest,
    ProvisionPlan,
    ProvisionRequest,
    RegisterSignal,
    StatusChange,
    TeardownRecord,
    WorkspaceInput,
    workflow_id_for,
)
from molecule.temporal_server import ensure_search_attributes, test_server_binary
from workers.main import WORKFLOWS


class SteadyAgent:
    """Side effects of an external workspace whose agent beats every 30 s."""

    def __init__(self, env: WorkflowEnvironment) -> None:
        self.env = env
        self.online = asyncio.Event()

    @implements(contract.prepare_provision)
    async def prepare_provision(self, req: ProvisionRequest) -> ProvisionPlan:
        return ProvisionPlan(timeout_secs=720)

    @implements(contract.record_status)
    async def record_status(self, change: StatusChange) -> bool:
        if change.status == "online":
            self.online.set()
        return True

    @implements(contract.check_liveness)
    async def check_liveness(self, req: LivenessRequest) -> LivenessReport:
        return LivenessReport((await self.env.get_current_time()).timestamp(), instance_running=True)

    @implements(contract.check_idle)
    async def check_idle(self, workspace_id: str) -> IdleReport:
        return IdleReport(None, 0)

    @implements(contract.record_event)
    async def record_event(self, record: EventRecord) -> None:
        return None

    @implements(contract.record_teardown)
    async def record_teardown(self, record: TeardownRecord) -> None:
        return None

    def all(self) -> list[Any]:
        return [
            self.prepare_provision,
            self.record_status,
            self.check_liveness,
            self.check_idle,
            self.record_event,
            self.record_teardown,
        ]


async def simulated_hour_history() -> int:
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(test_server_binary()))
    try:
        await ensure_search_attributes(env.client)
        agent = SteadyAgent(env)
        task_queue = f"bench-{uuid.uuid4()}"
        workspace_id = str(uuid.uuid4())
        async with Worker(env.client, task_queue=task_queue, workflows=WORKFLOWS, activities=agent.all()):
            handle = await env.client.start_workflow(
                contract.WORKSPACE_WORKFLOW,
                WorkspaceInput(workspace_id, "claude-code", "external"),
                id=workflow_id_for(workspace_id),
                task_queue=task_queue,
            )
            await handle.signal(Signal.REGISTER, RegisterSignal("http://a", {}))
            await asyncio.wait_for(agent.online.wait(), 30)
            before = len((await handle.fetch_history()).events)
            await env.sleep(3600)
            await handle.query(contract.STATE_QUERY)
            after = len((await handle.fetch_history()).events)
            await handle.terminate()
            return after - before
    finally:
        await env.shutdown()


if __name__ == "__main__":
    print(f"history events per workspace-hour of steady beats: {asyncio.run(simulated_hour_history())}")
