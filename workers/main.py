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
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.worker import Worker

from activities.a2a import A2AActivities
from activities.cascade import CascadeActivities
from activities.reconcile import ReconcileActivities, Reconciler
from activities.workspace import WorkspaceActivities
from backends.registry import Backends
from config.settings import Settings
from config.templates import TemplateCatalog
from domain import contract
from relay.dispatch import Dispatcher
from relay.forward import ForwardConfig, Forwarder
from store.db import create_pool
from store.keyring import load_keyring
from store.listener import Listener
from store.migrate import apply_migrations
from store.secrets import move_plain_env
from workflows.cascade import CascadeWorkflow
from workflows.delegation import DelegationWorkflow
from workflows.reaper import ReaperWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.workspace import WorkspaceWorkflow

log = logging.getLogger("molecule.worker")

WORKFLOWS = [WorkspaceWorkflow, ReaperWorkflow, ReconcileWorkflow, CascadeWorkflow, DelegationWorkflow]


def a2a_activities(activities: WorkspaceActivities, client: Client) -> A2AActivities:
    """The drain and delegations dispatch from the worker, with their own LISTEN connection so the
    idle timeout hears the target's heartbeats."""
    settings = activities.settings
    listener = Listener(settings.database_url or "")
    config = ForwardConfig(
        idle_timeout_seconds=settings.a2a_idle_timeout_seconds,
        ceiling_seconds=settings.a2a_call_ceiling_seconds,
        queue_ttl_seconds=settings.a2a_queue_ttl_seconds,
        docker_network=settings.docker_network,
    )
    forwarder = Forwarder(activities.pool, Dispatcher(settings.ssrf_policy()), listener.watch, config)
    return A2AActivities(activities.pool, forwarder, client)


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
        activities=[
            *activities.all(),
            *CascadeActivities(activities.pool, client).all(),
            *a2a_activities(activities, client).all(),
            ReconcileActivities(reconciler).reconcile,
        ],
    )


def _reconcile_schedule(settings: Settings) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            contract.RECONCILE_WORKFLOW,
            id=contract.reconcile_workflow_id(settings.task_queue),
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.reconcile_interval_seconds))]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(note="Reaps managed instances that no workspace owns any more"),
    )


async def ensure_reconcile_schedule(client: Client, settings: Settings) -> None:
    """Create the reconcile schedule (or bring an existing one to the configured interval), then run
    it once now: a worker that starts after a crash looks for what the crash left at once. With
    RECONCILE_ENABLED=false an existing schedule is paused instead."""
    schedule_id = contract.reconcile_schedule_id(settings.task_queue)
    handle = client.get_schedule_handle(schedule_id)
    if not settings.reconcile_enabled:
        try:
            await handle.pause(note="RECONCILE_ENABLED=false")
        except Exception:  # noqa: S110 - none to pause
            pass
        return
    schedule = _reconcile_schedule(settings)
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:

        def refresh(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await handle.update(refresh)
    await handle.trigger()


async def run_worker(settings: Settings, backends: Backends | None = None) -> None:
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set: the worker needs PostgreSQL (or run `molecule up`)")
    keyring = load_keyring(settings.secrets_encryption_key, settings.data_dir)
    await apply_migrations(settings.database_url)
    pool = await create_pool(settings.database_url, max_size=20)
    await move_plain_env(pool, keyring)
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    activities = WorkspaceActivities(
        pool, settings, backends or Backends(settings), TemplateCatalog(settings.templates_dir), keyring
    )
    worker = build_worker(client, activities, settings.task_queue)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling task queue %r on %s", settings.task_queue, settings.temporal_address)
    async with worker:
        await ensure_reconcile_schedule(client, settings)
        await stop.wait()
    await pool.close()
