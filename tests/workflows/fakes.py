"""Test doubles for the workspace activities: same names, no Postgres, no processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from temporalio.testing import WorkflowEnvironment

from activities.errors import not_found
from activities.workspace import plan_provision
from config.settings import Settings
from config.templates import TemplateCatalog
from domain import contract
from domain.contract import implements
from domain.models import (
    CascadeRequest,
    CascadeTarget,
    DelegationFinish,
    DelegationInput,
    DelegationOutcome,
    DelegationStatus,
    DrainReport,
    DrainRequest,
    EventRecord,
    FilesRequest,
    IdleReport,
    LivenessReport,
    LivenessRequest,
    ProvisionPlan,
    ProvisionRequest,
    ReconcileReport,
    RescueRequest,
    StartRequest,
    StartResult,
    StatusChange,
    StopReport,
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
        self.file_removals: list[str] = []
        self.teardowns: list[TeardownRecord] = []
        self.rescues: list[RescueRequest] = []
        self.last_active: float | None = None
        self.active_tasks = 0
        self.stops: list[StopRequest] = []
        self.stopped: list[str] = []
        self.events: list[EventRecord] = []
        self.changes: list[tuple[StatusChange, datetime]] = []
        self.starts: list[StartRequest] = []
        # Cascades: the descendants below the root, the ones reached, injected update failures.
        self.cascade_below: list[str] = []
        self.reached: list[str] = []
        self.cascade_calls: list[str] = []
        self.cascade_failures: dict[str, int] = {}
        # The row as the store would leave it, and writes held until a test releases them.
        self.row_status: str | None = None
        self.row_seq = 0
        self.status_gates: dict[str, asyncio.Event] = {}
        self.held: list[str] = []
        self.stop_gate: asyncio.Event | None = None
        self.stop_times: list[datetime] = []
        # Agent-to-agent: drains asked for, delegation outcomes to hand out, delegations finished.
        self.drains: list[DrainRequest] = []
        self.drain_reports: list[DrainReport] = []
        self.dispatch_outcomes: list[DelegationOutcome | None] = []  # None: the dispatch raises
        self.dispatches: list[DelegationInput] = []
        self.finished: list[DelegationFinish] = []
        self._seen_keys: set[str] = set()
        self._changed = asyncio.Condition()

    @implements(contract.prepare_provision)
    async def prepare_provision(self, req: ProvisionRequest) -> ProvisionPlan:
        self.prepare_attempts += 1
        async with self._changed:
            self._changed.notify_all()
        if not self.row_exists:
            raise not_found(req.workspace_id)
        return plan_provision(self.settings, self.templates, req, self.workspace_env)

    @implements(contract.start_instance)
    async def start_instance(self, req: StartRequest) -> StartResult:
        self.starts.append(req)
        self.instance_running = True
        async with self._changed:
            self._changed.notify_all()
        return StartResult(f"fake:{req.workspace_id}:{req.generation}", token_id=100 + req.generation)

    @implements(contract.check_liveness)
    async def check_liveness(self, req: LivenessRequest) -> LivenessReport:
        self.liveness_checks += 1
        now = (await self.env.get_current_time()).timestamp()
        report = LivenessReport(now if self.beating else self.last_beat)
        if req.check_instance:
            report.instance_running = self.instance_running
        return report

    @implements(contract.stop_instances)
    async def stop_instances(self, req: StopRequest) -> StopReport:
        self.stops.append(req)
        self.stop_times.append(await self.env.get_current_time())
        await self._notify()
        if self.stop_gate is not None:  # a slow stop: held until the test opens the gate
            await self.stop_gate.wait()
        if self.stop_failures != 0:
            self.stop_failures -= 1 if self.stop_failures > 0 else 0
            raise RuntimeError("injected stop failure")
        self.instance_running = False
        self.stopped.append(req.instance_id or "")
        await self._notify()
        return StopReport([req.instance_id] if req.instance_id else [])

    @implements(contract.remove_volumes)
    async def remove_volumes(self, req: VolumesRequest) -> None:
        self.volume_removals.append((req, len(self.stopped)))
        await self._notify()

    @implements(contract.remove_files)
    async def remove_files(self, req: FilesRequest) -> None:
        self.file_removals.append(req.workspace_id)
        await self._notify()

    @implements(contract.record_teardown)
    async def record_teardown(self, record: TeardownRecord) -> None:
        self.teardowns.append(record)
        await self._notify()

    @implements(contract.check_idle)
    async def check_idle(self, workspace_id: str) -> IdleReport:
        return IdleReport(self.last_active, self.active_tasks)

    @implements(contract.capture_rescue)
    async def capture_rescue(self, req: RescueRequest) -> bool:
        self.rescues.append(req)
        await self._notify()
        return True

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @implements(contract.record_event)
    async def record_event(self, record: EventRecord) -> None:
        self.events.append(record)
        await self._notify()

    @implements(contract.record_status)
    async def record_status(self, change: StatusChange) -> bool:
        """Like the store: one write per key, and a write not newer than the row's is refused."""
        if change.key in self._seen_keys:
            return False
        self._seen_keys.add(change.key)
        gate = self.status_gates.get(change.status)
        if gate is not None:  # a slow write: held until the test opens the gate
            self.held.append(change.status)
            await self._notify()
            await gate.wait()
        self.changes.append((change, await self.env.get_current_time()))
        applied = change.seq > self.row_seq
        if applied:
            self.row_status, self.row_seq = change.status, change.seq
        await self._notify()
        return applied

    @implements(contract.cascade_targets)
    async def cascade_targets(self, req: CascadeRequest) -> list[CascadeTarget]:
        return [CascadeTarget(req.kind, w, req.root_id) for w in self.cascade_below if w not in self.reached]

    @implements(contract.cascade_one)
    async def cascade_one(self, target: CascadeTarget) -> str:
        self.cascade_calls.append(target.workspace_id)
        await self._notify()
        if self.cascade_failures.get(target.workspace_id, 0) > 0:
            self.cascade_failures[target.workspace_id] -= 1
            raise RuntimeError(f"injected update failure for {target.workspace_id}")
        self.reached.append(target.workspace_id)
        await self._notify()
        return "pending" if target.kind == "delete" else "paused"

    @implements(contract.reconcile)
    async def reconcile(self) -> ReconcileReport:
        return ReconcileReport()

    @implements(contract.drain_queue)
    async def drain_queue(self, req: DrainRequest) -> DrainReport:
        self.drains.append(req)
        await self._notify()
        return self.drain_reports.pop(0) if self.drain_reports else DrainReport()

    @implements(contract.dispatch_delegation)
    async def dispatch_delegation(self, inp: DelegationInput) -> DelegationOutcome:
        self.dispatches.append(inp)
        await self._notify()
        if self.dispatch_outcomes and self.dispatch_outcomes[0] is None:
            raise RuntimeError("injected dispatch failure")
        if self.dispatch_outcomes:
            outcome = self.dispatch_outcomes.pop(0)
            assert outcome is not None
            return outcome
        return DelegationOutcome(DelegationStatus.COMPLETED)

    @implements(contract.finish_delegation)
    async def finish_delegation(self, finish: DelegationFinish) -> None:
        self.finished.append(finish)
        await self._notify()

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.prepare_provision,
            self.start_instance,
            self.stop_instances,
            self.remove_volumes,
            self.remove_files,
            self.record_status,
            self.record_event,
            self.record_teardown,
            self.check_liveness,
            self.check_idle,
            self.capture_rescue,
            self.cascade_targets,
            self.cascade_one,
            self.reconcile,
            self.drain_queue,
            self.dispatch_delegation,
            self.finish_delegation,
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
