"""The activity log at size, and notify's latency to an open event stream.

1. 1,000,000 activity rows across 1,000 workspaces (1,000 each, a month of them). Through
   GET /workspaces/{id}/activity, the clients' typical reads: the inbox poll (`type=a2a_receive`
   after a `since_id` cursor), a peer's conversation (`peer_id`), a page back in time
   (`before_ts`). p50/p99 each, against a primary-key read of the same workspace (GET
   /workspaces/{id}) in the same run, and the plan PostgreSQL chose for each (an index, or a scan).
2. POST /workspaces/{id}/notify → AGENT_MESSAGE on an open SSE stream: p50/p99 over N, against the
   notify reply's own round trip.

    python -m bench.activity_log [--workspaces 1000] [--rows-per-workspace 1000] [--samples 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from bench.common import bench_stack, describe_ms, percentile

TYPES = ["a2a_receive", "a2a_send", "task_update", "agent_log", "error"]


async def seed(dsn: str, workspaces: int, per_workspace: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(workspaces)]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            """INSERT INTO workspaces (id, name, runtime, backend, status)
               VALUES ($1, $2, 'external', 'external', 'online')""",
            [(w, f"bench-{i}") for i, w in enumerate(ids)],
        )
        started = time.monotonic()
        # Server-side: each workspace's rows over the last 30 days, a tenth of them with each of
        # ten peers, types spread evenly.
        await conn.execute(
            """INSERT INTO activity_logs (workspace_id, activity_type, source_id, target_id, method,
                                          summary, request_body, status, created_at)
               SELECT w.id,
                      ($3::text[])[1 + (n % 5)],
                      peers[1 + (n % 10)], w.id, 'message/send', 'row ' || n,
                      jsonb_build_object('params', jsonb_build_object('message',
                          jsonb_build_object('parts', jsonb_build_array(
                              jsonb_build_object('kind', 'text', 'text', 'hello ' || n))))),
                      'ok',
                      now() - make_interval(secs => (($2 - n) * 2592000.0 / $2))
               FROM (SELECT id, row_number() OVER () AS rn FROM workspaces WHERE id = ANY($1::uuid[])) w
               CROSS JOIN LATERAL (
                   SELECT array_agg(p.id) AS peers FROM (
                       SELECT id FROM workspaces WHERE id = ANY($1::uuid[]) AND id <> w.id
                       ORDER BY id OFFSET (w.rn % GREATEST(1, cardinality($1::uuid[]) - 11)) LIMIT 10) p) pp
               CROSS JOIN generate_series(1, $2) AS n""",
            ids,
            per_workspace,
            TYPES,
        )
        # Measured in a steady state, not under the seed's own aftermath (autovacuum of a million
        # new rows and the checkpoint that writes them out, both competing for the same two cores).
        await conn.execute("VACUUM (ANALYZE) activity_logs")
        await conn.execute("CHECKPOINT")
        total = await conn.fetchval("SELECT count(*) FROM activity_logs")
        print(f"seeded {total:,} rows across {workspaces:,} workspaces in {time.monotonic() - started:.0f} s")
    finally:
        await conn.close()
    return ids


async def plan(dsn: str, sql: str, *args: object) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f"EXPLAIN {sql}", *args)
    finally:
        await conn.close()
    lines = [r[0] for r in rows]
    scans = [line.strip() for line in lines if "Scan" in line]
    return "; ".join(s.split("  (")[0] for s in scans[:2])


async def reads(client: httpx.AsyncClient, dsn: str, ids: list[str], samples: int) -> None:
    rng = random.Random(7)
    conn = await asyncpg.connect(dsn)
    try:
        # A cursor near each workspace's end (a poller that is nearly caught up) and its peers.
        cursors = {
            r["workspace_id"]: r["cursor"]
            for r in await conn.fetch(
                """SELECT workspace_id::text, ((array_agg(id ORDER BY id DESC))[21])::text AS cursor
                   FROM activity_logs GROUP BY workspace_id"""
            )
        }
        peers = {
            r["workspace_id"]: r["peer"]
            for r in await conn.fetch(
                """SELECT DISTINCT ON (workspace_id) workspace_id::text, source_id::text AS peer
                   FROM activity_logs ORDER BY workspace_id, id"""
            )
        }
    finally:
        await conn.close()
    now = datetime.now(UTC)

    def inbox(w: str) -> str:
        return f"/workspaces/{w}/activity?type=a2a_receive&limit=100&since_id={cursors[w]}"

    def peer(w: str) -> str:
        return f"/workspaces/{w}/activity?peer_id={peers[w]}&limit=50"

    def page(w: str) -> str:
        ts = (now - timedelta(days=rng.uniform(1, 29))).isoformat().replace("+00:00", "Z")
        return f"/workspaces/{w}/activity?before_ts={ts}&limit=50"

    def record(w: str) -> str:
        return f"/workspaces/{w}"

    queries = {"baseline: GET /workspaces/{id}": record, "since_id inbox poll": inbox,
               "peer_id conversation": peer, "before_ts page": page}  # fmt: skip
    medians: dict[str, float] = {}
    for name, path_for in queries.items():
        durations = []
        for _ in range(20):  # warm the pool and the caches
            await client.get(path_for(rng.choice(ids)))
        for _ in range(samples):
            path = path_for(rng.choice(ids))
            started = time.perf_counter()
            reply = await client.get(path)
            durations.append(time.perf_counter() - started)
            assert reply.status_code == 200, (path, reply.text)
        medians[name] = statistics.median(durations)
        ratio = (
            ""
            if name.startswith("baseline")
            else f"  p50 {medians[name] / medians[next(iter(medians))]:.2f}× baseline"
        )
        print(describe_ms(name, durations) + ratio)
    w = ids[0]
    print("plans (PostgreSQL EXPLAIN):")
    rows = "SELECT id FROM activity_logs WHERE workspace_id = $1 AND"
    newest = "ORDER BY created_at DESC, id DESC LIMIT 50"
    explained = {
        "since_id inbox poll": (
            f"{rows} activity_type = 'a2a_receive' AND id > $2 ORDER BY id LIMIT 100",
            w,
            int(cursors[w]),
        ),
        "peer_id conversation": (
            f"{rows} (source_id = $2::uuid OR target_id = $2::uuid) {newest}",
            w,
            peers[w],
        ),
        "before_ts page": (f"{rows} created_at < $2 {newest}", w, now - timedelta(days=15)),
    }
    for name, (sql, *args) in explained.items():
        print(f"  {name:<22} {await plan(dsn, sql, *args)}")


async def notify_latency(client: httpx.AsyncClient, api_url: str, workspace: str, samples: int) -> None:
    arrived: dict[str, float] = {}
    ready, all_arrived = asyncio.Event(), asyncio.Event()

    async def listen() -> None:
        async with httpx.AsyncClient(base_url=api_url, timeout=httpx.Timeout(60, read=None)) as stream_client:
            async with stream_client.stream("GET", f"/workspaces/{workspace}/events") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith(":"):
                        ready.set()
                    elif line.startswith("data:"):
                        event = json.loads(line[5:])
                        if event["event_type"] == "AGENT_MESSAGE":
                            arrived[event["payload"]["message"]] = time.perf_counter()
                            if len(arrived) == samples:
                                all_arrived.set()

    task = asyncio.create_task(listen())
    await asyncio.wait_for(ready.wait(), 30)
    sent: dict[str, float] = {}
    replies = []
    for i in range(samples):
        message = f"m{i}"
        sent[message] = time.perf_counter()
        reply = await client.post(f"/workspaces/{workspace}/notify", json={"message": message})
        replies.append(time.perf_counter() - sent[message])
        assert reply.status_code == 200, reply.text
    try:
        await asyncio.wait_for(all_arrived.wait(), 30)
    except TimeoutError:
        pass  # reported below as fewer arrived
    task.cancel()
    lags = [arrived[m] - sent[m] for m in sent if m in arrived]
    print(describe_ms("baseline: notify reply", replies))
    ratio = percentile(lags, 99) / percentile(replies, 99)
    print(
        describe_ms("notify → AGENT_MESSAGE on SSE", lags)
        + f"  p99 {ratio:.2f}× baseline; {len(lags)}/{samples} arrived"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspaces", type=int, default=1000)
    parser.add_argument("--rows-per-workspace", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    async with bench_stack() as stack:
        ids = await seed(stack.dsn, args.workspaces, args.rows_per_workspace)
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as client:
            await reads(client, stack.dsn, ids, args.samples)
            await notify_latency(client, stack.api_url, ids[0], min(args.samples, 200))


if __name__ == "__main__":
    asyncio.run(main())
