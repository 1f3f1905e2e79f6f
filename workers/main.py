from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.worker import Worker

from activities.reconcile import ReconcileActivities, Reconciler
from activities.workspace import WorkspaceActivities
from backends.registry import Backends
from config.settings import Settings
from config.templates import TemplateCatalog
from store.db import create_pool
from store.migrate import apply_migrations
from workflows.reconcile import RECONCILE_WORKFLOW, ReconcileWorkflow, schedule_id
from workflows.workspace import ReaperWorkflow, WorkspaceWorkflow

log = logging.getLogger("molecule.worker")

WORKFLOWS = [WorkspaceWorkflow, ReaperWorkflow, ReconcileWorkflow]


def build_worker(client: Client, activities: WorkspaceActivities, task_queue: str) -> Worker:
    reconciler = Reconciler(
        activities.pool,
        client,
        activities.backends,
        stray_after=timedelta(seconds=activities.settings.reconcile_stray_after_seconds),
    )
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=[*activities.all(), ReconcileActivities(reconciler).reconcile],
    )


async def ensure_reconcile_schedule(client: Client, settings: Settings) -> None:
    """Create the reconcile schedule once; an existing one (another worker made it) is kept."""
    every = timedelta(seconds=settings.reconcile_interval_seconds)
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            RECONCILE_WORKFLOW, id=f"reconcile-{settings.task_queue}", task_queue=settings.task_queue
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(note="Reaps managed instances that no workspace owns any more"),
    )
    try:
        await client.create_schedule(schedule_id(settings.task_queue), schedule)
    except ScheduleAlreadyRunningError:
        pass


async def run_worker(settings: Settings, backends: Backends | None = None) -> None:
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set: the worker needs PostgreSQL (or run `molecule up`)")
    await apply_migrations(settings.database_url)
    pool = await create_pool(settings.database_url, max_size=20)
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    activities = WorkspaceActivities(
        pool, settings, backends or Backends(settings), TemplateCatalog(settings.templates_dir)
    )
    worker = build_worker(client, activities, settings.task_queue)
    await ensure_reconcile_schedule(client, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling task queue %r on %s", settings.task_queue, settings.temporal_address)
    async with worker:
        await stop.wait()
    await pool.close()
