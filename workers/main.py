from __future__ import annotations

import asyncio
import logging
import signal

from temporalio.client import Client
from temporalio.worker import Worker

from activities.workspace import WorkspaceActivities
from backends.registry import Backends
from molecule.settings import Settings
from molecule.templates import TemplateCatalog
from store.db import create_pool
from store.migrate import apply_migrations
from workflows.workspace import ReaperWorkflow, WorkspaceWorkflow

log = logging.getLogger("molecule.worker")


def build_worker(client: Client, activities: WorkspaceActivities, task_queue: str) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[WorkspaceWorkflow, ReaperWorkflow],
        activities=activities.all(),
    )


async def run_worker(settings: Settings) -> None:
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set: the worker needs PostgreSQL (or run `molecule up`)")
    await apply_migrations(settings.database_url)
    pool = await create_pool(settings.database_url, max_size=20)
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    activities = WorkspaceActivities(
        pool, settings, Backends(settings), TemplateCatalog(settings.templates_dir)
    )
    worker = build_worker(client, activities, settings.task_queue)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling task queue %r on %s", settings.task_queue, settings.temporal_address)
    async with worker:
        await stop.wait()
    await pool.close()
