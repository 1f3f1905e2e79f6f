"""Event replay is complete: a stream that resumes pages through the whole backlog, then follows live
events with no gap and no duplicate, while events keep committing, some of them out of id order."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

import pytest

from store import events as event_store
from store.db import create_pool
from tests.integration.api import create
from tests.integration.sse import EventStream

pytestmark = pytest.mark.integration

BACKLOG = 1500  # more than one page of the table, committed before anyone listens
WRITERS = 5
PER_WRITER = 500  # 2,500 events committed while the clients replay and follow


def ids_of(stream: EventStream, run: str) -> list[int]:
    return [e["id"] for e in stream.events if (e.get("payload") or {}).get("run") == run]


async def test_replay_pages_the_backlog_then_follows_live_with_no_gap_and_no_duplicate(
    make_stack, database_url
):
    stack = await make_stack()
    run = uuid.uuid4().hex
    async with stack.client() as client:
        wid = (await create(client, external=True))["workspace"]["id"]
    pool = await create_pool(database_url, max_size=WRITERS + 2)
    try:
        baseline = await pool.fetchval("SELECT COALESCE(max(id), 0) FROM structure_events")
        written: list[int] = []

        async def write(conn, n: object) -> int:
            event = await event_store.insert_event(conn, "REPLAY_TEST", wid, {"run": run, "n": n})
            assert event is not None
            return int(event["id"])

        async with pool.acquire() as conn, conn.transaction():
            written += [await write(conn, n) for n in range(BACKLOG)]

        async def writer(k: int) -> list[int]:
            ids = []
            for n in range(PER_WRITER):
                async with pool.acquire() as conn, conn.transaction():
                    ids.append(await write(conn, f"{k}-{n}"))
            return ids

        async with (
            stack.client() as client,
            EventStream(client, f"/events?since={baseline}") as since,
            EventStream(client, f"/workspaces/{wid}/events?since=0") as one_workspace,
            EventStream(client, "/events", headers={"Last-Event-ID": str(baseline)}) as resumed,
        ):
            streams = (since, one_workspace, resumed)
            # An id allocated now and committed only after higher ids have been sent live.
            held_conn = await pool.acquire()
            held_tx = held_conn.transaction()
            await held_tx.start()
            held = await write(held_conn, "held")
            try:
                for ids in await asyncio.gather(*(writer(k) for k in range(WRITERS))):
                    written += ids
                for stream in streams:
                    await stream.wait_for(lambda e: e["id"] > held and e["event_type"] == "REPLAY_TEST", 120)
                await held_tx.commit()
            finally:
                await pool.release(held_conn)
            written.append(held)
            async with pool.acquire() as conn, conn.transaction():
                last = await write(conn, "last")
            written.append(last)
            for stream in streams:
                await stream.wait_for(lambda e: e["id"] == last, 120)

            assert len(written) == BACKLOG + WRITERS * PER_WRITER + 2
            for stream in streams:
                received = ids_of(stream, run)
                duplicates = [i for i, count in Counter(received).items() if count > 1]
                missing = sorted(set(written) - set(received))
                assert not missing, f"{stream.path}: {len(missing)} missing, first {missing[:10]}"
                assert not duplicates, f"{stream.path}: duplicates {duplicates[:10]}"
                assert held in received
    finally:
        await pool.close()


async def test_a_client_that_falls_behind_live_still_gets_every_event_once(make_stack, database_url):
    """A client that stops reading while thousands of events commit: the hub's queue for it fills up
    and drops notifications; the stream re-reads the table and sends every event exactly once."""
    stack = await make_stack()
    run = uuid.uuid4().hex
    async with stack.client() as client:
        wid = (await create(client, external=True))["workspace"]["id"]
    pool = await create_pool(database_url, max_size=WRITERS + 1)
    # Events bigger than a NOTIFY (they travel by id and are read back) fill the socket buffers
    # (a few MiB on loopback) long before 2,500 of them are written: the stream blocks, its queue fills.
    bulk = "x" * 16_000
    try:
        async with (
            stack.client() as client,
            client.stream("GET", f"/workspaces/{wid}/events", timeout=None) as response,
        ):
            lines = response.aiter_lines()
            assert await anext(lines) == ": connected"

            async def writer(k: int) -> list[int]:
                ids = []
                for n in range(PER_WRITER):
                    async with pool.acquire() as conn, conn.transaction():
                        event = await event_store.insert_event(
                            conn, "REPLAY_TEST", wid, {"run": run, "n": f"{k}-{n}", "bulk": bulk}
                        )
                        assert event is not None
                        ids.append(int(event["id"]))
                return ids

            written = [i for ids in await asyncio.gather(*(writer(k) for k in range(WRITERS))) for i in ids]
            async with pool.acquire() as conn, conn.transaction():
                sentinel = await event_store.insert_event(conn, "REPLAY_TEST", wid, {"run": run, "n": "last"})
            assert sentinel is not None
            received: list[int] = []
            resume_ids: list[int] = []
            async with asyncio.timeout(120):  # a bound on a stream that lost events, not a measurement
                async for line in lines:  # only now does the client read again
                    if line.startswith("id:"):
                        resume_ids.append(int(line[3:]))
                    if not line.startswith("data:"):
                        continue
                    event = json.loads(line[5:])
                    if event["payload"].get("run") == run:
                        received.append(event["id"])
                    if event["id"] == sentinel["id"]:
                        break
        duplicates = [i for i, count in Counter(received).items() if count > 1]
        missing = sorted(set(written) - set(received))
        assert not missing, f"{len(missing)} missing, first {missing[:10]}"
        assert not duplicates, duplicates[:10]
        assert resume_ids == sorted(resume_ids), "Last-Event-ID never goes back, even for a late commit"
        assert "fell behind" in stack.logs("api"), "the queue never filled: the test did not test it"
    finally:
        await pool.close()
