"""Reconcile: the last line of defence against leaked instances, run by a Temporal Schedule.

It reaps only what nothing else owns: a managed instance (this platform's label or tag) with no
workspace row, a removed workspace's instance whose workflow has closed, or a stray: an instance of a
live workspace that is not the one its row records, older than `stray_after` (a launch that completed
after its attempt had been retried). It never touches a workspace's current instance while its row is
live (its workflow owns it, including a failed one in its rescue grace), nor anything whose workspace
id is not a strict UUID."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from backends.base import BackendError, ManagedInstance, Provisioner
from backends.registry import Backends
from domain import contract
from domain.contract import implements
from domain.events import EventType
from domain.models import ReconcileReport, workflow_id_for
from domain.status import WorkspaceStatus
from store import events as event_store
from store.reconcile import OwnerRow, owner_rows

log = logging.getLogger("molecule.reconcile")


def is_strict_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


class Reconciler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        client: Client,
        backends: Backends,
        stray_after: timedelta = timedelta(minutes=15),
    ) -> None:
        self.pool = pool
        self.client = client
        self.backends = backends
        self.stray_after = stray_after

    async def _workflow_running(self, workspace_id: str) -> bool:
        try:
            description = await self.client.get_workflow_handle(workflow_id_for(workspace_id)).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return description.status == WorkflowExecutionStatus.RUNNING

    async def _verdict(self, workspace_id: str, rows: dict[str, OwnerRow]) -> str | None:
        """None to reap, else why not."""
        if not is_strict_uuid(workspace_id):
            return "not a strict UUID"
        row = rows.get(workspace_id)
        if row is None:
            return None  # no row: nobody owns it
        if row.status != WorkspaceStatus.REMOVED:
            return f"row is {row.status}"
        if await self._workflow_running(workspace_id):
            return "workflow still running"
        return None

    def _is_stray(self, instance: ManagedInstance, row: OwnerRow | None, now: datetime) -> bool:
        return (
            row is not None
            and row.status != WorkspaceStatus.REMOVED
            and row.instance_id is not None
            and row.instance_id != instance.instance_id
            and instance.launched_at is not None
            and now - instance.launched_at > self.stray_after
        )

    async def _rows(self, workspace_ids: set[str]) -> dict[str, OwnerRow]:
        return await owner_rows(self.pool, [w for w in workspace_ids if is_strict_uuid(w)])

    async def run(self) -> ReconcileReport:
        report = ReconcileReport()
        for name, backend in self.backends.items():
            if name == "external":
                continue
            try:
                await self._reconcile_backend(name, backend, report)
            except BackendError as exc:  # one backend down must not stop the others
                report.errors.append(f"{name}: {exc}")
        log.info(
            "reconcile: examined %d, reaped %d, volumes %d, skipped %s, errors %s",
            report.examined, len(report.reaped), len(report.volumes_removed), report.skipped, report.errors,
        )  # fmt: skip
        return report

    async def _reconcile_backend(self, name: str, backend: Provisioner, report: ReconcileReport) -> None:
        instances = await backend.list_managed()
        volumes = await backend.list_volume_owners()
        rows = await self._rows({i.workspace_id for i in instances} | set(volumes))
        verdicts: dict[str, str | None] = {}  # one look (and one workflow describe) per workspace

        async def verdict(workspace_id: str) -> str | None:
            if workspace_id not in verdicts:
                verdicts[workspace_id] = await self._verdict(workspace_id, rows)
            return verdicts[workspace_id]

        now = datetime.now(UTC)
        stopped: set[str] = set()
        for instance in instances:
            report.examined += 1
            reason = await verdict(instance.workspace_id)
            stray = reason is not None and self._is_stray(instance, rows.get(instance.workspace_id), now)
            if reason is not None and not stray:
                report.skip(reason)
                continue
            await backend.stop(instance.instance_id)
            if not stray:  # a stray's workspace still runs its current instance
                stopped.add(instance.workspace_id)
            report.reaped.append(f"{name}:{instance.instance_id}")
            owner = instance.workspace_id if instance.workspace_id in rows else None
            await self._record(owner, instance.workspace_id, name, instance.instance_id, stray)
        # Volumes go only once nothing of that workspace runs any more.
        running = {i.workspace_id for i in instances} - stopped
        for workspace_id in sorted(set(volumes) - running):
            if await verdict(workspace_id) is None:
                await backend.remove_volumes(workspace_id)
                report.volumes_removed.append(workspace_id)

    async def _record(
        self, owner: str | None, workspace_id: str, backend: str, instance_id: str, stray: bool
    ) -> None:
        """`owner`: the workspace row the event belongs to, None when the instance had no row."""
        reason = "stray" if stray else ("removed" if owner else "orphan")
        async with self.pool.acquire() as conn:
            await event_store.insert_event(
                conn,
                EventType.INSTANCE_REAPED_BY_RECONCILE,
                owner,
                {
                    "workspace_id": workspace_id,
                    "backend": backend,
                    "instance_id": instance_id,
                    "reason": reason,
                },
                dedupe_key=f"reconcile:{backend}:{instance_id}",
            )


class ReconcileActivities:
    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler

    @implements(contract.reconcile)
    async def reconcile(self) -> ReconcileReport:
        return await self.reconciler.run()
