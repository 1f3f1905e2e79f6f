"""Worker memory with many live workspace workflows.

Creates N external workspaces through the API (each a live WorkspaceWorkflow waiting for its agent),
then reports the worker process's RSS once it is idle, next to its RSS before any workflow existed.

    python -m bench.worker_rss [--workspaces 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import httpx
import psutil

from bench.common import bench_stack


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


async def settle(pid: int, quiet_cpu: float = 5.0, samples: int = 5) -> float:
    """RSS once the worker's CPU has stayed low for `samples` seconds in a row."""
    proc = psutil.Process(pid)
    proc.cpu_percent(None)
    calm = 0
    for _ in range(600):
        await asyncio.sleep(1)
        calm = calm + 1 if proc.cpu_percent(None) < quiet_cpu else 0
        if calm >= samples:
            break
    return rss_mib(pid)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspaces", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    async with bench_stack() as stack:
        worker = stack.procs["worker"].pid
        baseline = await settle(worker)
        began = time.monotonic()
        sem = asyncio.Semaphore(args.concurrency)
        async with httpx.AsyncClient(
            base_url=stack.api_url, timeout=120, limits=httpx.Limits(max_connections=args.concurrency)
        ) as client:

            async def create(i: int) -> None:
                async with sem:
                    reply = await client.post("/workspaces", json={"name": f"rss-{i}", "external": True})
                    reply.raise_for_status()

            await asyncio.gather(*(create(i) for i in range(args.workspaces)))
        created_in = time.monotonic() - began
        loaded = await settle(worker)
        print(
            f"created {args.workspaces} workspaces (live workflows) in {created_in:.1f}s "
            f"({args.workspaces / created_in:.0f}/s)"
        )
        print(f"worker RSS idle, no workflows:        {baseline:7.1f} MiB")
        print(
            f"worker RSS with {args.workspaces} live workflows: {loaded:7.1f} MiB "
            f"(+{(loaded - baseline) * 1024 / args.workspaces:.1f} KiB per workflow; sticky cache holds "
            f"at most 1000 workflows by default, the rest replay on their next task)"
        )


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)
