"""The A2A proxy's cost, its memory on a 10 MiB answer, and how fast the queue drains.

1. 1 KiB `message/send` to the reference agent at concurrency C: straight to the agent (the
   baseline, same run) and through POST /workspaces/{id}/a2a with a workspace token (access check,
   SSRF check after resolution, spooled answer, log rows and event). p50, p99, requests/s, ratios.
2. A 10 MiB answer through the proxy, a few times: the API's RSS growth.
3. Heartbeat that frees capacity → the queued entry delivered: p50 and p99 over N entries.

    python -m bench.a2a_proxy [--concurrency 32] [--duration 10] [--entries 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import psutil

from bench.common import BenchStack, bench_stack, percentile
from bench.heartbeat_ingest import loadgen

TEN_MIB = 10 * 1024 * 1024


def write(faults: Path, modes: dict[str, Any]) -> None:
    """The agent's run-time fault modes (a small local file: read on its next request)."""
    faults.write_text(json.dumps(modes))


def message(i: int, text: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": i,
        "method": "message/send",
        "params": {
            "message": {"role": "user", "messageId": f"m-{i}", "parts": [{"kind": "text", "text": text}]}
        },
    }


async def setup(stack: BenchStack) -> tuple[str, str, str, str, str, Path]:
    """(agent workspace, its token, its URL, a caller workspace, the caller's token, the agent's
    faults file)."""
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=120) as client:
        # The agent beats rarely: this bench sends the beat that frees capacity itself.
        created = (
            await client.post("/workspaces", json={"name": "target", "env": {"HEARTBEAT_INTERVAL": "3600"}})
        ).json()
        agent_id = created["workspace"]["id"]
        for _ in range(600):
            row = (await client.get(f"/workspaces/{agent_id}")).json()
            if row["status"] == "online" and row["url"]:
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"agent never came online: {row}")
        caller = (await client.post("/workspaces", json={"name": "caller", "external": True})).json()
    faults = stack.work / "data" / "workspaces" / agent_id / "configs" / "faults.json"
    return (
        agent_id,
        created["auth_token"],
        row["url"],
        caller["workspace"]["id"],
        caller["auth_token"],
        faults,
    )


def throughput(
    stack: BenchStack, agent_id: str, agent_url: str, caller_id: str, token: str, args: Any
) -> None:
    text = "x" * 1024
    direct_file = stack.work / "direct.jsonl"
    proxy_file = stack.work / "proxy.jsonl"
    direct_file.write_text("\n".join(json.dumps({"body": message(i, text)}) for i in range(200)))
    headers = {"Authorization": f"Bearer {token}", "X-Workspace-ID": caller_id}
    proxy_file.write_text(
        "\n".join(json.dumps({"headers": headers, "body": message(i, text)}) for i in range(200))
    )
    agent_port = urlsplit(agent_url).port or 80
    path = f"/workspaces/{agent_id}/a2a"
    loadgen(agent_port, "/", direct_file, args.concurrency, 2)  # warm-up
    loadgen(stack.api_port, path, proxy_file, args.concurrency, 2)
    runs: dict[str, list[dict[str, Any]]] = {"direct": [], "proxy": []}
    for _ in range(2):  # alternate, so drift hits both alike
        runs["direct"].append(loadgen(agent_port, "/", direct_file, args.concurrency, args.duration))
        runs["proxy"].append(loadgen(stack.api_port, path, proxy_file, args.concurrency, args.duration))
    print(f"1 KiB message/send at concurrency {args.concurrency}, {args.duration:g} s per run, 2 runs each:")
    best: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        for r in results:
            print(
                f"  {name:6} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                f"p99 {r['p99_ms']:7.2f} ms  {r['statuses']}"
            )
        best[name] = {
            "rps": sum(r["rps"] for r in results) / len(results),
            "p50": sum(r["p50_ms"] for r in results) / len(results),
            "p99": sum(r["p99_ms"] for r in results) / len(results),
        }
    d, p = best["direct"], best["proxy"]
    print(
        f"  mean: added p50 {p['p50'] - d['p50']:+.2f} ms (goal <= 3), "
        f"added p99 {p['p99'] - d['p99']:+.2f} ms (goal <= 10), "
        f"throughput {p['rps'] / d['rps']:.2f}x direct (goal >= 0.6)"
    )


async def large_answer(stack: BenchStack, agent_id: str, faults: Path, rounds: int = 5) -> None:
    write(faults, {"a2a": "large", "a2a_response_bytes": TEN_MIB - 4096})
    api = psutil.Process(stack.procs["api"].pid)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=120) as client:
        await client.post(f"/workspaces/{agent_id}/a2a", json=message(0, "warm"))
        before = api.memory_info().rss
        peak = before
        sizes = []
        for i in range(rounds):
            async with client.stream("POST", f"/workspaces/{agent_id}/a2a", json=message(i, "big")) as reply:
                size = 0
                async for chunk in reply.aiter_bytes():
                    size += len(chunk)
                    peak = max(peak, api.memory_info().rss)
                sizes.append((reply.status_code, size))
        after = api.memory_info().rss
    write(faults, {})
    print(f"10 MiB answers through the proxy ({rounds}x, statuses and sizes {sorted(set(sizes))}):")
    print(
        f"  API RSS before {before / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB, "
        f"after {after / 2**20:.1f} MiB: growth {(peak - before) / 2**20:.2f} MiB (goal <= 4)"
    )


async def drain_latency(stack: BenchStack, agent_id: str, token: str, faults: Path, entries: int) -> None:
    """Each entry: the agent drops calls (so the call is queued), then heals; one heartbeat with room
    is sent and the clock runs until the queue row is completed (the agent has answered it)."""
    conn = await asyncpg.connect(stack.dsn)
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as client:
        beat = {"workspace_id": agent_id, "active_tasks": 0, "uptime_seconds": 1}
        auth = {"Authorization": f"Bearer {token}"}
        for i in range(entries):
            write(faults, {"a2a": "reset"})
            reply = await client.post(f"/workspaces/{agent_id}/a2a", json=message(10_000 + i, "later"))
            if reply.status_code != 202:
                raise RuntimeError(f"expected a queued call, got {reply.status_code}: {reply.text}")
            queue_id = reply.json()["queue_id"]
            write(faults, {})
            began = time.perf_counter()
            (await client.post("/registry/heartbeat", json=beat, headers=auth)).raise_for_status()
            while await conn.fetchval("SELECT status FROM a2a_queue WHERE id = $1", queue_id) != "completed":
                await asyncio.sleep(0.002)
                if time.perf_counter() - began > 30:
                    raise RuntimeError(f"entry {queue_id} not delivered within 30 s")
            latencies.append(time.perf_counter() - began)
    await conn.close()
    print(f"heartbeat that frees capacity -> queued entry delivered, {entries} entries:")
    print(
        f"  p50 {percentile(latencies, 0.5) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms (goal p99 <= 1000 ms)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--entries", type=int, default=200)
    args = parser.parse_args()
    async with bench_stack() as stack:
        agent_id, agent_token, agent_url, caller_id, token, faults = await setup(stack)
        await asyncio.to_thread(throughput, stack, agent_id, agent_url, caller_id, token, args)
        await large_answer(stack, agent_id, faults)
        await drain_latency(stack, agent_id, agent_token, faults, args.entries)


if __name__ == "__main__":
    asyncio.run(main())
