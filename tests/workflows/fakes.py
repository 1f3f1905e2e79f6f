"""Test doubles for the workspace activities: same names, no Postgres, no processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.workspace import WORKSPACE_NOT_FOUND, plan_provision
from domain.models import ProvisionPlan, ProvisionRequest, StartRequest, StartResult, StatusChange
from molecule.settings import Settings
from molecule.templates import TemplateCatalog


class FakeActivities:
    def __init__(
        self,
        env: WorkflowEnvironment,
        settings: Settings,
        templates: TemplateCatalog,
        workspace_env: dict[str, str] | None = None,
        row_exists: bool = True,
    ) -> None:
        self.env = env
        self.settings = settings
        self.templates = templates
        self.workspace_env = workspace_env or {}
        self.row_exists = row_exists
        self.prepare_attempts = 0
        self.changes: list[tuple[StatusChange, datetime]] = []
        self.starts: list[StartRequest] = []
        self._seen_keys: set[str] = set()
        self._changed = asyncio.Condition()

    @activity.defn(name="prepare_provision")
    async def prepare_provision(self, req: ProvisionRequest) -> ProvisionPlan:
        self.prepare_attempts += 1
        if not self.row_exists:
            raise ApplicationError("workspace row not found", type=WORKSPACE_NOT_FOUND, non_retryable=True)
        return plan_provision(self.settings, self.templates, req, self.workspace_env)

    @activity.defn(name="start_instance")
    async def start_instance(self, req: StartRequest) -> StartResult:
        self.starts.append(req)
        async with self._changed:
            self._changed.notify_all()
        return StartResult(f"fake:{req.workspace_id}:{req.generation}")

    @activity.defn(name="record_status")
    async def record_status(self, change: StatusChange) -> bool:
        if change.key in self._seen_keys:
            return False
        self._seen_keys.add(change.key)
        self.changes.append((change, await self.env.get_current_time()))
        async with self._changed:
            self._changed.notify_all()
        return True

    def all(self) -> list[Callable[..., Any]]:
        return [self.prepare_provision, self.start_instance, self.record_status]

    def statuses(self) -> list[str]:
        return [c.status for c, _ in self.changes]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        async def _wait() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        await asyncio.wait_for(_wait(), timeout)

    async def wait_for_status(self, status: str, timeout: float = 15.0) -> tuple[StatusChange, datetime]:
        await self.wait_until(lambda: status in self.statuses(), timeout)
        return next((c, t) for c, t in self.changes if c.status == status)
