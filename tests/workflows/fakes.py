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
from config.settings import Settings
from config.templates import TemplateCatalog
from domain.models import (
    EventRecord,
    IdleReport,
    LivenessReport,
    LivenessRequest,
    ProvisionPlan,
    ProvisionRequest,
    RescueRequest,
    StartRequest,
    StartResult,
    StatusChange,
    StopRequest,
    TeardownRecord,
    VolumesRequest,
)


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
        # Liveness: what Postgres would say. `beating` means the agent beat just now.
        self.beating = False
        self.last_beat: float | None = None
        self.instance_running = True
        self.liveness_checks = 0
        self.stop_failures = 0  # fail this many stop attempts first (-1: always fail)
        self.volume_removals: list[tuple[VolumesRequest, int]] = []  # (request, stops so far)
        self.teardowns: list[TeardownRecord] = []
        self.rescues: list[RescueRequest] = []
        self.last_active: float | None = None
        self.active_tasks = 0
        self.stops: list[StopRequest] = []
        self.stopped: list[str] = []
        self.events: list[EventRecord] = []
        self.changes: list[tuple[StatusChange, datetime]] = []
        self.starts: list[StartRequest] = []
        self._seen_keys: set[str] = set()
        self._changed = asyncio.Condition()

    @activity.defn(name="prepare_provision")
    async def prepare_provision(self, req: ProvisionRequest) -> ProvisionPlan:
        self.prepare_attempts += 1
        async with self._changed:
            self._changed.notify_all()
        if not self.row_exists:
            raise ApplicationError("workspace row not found", type=WORKSPACE_NOT_FOUND, non_retryable=True)
        return plan_provision(self.settings, self.templates, req, self.workspace_env)

    @activity.defn(name="start_instance")
    async def start_instance(self, req: StartRequest) -> StartResult:
        self.starts.append(req)
        self.instance_running = True
        async with self._changed:
            self._changed.notify_all()
        return StartResult(f"fake:{req.workspace_id}:{req.generation}")

    @activity.defn(name="check_liveness")
    async def check_liveness(self, req: LivenessRequest) -> LivenessReport:
        self.liveness_checks += 1
        now = (await self.env.get_current_time()).timestamp()
        report = LivenessReport(now if self.beating else self.last_beat)
        if req.check_instance:
            report.instance_running = self.instance_running
        return report

    @activity.defn(name="stop_instance")
    async def stop_instance(self, req: StopRequest) -> None:
        self.stops.append(req)
        await self._notify()
        if self.stop_failures != 0:
            self.stop_failures -= 1 if self.stop_failures > 0 else 0
            raise RuntimeError("injected stop failure")
        self.instance_running = False
        self.stopped.append(req.instance_id)
        await self._notify()

    @activity.defn(name="remove_volumes")
    async def remove_volumes(self, req: VolumesRequest) -> None:
        self.volume_removals.append((req, len(self.stopped)))
        await self._notify()

    @activity.defn(name="record_teardown")
    async def record_teardown(self, record: TeardownRecord) -> None:
        self.teardowns.append(record)
        await self._notify()

    @activity.defn(name="check_idle")
    async def check_idle(self, workspace_id: str) -> IdleReport:
        return IdleReport(self.last_active, self.active_tasks)

    @activity.defn(name="capture_rescue")
    async def capture_rescue(self, req: RescueRequest) -> bool:
        self.rescues.append(req)
        await self._notify()
        return True

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @activity.defn(name="record_event")
    async def record_event(self, record: EventRecord) -> None:
        self.events.append(record)
        await self._notify()

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
        return [
            self.prepare_provision,
            self.start_instance,
            self.record_status,
            self.check_liveness,
            self.stop_instance,
            self.record_event,
            self.remove_volumes,
            self.record_teardown,
            self.check_idle,
            self.capture_rescue,
        ]

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
