"""Chaos: 100 workspaces (half process, half docker) created, half restarted, all deleted, while the
backends' stop fails ~30% of calls at random, the worker is killed -9 three times and the Temporal
server twice (during starts and during teardowns). Reconcile is off: teardown alone must leave
nothing, no process, container or volume, no live row, no running workflow; and while they run, no
row may disagree with its workflow's status."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest
import yaml
from temporalio.client import Client

from backends.docker import LABEL_MANAGED, LABEL_PLATFORM
from backends.process import ProcessProvisioner
from domain import contract
from domain.models import workflow_id_for
from store.db import create_pool
from tests.integration.api import create

pytestmark = pytest.mark.integration

WORKSPACES = 100
CONVERGE_SECONDS = 420


def templates(root: Path, image: str) -> Path:
    agent = {"HEARTBEAT_INTERVAL": "5"}
    manifests: dict[str, dict[str, object]] = {
        "claude-code": {
            "runtime": "claude-code",
            "backend": "process",
            "command": ["{python}", "-m", "agent"],
        },
        "codex": {"runtime": "codex", "backend": "docker", "image": image},
    }
    for name, manifest in manifests.items():
        (root / name).mkdir(parents=True)
        (root / name / "config.yaml").write_text(yaml.safe_dump(manifest | {"env": agent}))
    return root


async def retrying_503(call, attempts: int = 5):
    """What an operator does with a 503 (the orchestrator was restarting): retry shortly."""
    for attempt in range(attempts):
        reply = await call()
        if reply.status_code != 503 or attempt == attempts - 1:
            return reply
        retried.append(reply.json().get("code"))
        await asyncio.sleep(1)
    return reply


retried: list[str] = []


async def gather_limited(limit: int, coros: list) -> list:
    gate = asyncio.Semaphore(limit)

    async def one(coro):
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def inconsistent_rows(temporal: Client, pool, ids: list[str], settle: float = 120) -> list[str]:
    """Workspaces whose row status differs from their workflow's, once the row has caught up with
    the workflow's last status write (same sequence number); a write still in flight is waited for."""
    pending = set(ids)
    wrong: list[str] = []
    deadline = time.monotonic() + settle
    while pending and time.monotonic() < deadline:
        for w in sorted(pending):
            state = await temporal.get_workflow_handle(workflow_id_for(w)).query(contract.STATE_QUERY)
            row = await pool.fetchrow(
                "SELECT status::text AS status, status_seq FROM workspaces WHERE id = $1", w
            )
            if row["status_seq"] == state["status_seq"]:
                pending.discard(w)
                if row["status"] != state["status"]:
                    wrong.append(f"{w}: row {row['status']}, workflow {state['status']}")
        if pending:
            await asyncio.sleep(0.5)
    return wrong + [f"{w}: row never caught up" for w in sorted(pending)]


async def test_chaos_never_leaks(
    make_stack, own_temporal, docker_client, agent_image, database_url, tmp_path
):
    seed = os.environ.get("CHAOS_SEED") or str(random.randrange(1 << 30))
    retried.clear()
    stack = await make_stack(
        worker_module="tests.integration.chaos_worker",
        temporal=own_temporal.address,
        TEMPLATES_DIR=templates(tmp_path / "templates", agent_image),
        CHAOS_STOP_FAILURE_RATE="0.3",
        CHAOS_SEED=seed,
        DOCKER_NETWORK="host",
        RECONCILE_ENABLED="false",
    )
    rng = random.Random(seed)

    def kill_and_restart_worker() -> None:
        stack.kill_worker(stack.workers[-1])
        stack.start_worker()

    async def kill_and_restart_temporal() -> None:
        own_temporal.kill()
        own_temporal.start()
        await own_temporal.wait_ready(60)

    started = time.monotonic()
    phases: list[str] = []

    def phase(name: str) -> None:
        phases.append(f"{name} {time.monotonic() - started:.0f}s")

    async with stack.client() as client:
        runtimes = ["claude-code", "codex"] * (WORKSPACES // 2)
        created = await gather_limited(
            10, [create(client, name=f"chaos-{i}", runtime=r) for i, r in enumerate(runtimes)]
        )
        ids = [c["workspace"]["id"] for c in created]
        phase("created")
        kill_and_restart_worker()  # 1: while instances are starting
        await kill_and_restart_temporal()  # and the server, while starts are in flight
        phase("killed")

        restarted = rng.sample(ids, WORKSPACES // 2)
        replies = await gather_limited(
            10, [retrying_503(lambda w=w: client.post(f"/workspaces/{w}/restart")) for w in restarted]
        )
        assert all(r.status_code == 202 for r in replies), [r.text for r in replies if r.status_code != 202]
        phase("restarted")
        kill_and_restart_worker()  # 2: while old instances are being stopped
        temporal = await Client.connect(stack.temporal_address)
        pool = await create_pool(database_url)
        inconsistent = await inconsistent_rows(temporal, pool, ids)
        phase("consistency checked")

        replies = await gather_limited(
            10, [retrying_503(lambda w=w: client.delete(f"/workspaces/{w}")) for w in ids]
        )
        assert all(r.status_code in (200, 202) for r in replies), [
            r.text for r in replies if r.status_code >= 300
        ]
        assert all(r.json()["status"] == "removed" for r in replies)
        phase("deleted")
        kill_and_restart_worker()  # 3: while teardowns are retrying
        await kill_and_restart_temporal()  # and the server, while teardowns are retrying
        phase("killed again")

    process = ProcessProvisioner(stack.data_dir, stack.platform_id)

    async def census() -> dict[str, int]:
        running = 0
        for w in ids:
            description = await temporal.get_workflow_handle(f"workspace-{w}").describe()
            running += description.status is not None and description.status.name == "RUNNING"
        reapers = 0
        query = "WorkflowType = 'ReaperWorkflow' AND ExecutionStatus = 'Running'"
        async for _ in temporal.list_workflows(f"{query} AND TaskQueue = '{stack.task_queue}'"):
            reapers += 1
        labels = {"label": [f"{LABEL_MANAGED}=true", f"{LABEL_PLATFORM}={stack.platform_id}"]}
        live_rows = await pool.fetchval(
            "SELECT count(*) FROM workspaces WHERE id = ANY($1::uuid[]) AND status <> 'removed'", ids
        )
        return {
            "processes": len(await process.list_managed()),
            "process_dirs": len(await process.list_volume_owners()),
            "containers": len(docker_client.api.containers(all=True, filters=labels)),
            "volumes": len(docker_client.volumes.list(filters=labels)),
            "rows_not_removed": live_rows,
            "running_workflows": running,
            "running_reapers": reapers,
        }

    try:
        counts = await census()
        deadline = time.monotonic() + CONVERGE_SECONDS
        while any(counts.values()) and time.monotonic() < deadline:
            await asyncio.sleep(2)
            counts = await census()
        injected = sum(
            log.read_text().count("chaos: failing stop") for log in stack.data_dir.glob("worker-*.log")
        )
        leak_events = await pool.fetchval(
            "SELECT count(*) FROM structure_events WHERE workspace_id = ANY($1::uuid[]) "
            "AND event_type = 'WORKSPACE_LEAK_SUSPECT'",
            ids,
        )
        print(
            f"\nchaos seed={seed}: {WORKSPACES} workspaces, {len(restarted)} restarted, all deleted, "
            f"3 worker kills, 2 Temporal server kills, {injected} injected stop failures, "
            f"{leak_events} leak-suspect events, {len(inconsistent)} inconsistent rows, "
            f"{len(retried)} requests retried after a 503 ({sorted(set(retried))}); reconcile off; "
            f"converged in {time.monotonic() - started:.0f}s ({', '.join(phases)}); after: {counts}"
        )
        assert counts == dict.fromkeys(counts, 0), f"leaked after {CONVERGE_SECONDS}s: {counts}"
        assert inconsistent == [], inconsistent
        assert injected > 0, "the fault injection never fired"
        removed = await pool.fetchval(
            "SELECT count(*) FROM workspaces WHERE id = ANY($1::uuid[]) AND status = 'removed'", ids
        )
        assert removed == WORKSPACES
    finally:
        await pool.close()
