"""Deadline precision on the real dev server.

N workspaces whose agents never register, with a D-second deadline, created at once. For each:
(failed event persisted - (row created_at + D)), so the lag counts from the operator's click, and the
burst's own start-up cost is part of it. Baseline, measured in the same run on the same rows: the
sweep this replaces, a loop that every 30 s selects provisioning rows past their deadline.

    python -m bench.deadline_precision [--workspaces 50] [--deadline 5] [--sweep-interval 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

from bench.common import REPO, bench_stack, percentile


def describe(name: str, lags: list[float]) -> str:
    return (
        f"{name:<28} n={len(lags):<4} median={statistics.median(lags):8.3f}s  "
        f"p99={percentile(lags, 99):8.3f}s  max={max(lags):8.3f}s"
    )


async def sweep_baseline(dsn: str, ids: set[str], interval: float, seen: dict[str, datetime]) -> None:
    """The old sweeper: wakes every `interval`, finds provisioning rows past their deadline."""
    conn = await asyncpg.connect(dsn)
    try:
        while len(seen) < len(ids):
            await asyncio.sleep(interval)
            rows = await conn.fetch(
                """SELECT id::text, now() AS swept_at FROM workspaces
                   WHERE id = ANY($1::uuid[]) AND provision_deadline_at <= now()""",
                list(ids),
            )
            for row in rows:
                seen.setdefault(row["id"], row["swept_at"])
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspaces", type=int, default=50)
    parser.add_argument("--deadline", type=int, default=5)
    parser.add_argument("--sweep-interval", type=float, default=30.0)
    parser.add_argument(
        "--agent",
        choices=("reference", "idle"),
        default="reference",
        help="reference: `molecule agent` with AGENT_NEVER_REGISTER (boots a real HTTP server); "
        "idle: a process that never registers and uses no CPU (isolates the control plane's own lag)",
    )
    args = parser.parse_args()

    templates = REPO / "templates"
    if args.agent == "idle":
        templates = Path(tempfile.mkdtemp(prefix="molecule-bench-templates-"))
        (templates / "claude-code").mkdir(parents=True)
        (templates / "claude-code" / "config.yaml").write_text(
            'runtime: claude-code\nbackend: process\ncommand: ["sleep", "600"]\n'
        )
    extra = {"PROVISION_TIMEOUT_SECONDS": str(args.deadline), "TEMPLATES_DIR": str(templates)}
    async with bench_stack(extra) as stack:
        dsn = stack.dsn
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as client:
            body = {"name": "bench", "runtime": "claude-code", "env": {"AGENT_NEVER_REGISTER": "1"}}
            started = time.monotonic()
            replies = await asyncio.gather(
                *(client.post("/workspaces", json=body) for _ in range(args.workspaces))
            )
            ids = {r.json()["workspace"]["id"] for r in replies if r.status_code == 201}
            print(
                f"created {len(ids)} workspaces in {time.monotonic() - started:.2f}s;"
                f" deadline {args.deadline}s; agent {args.agent}"
            )

        swept: dict[str, datetime] = {}
        sweeper = asyncio.create_task(sweep_baseline(dsn, ids, args.sweep_interval, swept))
        conn = await asyncpg.connect(dsn)
        try:
            rows: list[asyncpg.Record] = []
            give_up = time.monotonic() + args.deadline + 120
            while time.monotonic() < give_up:
                rows = await conn.fetch(
                    """SELECT w.id::text AS id, w.provision_deadline_at, e.created_at,
                              w.created_at AS row_created_at
                       FROM workspaces w JOIN structure_events e
                         ON e.workspace_id = w.id AND e.event_type = 'WORKSPACE_PROVISION_FAILED'
                       WHERE w.id = ANY($1::uuid[])""",
                    list(ids),
                )
                if len(rows) == len(ids):
                    break
                await asyncio.sleep(0.5)
            started_rows = await conn.fetch(
                """SELECT w.created_at AS created, e.created_at AS started,
                          w.provision_deadline_at AS deadline
                   FROM workspaces w JOIN structure_events e
                     ON e.workspace_id = w.id AND e.event_type = 'WORKSPACE_PROVISIONING'
                   WHERE w.id = ANY($1::uuid[])""",
                list(ids),
            )
            await asyncio.wait_for(sweeper, args.sweep_interval * 2 + 10)
            deadlines = {r["id"]: r["provision_deadline_at"] for r in rows}
        finally:
            await conn.close()

        due = timedelta(seconds=args.deadline)
        lags = [(r["created_at"] - (r["row_created_at"] + due)).total_seconds() for r in rows]
        sweep_lags = [(swept[i] - deadlines[i]).total_seconds() for i in deadlines if i in swept]
        print(f"failed on time: {len(rows)}/{len(ids)}")
        print(
            describe(
                "instance start latency",
                [(r["started"] - r["created"]).total_seconds() for r in started_rows],
            )
        )
        print(
            describe(
                "deadline - create", [(r["deadline"] - r["created"]).total_seconds() for r in started_rows]
            )
        )
        print(describe("workflow timer (this), from created_at + timeout", lags))
        print(describe(f"sweep every {args.sweep_interval:.0f}s (baseline)", sweep_lags))
        print(
            f"ratio p99 sweep/timer: {percentile(sweep_lags, 99) / max(percentile(lags, 99), 1e-6):.1f}x;"
            f" goal p99 <= 250 ms from created_at + timeout: "
            f"{'met' if percentile(lags, 99) <= 0.25 else 'NOT met'}"
        )


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # skip the Temporal bridge's fragile interpreter teardown
