"""Shared harness for WorkspaceWorkflow tests on the time-skipping server."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from config.settings import Settings
from config.templates import TemplateCatalog
from domain.models import WorkspaceInput, WorkspaceState, workflow_id_for
from tests.workflows.fakes import FakeActivities
from workers.main import WORKFLOWS
from workflows.workspace import WorkspaceWorkflow

RUNTIMES = ("claude-code", "hermes", "codex", "openclaw")


def make_catalog(root: Path, templates: dict[str, dict[str, Any]]) -> TemplateCatalog:
    for name, data in templates.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "config.yaml").write_text(yaml.safe_dump(data))
    return TemplateCatalog(root)


def manifest(
    runtime: str, timeout: int | None = None, required_env: list[str] | None = None
) -> dict[str, Any]:
    runtime_config: dict[str, Any] = {"required_env": required_env or []}
    if timeout is not None:
        runtime_config["provision_timeout_seconds"] = timeout
    return {"runtime": runtime, "backend": "process", "command": ["true"], "runtime_config": runtime_config}


@dataclass
class Running:
    env: WorkflowEnvironment
    fake: FakeActivities
    handle: WorkflowHandle[Any, Any]
    started_at: datetime

    async def state(self) -> WorkspaceState:
        # By id, not run id: the latest run answers even after a continue-as-new.
        latest = self.env.client.get_workflow_handle(self.handle.id)
        state: WorkspaceState = await latest.query(WorkspaceWorkflow.query_state)
        return state

    async def advance_to(self, seconds: float) -> None:
        """Skip time until `seconds` after the workflow started its instance."""
        now = await self.env.get_current_time()
        remaining = seconds - (now - self.started_at).total_seconds()
        assert remaining > 0, f"already {seconds - remaining:.0f}s in"
        await self.env.sleep(remaining)


@asynccontextmanager
async def provisioning(
    env: WorkflowEnvironment,
    runtime: str,
    settings: Settings,
    catalog: TemplateCatalog,
    *,
    workspace_env: dict[str, str] | None = None,
    continue_as_new_after: int = 2000,
    expect_start: bool = True,
    backend: str = "process",
    hibernation_idle_minutes: int = 0,
) -> AsyncIterator[Running]:
    fake = FakeActivities(env, settings, catalog, workspace_env)
    task_queue = f"tq-{uuid.uuid4()}"
    workspace_id = str(uuid.uuid4())
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=fake.all(),
    ):
        handle = await env.client.start_workflow(
            WorkspaceWorkflow.run,
            WorkspaceInput(
                workspace_id, runtime, backend, None, continue_as_new_after, hibernation_idle_minutes
            ),
            id=workflow_id_for(workspace_id),
            task_queue=task_queue,
        )
        if expect_start and backend != "external":
            await fake.wait_until(lambda: bool(fake.starts))
        elif backend == "external":
            await fake.wait_until(lambda: fake.prepare_attempts > 0)
        started_at = await env.get_current_time()
        try:
            yield Running(env, fake, handle, started_at)
        finally:
            with contextlib.suppress(RPCError):  # a deleted workspace's workflow has completed
                await env.client.get_workflow_handle(handle.id).terminate()
