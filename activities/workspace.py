"""The workspace workflow's side effects: store writes, backend calls, rescue bundles."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import backend_outcome, not_found, superseded
from activities.rescue import capture_rescue_bundle, redactor_for
from backends.base import BackendError, InstanceSpec, ManagedInstance, Provisioner
from backends.registry import Backends
from config.settings import Settings
from config.templates import TemplateCatalog
from domain import contract
from domain.contract import ActivityErrorType, implements
from domain.events import EventType
from domain.lifecycle import launch_superseded
from domain.models import (
    EventRecord,
    FilesRequest,
    IdleReport,
    LivenessReport,
    LivenessRequest,
    ProvisionPlan,
    ProvisionRequest,
    RescueRequest,
    StartRequest,
    StartResult,
    StatusChange,
    StopReport,
    StopRequest,
    TeardownRecord,
    VolumesRequest,
)
from domain.redaction import Redactor
from domain.secrets import DECRYPT_GLOBAL_FAILED, DECRYPT_WORKSPACE_FAILED, Scope
from domain.status import WorkspaceStatus
from domain.templates import missing_required_env
from domain.timeouts import resolve_provision_timeout
from store import chat_files as chat_file_store
from store import events as event_store
from store import secrets as secret_store
from store import workspaces as ws_store
from store.keyring import Keyring, load_keyring
from store.objects import ObjectStore, object_store, workspace_prefix
from store.tokens import hash_token

log = logging.getLogger("molecule.activities")

# A start heartbeats this often while its backend launches (its heartbeat timeout is larger).
HEARTBEAT_EVERY = 2.0
SUPERSEDED_STOP_ATTEMPTS = 5


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


def _covered(instances: list[ManagedInstance], below_generation: int | None) -> list[ManagedInstance]:
    if below_generation is None:
        return instances
    return [i for i in instances if i.generation is None or i.generation < below_generation]


async def _heartbeating(task: asyncio.Future[Any]) -> Any:
    """Await `task`, heartbeating meanwhile, so a killed worker is noticed within the heartbeat
    timeout and a cancellation from the workflow reaches us. `task` itself is left to finish: a launch
    must be seen through to be stopped (`_launch`), and a stop or removal may as well complete."""
    while True:
        done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY)
        if done:
            return task.result()
        activity.heartbeat()


class WorkspaceActivities:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        backends: Backends,
        templates: TemplateCatalog,
        keyring: Keyring | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.backends = backends
        self.templates = templates
        self.keyring = keyring or load_keyring(settings.secrets_encryption_key, settings.data_dir)
        self._objects: ObjectStore | None = None

    async def _redactor(self, pool: asyncpg.Pool, workspace_id: str) -> Redactor | None:
        return await redactor_for(pool, workspace_id, self.keyring)

    @implements(contract.prepare_provision)
    async def prepare_provision(self, req: ProvisionRequest) -> ProvisionPlan:
        if not await ws_store.row_committed(self.pool, req.workspace_id):
            # The API inserts the row in the transaction that starts the workflow: it may not be
            # committed yet, or it was rolled back. The workflow waits on timers and asks again.
            raise not_found(req.workspace_id)
        # Names only leave this activity (the missing ones). One that cannot be decrypted counts as
        # set: the start reports it, with the fixed words for a secret that cannot be read.
        values, unreadable = await secret_store.readable_values(self.pool, self.keyring, req.workspace_id)
        return plan_provision(self.settings, self.templates, req, values | dict.fromkeys(unreadable, "?"))

    async def _fence(self, req: StartRequest) -> None:
        fence = await ws_store.launch_fence(self.pool, req.workspace_id)
        if fence is None:
            raise not_found(req.workspace_id)
        if launch_superseded(*fence, req.generation):
            raise superseded(req.workspace_id, req.generation)

    async def _check_not_superseded(self, req: StartRequest) -> None:
        """Before launching: a workspace that moved on gets nothing, and an earlier attempt's launch
        of this generation (whose stop failed) is stopped now; failing that, retried."""
        try:
            await self._fence(req)
        except ApplicationError as err:
            if err.type == ActivityErrorType.SUPERSEDED:
                with backend_outcome("stop of a superseded launch", req.workspace_id):
                    backend = self.backends.get(req.backend)
                    for instance in await backend.list_managed(req.workspace_id):
                        if instance.generation == req.generation:
                            await backend.stop(instance.instance_id)
            raise

    async def _instance_secrets(self, workspace_id: str) -> dict[str, str]:
        try:
            return await secret_store.values_for(self.pool, self.keyring, workspace_id)
        except secret_store.SecretsUndecryptable as exc:
            # Fixed words and type: the key's name, version and the cipher's error are in the log.
            if exc.scope == Scope.GLOBAL:
                kind, message = ActivityErrorType.GLOBAL_SECRET_UNDECRYPTABLE, DECRYPT_GLOBAL_FAILED
            else:
                kind, message = ActivityErrorType.WORKSPACE_SECRET_UNDECRYPTABLE, DECRYPT_WORKSPACE_FAILED
            raise ApplicationError(message, type=kind, non_retryable=True) from None

    @implements(contract.start_instance)
    async def start_instance(self, req: StartRequest) -> StartResult:
        await self._check_not_superseded(req)
        row = await ws_store.get_workspace(self.pool, req.workspace_id)
        if row is None:
            raise not_found(req.workspace_id)
        deadline = datetime.fromtimestamp(req.deadline_at, UTC)
        await ws_store.set_provisioning_facts(self.pool, req.workspace_id, deadline, req.timeout_secs)
        with backend_outcome("start", req.workspace_id):
            backend = self.backends.get(req.backend)
        minted = await ws_store.mint_for_generation(self.pool, req.workspace_id, req.generation)
        if minted is None:  # superseded between the check above and now
            raise superseded(req.workspace_id, req.generation)
        token, token_id = minted
        spec = InstanceSpec(
            workspace_id=req.workspace_id,
            runtime=req.runtime,
            generation=req.generation,
            template=self.templates.for_workspace(req.template, req.runtime),
            env=await self._instance_secrets(req.workspace_id),
            token=token,
            platform_url=self.settings.platform_url,
            tier=row["tier"],
            model=row["model"],
        )
        redactor = Redactor(spec.env.values(), [hash_token(token)])
        with backend_outcome("start", req.workspace_id, redactor):
            instance_id = await self._launch(backend, spec)
        await self._hold_if_faulted(instance_id)
        try:
            # The workspace may have moved on while the launch ran (deleted, paused, restarted): then
            # the launch must not outlive it. Whatever is launched after this check is found by the
            # stop that follows the move, which lists the workspace's instances after it.
            await self._fence(req)
        except BaseException:  # a cancellation arriving here too: the launch must not outlive it
            if instance_id:
                await asyncio.shield(self._stop_superseded(backend, req.workspace_id, instance_id))
            raise
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
        return StartResult(instance_id, token_id)

    async def _launch(self, backend: Provisioner, spec: InstanceSpec) -> str | None:
        launch = asyncio.ensure_future(backend.start(spec))
        try:
            instance_id: str | None = await _heartbeating(launch)
            return instance_id
        except asyncio.CancelledError:
            # The workflow gave up on this start: let the launch finish, then stop what it made.
            try:
                made = await launch
                if made:
                    await backend.stop(made)
            except Exception:
                log.exception("workspace %s: could not stop a cancelled launch", spec.workspace_id)
            raise

    async def _stop_superseded(self, backend: Provisioner, workspace_id: str, instance_id: str) -> None:
        """Stop a launch the workspace no longer wants. Nobody else will (the stop that followed the
        move listed the instances before this launch existed), so keep at it a while, then fail
        retryably: a retried attempt finds the workspace moved on and comes back here."""
        for attempt in range(1, SUPERSEDED_STOP_ATTEMPTS + 1):
            try:
                await backend.stop(instance_id)
                return
            except BackendError:
                if attempt == SUPERSEDED_STOP_ATTEMPTS:
                    with backend_outcome("stop of a superseded launch", workspace_id):
                        raise
                activity.heartbeat()
                await asyncio.sleep(attempt)  # 1 s, 2 s, 3 s … between attempts

    async def _hold_if_faulted(self, instance_id: str | None) -> None:
        marker = self.settings.fault_hold_start
        if marker is None or activity.info().attempt > 1:
            return
        marker.write_text(instance_id or "")
        log.warning("MOLECULE_FAULT_HOLD_START: holding the start of %s", instance_id)
        await _heartbeating(asyncio.get_running_loop().create_future())

    @implements(contract.stop_instances)
    async def stop_instances(self, req: StopRequest) -> StopReport:
        """Stop every instance of the workspace the request covers (not only the recorded one: a
        launch nobody recorded must not outlive it), then confirm none is left."""
        return await _heartbeating(asyncio.ensure_future(self._stop_instances(req)))  # type: ignore[no-any-return]

    async def _stop_instances(self, req: StopRequest) -> StopReport:
        with backend_outcome("stop", req.workspace_id):
            backend = self.backends.get(req.backend)
            found = _covered(await backend.list_managed(req.workspace_id), req.below_generation)
            targets = {i.instance_id for i in found} | ({req.instance_id} if req.instance_id else set())
            for instance_id in sorted(targets):
                await backend.stop(instance_id)
            # Whatever is listed now and was not just stopped appeared meanwhile (a launch racing the
            # stop): not done yet. (A stopped EC2 VM may still list as running for a moment.)
            after = _covered(await backend.list_managed(req.workspace_id), req.below_generation)
            left = [i for i in after if i.instance_id not in targets]
            if left:
                still = [i.instance_id for i in left]
                raise BackendError(f"{len(still)} instance(s) still present after stop: {still}")
        return StopReport(sorted(targets))

    @implements(contract.remove_volumes)
    async def remove_volumes(self, req: VolumesRequest) -> None:
        # A backend this worker cannot drive may be fixed by the next worker: retried, not final.
        with backend_outcome("volume removal", req.workspace_id, config_is_final=False):
            await _heartbeating(
                asyncio.ensure_future(self.backends.get(req.backend).remove_volumes(req.workspace_id))
            )

    @implements(contract.remove_files)
    async def remove_files(self, req: FilesRequest) -> None:
        await _heartbeating(asyncio.ensure_future(self._remove_files(req)))

    async def _remove_files(self, req: FilesRequest) -> None:
        # Objects first: a row without its object is harmless, an object without its row is a leak.
        if self._objects is None:
            self._objects = object_store(self.settings)
        removed = await self._objects.delete_prefix(workspace_prefix(req.workspace_id))
        rows = await chat_file_store.forget_all(self.pool, req.workspace_id)
        if removed or rows:
            log.info("workspace %s: %d chat file(s) removed", req.workspace_id, removed)

    @implements(contract.record_status)
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
            seq=change.seq,
            generation=change.generation,
        )

    @implements(contract.check_liveness)
    async def check_liveness(self, req: LivenessRequest) -> LivenessReport:
        last = await ws_store.last_heartbeat_at(self.pool, req.workspace_id)
        report = LivenessReport(last.timestamp() if last else None)
        if req.check_instance and req.instance_id:
            with backend_outcome("liveness check", req.workspace_id):
                report.instance_running = await self.backends.get(req.backend).is_running(req.instance_id)
        elif req.check_instance:
            report.instance_running = False
        return report

    @implements(contract.record_teardown)
    async def record_teardown(self, record: TeardownRecord) -> None:
        await ws_store.record_teardown(self.pool, record.workspace_id, asdict(record.teardown))
        if record.teardown.complete:
            # Nothing starts with them again: a removed workspace keeps no secret.
            await secret_store.delete_all_of(self.pool, record.workspace_id)

    @implements(contract.check_idle)
    async def check_idle(self, workspace_id: str) -> IdleReport:
        last_active, active_tasks = await ws_store.idleness(self.pool, workspace_id)
        return IdleReport(last_active.timestamp() if last_active else None, active_tasks)

    @implements(contract.capture_rescue)
    async def capture_rescue(self, req: RescueRequest) -> bool:
        return await capture_rescue_bundle(
            self.pool, self.backends, self.templates, req, self._redactor, self.keyring
        )

    @implements(contract.record_event)
    async def record_event(self, record: EventRecord) -> None:
        async with self.pool.acquire() as conn:
            await event_store.insert_event(
                conn, record.event_type, record.workspace_id, record.payload, record.key
            )

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
        ]
