from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.rescue import capture_rescue_bundle, redactor_for
from backends.base import BackendConfigError, BackendError, InstanceSpec
from backends.registry import Backends
from config.settings import Settings
from config.templates import TemplateCatalog
from domain.events import EventType
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
from domain.status import WorkspaceStatus
from domain.templates import missing_required_env
from domain.timeouts import resolve_provision_timeout
from store import events as event_store
from store import tokens
from store import workspaces as ws_store

log = logging.getLogger("molecule.activities")

WORKSPACE_NOT_FOUND = "WorkspaceNotFound"
BACKEND_CONFIG_ERROR = "BackendConfigError"


def plan_provision(
    settings: Settings, templates: TemplateCatalog, req: ProvisionRequest, env: dict[str, str]
) -> ProvisionPlan:
    timeout = resolve_provision_timeout(
        req.runtime, settings.provision_timeout_seconds, templates.manifest_timeout(req.runtime)
    )
    template = templates.for_workspace(req.template, req.runtime)
    return ProvisionPlan(
        timeout_secs=timeout.seconds,
        timeout_source=timeout.source,
        missing_env=missing_required_env(template, env),
        stale_after_secs=settings.remote_liveness_stale_after,
        rescue_grace_secs=settings.rescue_grace_seconds,
    )


class WorkspaceActivities:
    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, backends: Backends, templates: TemplateCatalog
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.backends = backends
        self.templates = templates

    @activity.defn(name="prepare_provision")
    async def prepare_provision(self, req: ProvisionRequest) -> ProvisionPlan:
        row = await ws_store.get_workspace(self.pool, req.workspace_id)
        if row is None:
            # The API inserts the row in the transaction that starts the workflow: it may not be
            # committed yet, or it was rolled back. The workflow waits on timers and asks again.
            raise ApplicationError("workspace row not found", type=WORKSPACE_NOT_FOUND, non_retryable=True)
        env = await ws_store.get_env(self.pool, req.workspace_id)
        return plan_provision(self.settings, self.templates, req, env)

    @activity.defn(name="start_instance")
    async def start_instance(self, req: StartRequest) -> StartResult:
        deadline = datetime.fromtimestamp(req.deadline_at, UTC)
        row = await ws_store.get_workspace(self.pool, req.workspace_id)
        if row is None:
            raise ApplicationError("workspace row not found", type=WORKSPACE_NOT_FOUND, non_retryable=True)
        await ws_store.set_provisioning_facts(self.pool, req.workspace_id, deadline, req.timeout_secs)
        try:
            backend = self.backends.get(req.backend)
            async with self.pool.acquire() as conn:
                token = await tokens.replace_instance_token(conn, req.workspace_id)
            spec = InstanceSpec(
                workspace_id=req.workspace_id,
                runtime=req.runtime,
                generation=req.generation,
                template=self.templates.for_workspace(req.template, req.runtime),
                env=await ws_store.get_env(self.pool, req.workspace_id),
                token=token,
                platform_url=self.settings.platform_url,
                tier=row["tier"],
                model=row["model"],
            )
            instance_id = await backend.start(spec)
        except BackendConfigError as exc:
            raise ApplicationError(str(exc), type=BACKEND_CONFIG_ERROR, non_retryable=True) from exc
        except BackendError as exc:
            raise ApplicationError(str(exc), type="BackendError") from exc
        await ws_store.set_instance(self.pool, req.workspace_id, instance_id)
        async with self.pool.acquire() as conn:
            await event_store.insert_event(
                conn,
                EventType.WORKSPACE_PROVISIONING,
                req.workspace_id,
                {
                    "instance_id": instance_id,
                    "backend": req.backend,
                    "generation": req.generation,
                    "timeout_secs": req.timeout_secs,
                    "deadline_at": deadline.isoformat(),
                },
                dedupe_key=f"instance-started:{req.workspace_id}:{req.generation}",
            )
        log.info("workspace %s: started instance %s on %s", req.workspace_id, instance_id, req.backend)
        return StartResult(instance_id)

    @activity.defn(name="record_status")
    async def record_status(self, change: StatusChange) -> bool:
        return await ws_store.apply_status_change(
            self.pool,
            change.workspace_id,
            WorkspaceStatus(change.status),
            change.event_type,
            change.payload,
            change.key,
            change.last_sample_error,
            change.clear_sample_error,
        )

    @activity.defn(name="check_liveness")
    async def check_liveness(self, req: LivenessRequest) -> LivenessReport:
        last = await ws_store.last_heartbeat_at(self.pool, req.workspace_id)
        report = LivenessReport(last.timestamp() if last else None)
        if req.check_instance and req.instance_id:
            try:
                report.instance_running = await self.backends.get(req.backend).is_running(req.instance_id)
            except BackendConfigError as exc:
                raise ApplicationError(str(exc), type=BACKEND_CONFIG_ERROR, non_retryable=True) from exc
        elif req.check_instance:
            report.instance_running = False
        return report

    @activity.defn(name="stop_instance")
    async def stop_instance(self, req: StopRequest) -> None:
        try:
            await self.backends.get(req.backend).stop(req.instance_id)
        except BackendConfigError as exc:
            raise ApplicationError(str(exc), type=BACKEND_CONFIG_ERROR, non_retryable=True) from exc
        except BackendError as exc:
            raise ApplicationError(str(exc), type="BackendError") from exc

    @activity.defn(name="remove_volumes")
    async def remove_volumes(self, req: VolumesRequest) -> None:
        try:
            await self.backends.get(req.backend).remove_volumes(req.workspace_id)
        except BackendError as exc:
            raise ApplicationError(str(exc), type="BackendError") from exc

    @activity.defn(name="record_teardown")
    async def record_teardown(self, record: TeardownRecord) -> None:
        await ws_store.record_teardown(self.pool, record.workspace_id, asdict(record.teardown))

    @activity.defn(name="check_idle")
    async def check_idle(self, workspace_id: str) -> IdleReport:
        last_active, active_tasks = await ws_store.idleness(self.pool, workspace_id)
        return IdleReport(last_active.timestamp() if last_active else None, active_tasks)

    @activity.defn(name="capture_rescue")
    async def capture_rescue(self, req: RescueRequest) -> bool:
        return await capture_rescue_bundle(self.pool, self.backends, self.templates, req, redactor_for)

    @activity.defn(name="record_event")
    async def record_event(self, record: EventRecord) -> None:
        async with self.pool.acquire() as conn:
            await event_store.insert_event(
                conn, record.event_type, record.workspace_id, record.payload, record.key
            )

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
