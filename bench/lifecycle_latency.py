"""Restart and delete API latency, and delete → instance gone, on the real stack (process backend).

N workspaces run a sleeper process each. Then, one call at a time:
  - POST /workspaces/{id}/restart on each (the reply is the Temporal update's answer),
  - DELETE /workspaces/{id} on each, then the time until the instance's process is gone.
Baseline, measured in the same run on the same rows: GET /workspaces/{id} (the API's floor: auth,
one Postgres read, JSON). The system this replaces aimed at < 500 ms for these calls.

    python -m bench.lifecycle_latency [--workspaces 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from backends.process import ProcessProvisioner, parse_instance_id
from bench.common import bench_stack, describe_ms


async def timed(client: httpx.AsyncClient, method: str, url: str) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    reply = await client.request(method, url)
    return time.perf_counter() - started, reply


async def wait_gone(backend: ProcessProvisioner, instance_id: str, started: float) -> float:
    async with asyncio.timeout(120):
        while await backend.is_running(instance_id):  # noqa: ASYNC110 - not our child to wait on
            await asyncio.sleep(0.002)
    return time.perf_counter() - started


async def main(count: int) -> None:
    templates = Path(tempfile.mkdtemp(prefix="molecule-bench-templates-"))
    (templates / "claude-code").mkdir()
    manifest = {"runtime": "claude-code", "backend": "process", "command": ["sleep", "3600"]}
    (templates / "claude-code" / "config.yaml").write_text(yaml.safe_dump(manifest))
    async with bench_stack({"TEMPLATES_DIR": str(templates)}) as stack:
        backend = ProcessProvisioner(stack.work / "data", stack.platform_id)
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as api:
            ids = []
            for i in range(count):
                reply = await api.post("/workspaces", json={"name": f"bench-{i}", "runtime": "claude-code"})
                reply.raise_for_status()
                ids.append(reply.json()["workspace"]["id"])

            async def instance_of(workspace_id: str, generation_after: str | None = None) -> str:
                async with asyncio.timeout(60):
                    while True:
                        row = (await api.get(f"/workspaces/{workspace_id}")).json()
                        if row["instance_id"] and row["instance_id"] != generation_after:
                            return str(row["instance_id"])
                        await asyncio.sleep(0.05)

            first = {w: await instance_of(w) for w in ids}
            baseline = [(await timed(api, "GET", f"/workspaces/{w}"))[0] for w in ids]

            # Isolated: each restart's new instance is up before the next call, so no call competes
            # with the previous restart's process spawn on this 2-core machine.
            restarts, current = [], dict(first)
            for w in ids:
                elapsed, reply = await timed(api, "POST", f"/workspaces/{w}/restart")
                assert reply.status_code == 202 and reply.json()["status"] == "provisioning", reply.text
                restarts.append(elapsed)
                current[w] = await instance_of(w, current[w])
            # Back to back: the next call goes out while earlier restarts still stop and spawn.
            burst = []
            for w in ids:
                elapsed, reply = await timed(api, "POST", f"/workspaces/{w}/restart")
                assert reply.status_code == 202, reply.text
                burst.append(elapsed)
            second = {w: await instance_of(w, current[w]) for w in ids}

            deletes, gone = [], []
            for w in ids:
                started = time.perf_counter()
                elapsed, reply = await timed(api, "DELETE", f"/workspaces/{w}")
                assert reply.status_code in (200, 202), reply.text
                deletes.append(elapsed)
                gone.append(await wait_gone(backend, second[w], started))
            assert all(parse_instance_id(i) for i in second.values())

    print(f"lifecycle API latency, {count} workspaces on the process backend, one call at a time")
    print(describe_ms("GET /workspaces/{id} (baseline)", baseline))
    print(describe_ms("POST …/restart (isolated)", restarts))
    print(describe_ms("POST …/restart (back to back)", burst))
    print(describe_ms("DELETE /workspaces/{id}", deletes))
    print(describe_ms("DELETE → instance gone", gone))
    print("goal: p99 ≤ 100 ms for restart and delete (the system this replaces aimed at < 500 ms)")
    base = statistics.median(baseline)
    print(
        f"ratio to baseline (p50): restart {statistics.median(restarts) / base:.1f}× "
        f"(back to back {statistics.median(burst) / base:.1f}×), "
        f"delete {statistics.median(deletes) / base:.1f}×"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspaces", type=int, default=200)
    asyncio.run(main(parser.parse_args().workspaces))
