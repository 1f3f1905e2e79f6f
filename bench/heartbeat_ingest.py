"""Heartbeat ingest at fleet scale, against two baselines measured in the same run.

N external workspaces are created and registered through the API, then all beat through
POST /registry/heartbeat at concurrency C for D seconds (after a warm-up pass, so beats are steady
state). Baselines on the same Postgres and Temporal server:
  (a) a bare FastAPI endpoint doing the same single UPDATE with asyncpg (bench/bare_app.py);
  (b) raw Temporal signals per second to the same workspace workflows.
Also: Temporal history added per workspace during the steady phase, and in one simulated hour of
steady beats on the time-skipping server (liveness checks only).

    python bench/heartbeat_ingest.py [--workspaces 2000] [--concurrency 64] [--duration 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from bench.common import REPO, BenchStack, bench_stack, percentile, wait_healthy
from bench.steady_history import simulated_hour_history
from domain.contract import Signal
from domain.models import HeartbeatSignal, workflow_id_for
from molecule.processes import free_port


def loadgen(
    port: int, path: str, requests: Path, concurrency: int, duration: float, count: int | None = None
) -> dict:
    argv = [sys.executable, str(REPO / "bench" / "loadgen.py"), "--port", str(port), "--path", path]
    argv += ["--requests", str(requests), "--concurrency", str(concurrency), "--duration", str(duration)]
    if count:
        argv += ["--count", str(count)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


async def create_fleet(stack: BenchStack, count: int) -> list[tuple[str, str]]:
    limits = httpx.Limits(max_connections=32)
    sem = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=120, limits=limits) as client:

        async def one(i: int) -> tuple[str, str]:
            async with sem:
                created = await client.post("/workspaces", json={"name": f"hb-{i}", "external": True})
                created.raise_for_status()
                ws, token = created.json()["workspace"]["id"], created.json()["auth_token"]
                reply = await client.post(
                    "/registry/register",
                    json={"id": ws, "url": f"http://agent-{i}"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                reply.raise_for_status()
                return ws, token

        return await asyncio.gather(*(one(i) for i in range(count)))


async def wait_all_online(stack: BenchStack, count: int, attempts: int = 120) -> int:
    online = 0
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as client:
        for _ in range(attempts):
            rows = (await client.get("/workspaces", params={"status": "online", "limit": 5000})).json()
            online = len(rows)
            if online >= count:
                break
            await asyncio.sleep(0.5)
    return online


async def quiesce(stack: BenchStack, busy_percent: float = 10.0, calm_seconds: int = 3) -> None:
    """Wait until the worker and the Temporal server are idle, so each measured phase starts alike."""
    procs = [psutil.Process(stack.procs["worker"].pid), psutil.Process(stack.temporal.pid or 0)]
    for proc in procs:
        proc.cpu_percent(None)
    calm = 0
    for _ in range(120):
        await asyncio.sleep(1)
        calm = calm + 1 if sum(p.cpu_percent(None) for p in procs) < busy_percent else 0
        if calm >= calm_seconds:
            return


async def history_lengths(stack: BenchStack, ids: list[str]) -> list[int]:
    from temporalio.client import Client

    client = await Client.connect(stack.temporal.address)
    lengths = []
    for workspace_id in ids:
        history = await client.get_workflow_handle(workflow_id_for(workspace_id)).fetch_history()
        lengths.append(len(history.events))
    return lengths


async def raw_signals(stack: BenchStack, ids: list[str], concurrency: int, duration: float) -> dict:
    from temporalio.client import Client

    client = await Client.connect(stack.temporal.address)
    handles = [client.get_workflow_handle(workflow_id_for(i)) for i in ids]
    latencies: list[float] = []
    deadline = time.perf_counter() + duration

    async def sender(start: int) -> None:
        i = start
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            await handles[i % len(handles)].signal(Signal.HEARTBEAT, HeartbeatSignal())
            latencies.append(time.perf_counter() - began)
            i += concurrency

    began = time.perf_counter()
    await asyncio.gather(*(sender(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - began
    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
    }


def row(name: str, result: dict) -> str:
    return (
        f"{name:<34} {result['rps']:>9.1f} req/s   p50 {result['p50_ms']:>7.2f} ms   "
        f"p99 {result['p99_ms']:>7.2f} ms   n={result['requests']}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspaces", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=15.0)
    args = parser.parse_args()

    async with bench_stack() as stack:
        began = time.monotonic()
        fleet = await create_fleet(stack, args.workspaces)
        print(f"created and registered {len(fleet)} workspaces in {time.monotonic() - began:.1f}s")
        requests = stack.work / "beats.jsonl"
        requests.write_text(
            "\n".join(
                json.dumps(
                    {
                        "headers": {"Authorization": f"Bearer {token}"},
                        "body": {
                            "workspace_id": ws,
                            "error_rate": 0.0,
                            "active_tasks": 0,
                            "uptime_seconds": 60,
                            "runtime_state": "",
                        },
                    }
                )
                for ws, token in fleet
            )
        )
        # Warm-up: one beat per workspace (the first after register is news: one signal each).
        warm = loadgen(stack.api_port, "/registry/heartbeat", requests, args.concurrency, 300, len(fleet))
        print(f"warm-up: {warm['requests']} beats, statuses {warm['statuses']}")
        online = await wait_all_online(stack, len(fleet))
        print(f"online before the steady run: {online}/{len(fleet)}")
        sample = [ws for ws, _ in fleet[:: max(1, len(fleet) // 50)]]
        before = await history_lengths(stack, sample)
        await quiesce(stack)
        ours = loadgen(stack.api_port, "/registry/heartbeat", requests, args.concurrency, args.duration)
        after = await history_lengths(stack, sample)
        added = sum(a - b for a, b in zip(after, before, strict=True)) / len(sample)

        api_rss = psutil.Process(stack.procs["api"].pid).memory_info().rss / 2**20
        bare_port = free_port()
        stack.start(
            "bare",
            "-m",
            "uvicorn",
            "bench.bare_app:app",
            "--port",
            str(bare_port),
            "--log-level",
            "warning",
            "--no-access-log",
        )
        await wait_healthy(f"http://127.0.0.1:{bare_port}/docs")
        await quiesce(stack)
        bare = loadgen(bare_port, "/heartbeat", requests, args.concurrency, args.duration)
        stack.procs.pop("bare").terminate()

        signals = await raw_signals(stack, [ws for ws, _ in fleet], args.concurrency, args.duration)

    hour = await simulated_hour_history()
    print()
    print(f"{args.workspaces} workspaces, concurrency {args.concurrency}, {args.duration:.0f}s per run")
    print(row("heartbeats via Molecule API", ours) + f"   statuses {ours['statuses']}")
    print(row("(a) bare FastAPI + one UPDATE", bare) + f"   statuses {bare['statuses']}")
    print(row("(b) raw Temporal signals", signals))
    print(f"ratio ours / bare endpoint:   {ours['rps'] / bare['rps']:.2f}x   (goal >= 0.7x)")
    print(f"ratio ours / raw signals:     {ours['rps'] / signals['rps']:.2f}x")
    print(
        f"goal >= 1000 beats/s with p99 <= 50 ms: "
        f"{'met' if ours['rps'] >= 1000 and ours['p99_ms'] <= 50 else 'NOT met'}"
    )
    print(
        f"history added per workspace during the {args.duration:.0f}s steady run: {added:.2f} events"
        f" (sample of {len(sample)})"
    )
    print(
        f"history per workspace-hour of steady beats (simulated hour, liveness checks only): {hour} events"
        f" (goal <= 100; a signal per 30 s beat would cost ~720)"
    )
    print(f"API RSS after the run: {api_rss:.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    import os

    os._exit(0)  # skip the Temporal bridge's fragile interpreter teardown
