"""Group commit of heartbeats against a real PostgreSQL: batches form, each beat gets its own verdict."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest
import pytest_asyncio

import api.beat_writer
from api.beat_writer import BeatWriter
from domain.status import WorkspaceStatus
from store.db import create_pool
from store.heartbeats import Beat, BeatResult, PendingBeat, record_beats
from store.tokens import hash_token, insert_token, mint_token
from store.workspaces import NewWorkspace, insert_workspace, register

pytestmark = pytest.mark.integration


def beat(uptime: int = 60, **fields: object) -> Beat:
    values: dict = {
        "error_rate": 0.0,
        "sample_error": None,
        "active_tasks": 0,
        "uptime_seconds": uptime,
        "current_task": None,
        "runtime_state": "",
        "monthly_spend": 0,
    }
    return Beat(**(values | fields))


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, max_size=4)
    yield pool
    await pool.close()


async def fleet(pool: asyncpg.Pool, count: int) -> list[tuple[str, str]]:
    """`count` online workspaces, registered, each with its token: [(workspace_id, token_hash)]."""
    made = []
    async with pool.acquire() as conn:
        for i in range(count):
            workspace_id, minted = str(uuid.uuid4()), mint_token()
            await insert_workspace(
                conn,
                NewWorkspace(workspace_id, f"beat-{i}", "claude-code", "external", WorkspaceStatus.ONLINE),
            )
            await insert_token(conn, workspace_id, minted, "instance")
            made.append((workspace_id, minted.token_hash))
    for workspace_id, _ in made:
        await register(pool, workspace_id, "http://agent", None)
    return made


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The workspace ids of every statement the writers send, in order."""
    sent: list[list[str]] = []

    async def counting(conn: asyncpg.Connection, pending: Sequence[PendingBeat]) -> list[BeatResult]:
        sent.append([p.workspace_id for p in pending])
        return await record_beats(conn, pending)

    monkeypatch.setattr(api.beat_writer, "record_beats", counting)
    return sent


def writer_for(pool: asyncpg.Pool, writers: int) -> BeatWriter:
    async def provide() -> asyncpg.Pool:
        return pool

    return BeatWriter(provide, writers=writers)


async def test_concurrent_beats_share_statements_and_each_lands_on_its_own_row(pool, batches):
    workspaces = await fleet(pool, 64)
    writer = writer_for(pool, writers=2)
    results = await asyncio.gather(
        *(
            writer.record(token_hash, ws, beat(uptime=1000 + i))
            for i, (ws, token_hash) in enumerate(workspaces)
        )
    )
    assert [r.verdict for r in results] == ["ok"] * 64
    assert all(r.status is WorkspaceStatus.ONLINE and r.first_since_register for r in results)
    assert len(batches) < 8, batches  # 64 beats, far fewer statements
    assert sorted(ws for batch in batches for ws in batch) == sorted(ws for ws, _ in workspaces)
    rows = await pool.fetch(
        "SELECT id::text, uptime_seconds, last_heartbeat_at FROM workspaces WHERE id = ANY($1::uuid[])",
        [ws for ws, _ in workspaces],
    )
    stored = {r["id"]: r["uptime_seconds"] for r in rows}
    assert stored == {ws: 1000 + i for i, (ws, _) in enumerate(workspaces)}
    assert all(r["last_heartbeat_at"] is not None for r in rows)


async def test_one_batch_answers_each_beat_with_its_own_verdict(pool, batches):
    made = await fleet(pool, 6)
    (ok, ok_hash), (stranger, _), (victim, _), (other, other_hash) = made[:4]
    (revoked, revoked_hash), (gone, gone_hash) = made[4:]
    await pool.execute(
        "UPDATE workspace_auth_tokens SET revoked_at = now() WHERE token_hash = $1", revoked_hash
    )
    await pool.execute(
        "UPDATE workspaces SET status = 'removed', removed_at = now() WHERE id = $1::uuid", gone
    )
    writer = writer_for(pool, writers=1)
    results = await asyncio.gather(
        writer.record(ok_hash, ok, beat(uptime=7, capabilities={"status_mgmt": True}, set_capabilities=True)),
        writer.record(hash_token("not-a-token"), stranger, beat()),
        writer.record(other_hash, victim, beat()),
        writer.record(revoked_hash, revoked, beat()),
        writer.record(gone_hash, gone, beat()),
    )
    assert len(batches) == 1
    assert [r.verdict for r in results] == ["ok", "unknown_token", "wrong_workspace", "revoked", "removed"]
    assert results[0].capabilities == {"status_mgmt": True} and results[0].capabilities_changed
    assert results[2].token_workspace == other
    written = await pool.fetch(
        "SELECT id::text FROM workspaces WHERE last_heartbeat_at IS NOT NULL AND id = ANY($1::uuid[])",
        [ws for ws, _ in made],
    )
    assert [r["id"] for r in written] == [ok]  # only the accepted beat was written


async def test_a_second_beat_of_the_same_workspace_waits_for_the_next_batch(pool, batches):
    (a, a_hash), (b, b_hash) = await fleet(pool, 2)
    writer = writer_for(pool, writers=1)
    results = await asyncio.gather(
        writer.record(a_hash, a, beat(uptime=1, current_task="first")),
        writer.record(b_hash, b, beat(uptime=1)),
        writer.record(a_hash, a, beat(uptime=2, current_task="second")),
    )
    assert [r.verdict for r in results] == ["ok", "ok", "ok"]
    assert batches == [[a, b], [a]]
    assert results[0].first_since_register and not results[2].first_since_register
    row = await pool.fetchrow("SELECT uptime_seconds, current_task FROM workspaces WHERE id = $1::uuid", a)
    assert (row["uptime_seconds"], row["current_task"]) == (2, "second")  # arrival order kept


async def test_beats_one_after_another_are_each_written_at_once(pool, batches):
    (a, a_hash), (b, b_hash) = await fleet(pool, 2)
    writer = writer_for(pool, writers=1)

    async def in_turn() -> list[str]:
        # Awaited directly, so each next beat arrives before the finished writer task is reaped:
        # a writer that just emptied the queue must not leave that beat unserved.
        verdicts = []
        for i in range(20):
            ws, token_hash = (a, a_hash) if i % 2 == 0 else (b, b_hash)
            verdicts.append((await writer.record(token_hash, ws, beat(uptime=i))).verdict)
        return verdicts

    assert await asyncio.wait_for(in_turn(), 10) == ["ok"] * 20
    assert batches == [[a] if i % 2 == 0 else [b] for i in range(20)]


async def test_a_database_failure_reaches_every_waiting_beat_and_the_writer_recovers(pool):
    (a, a_hash), (b, b_hash) = await fleet(pool, 2)
    failures = [OSError("connection refused")]

    async def flaky() -> asyncpg.Pool:
        if failures:
            raise failures.pop()
        return pool

    writer = BeatWriter(flaky, writers=1)
    outcomes = await asyncio.gather(
        writer.record(a_hash, a, beat()), writer.record(b_hash, b, beat()), return_exceptions=True
    )
    assert [type(o) for o in outcomes] == [OSError, OSError]
    assert (await writer.record(a_hash, a, beat())).verdict == "ok"
    assert (await writer.record(b_hash, b, beat())).verdict == "ok"


async def test_a_caller_that_went_away_is_skipped(pool, batches):
    (a, a_hash), (b, b_hash) = await fleet(pool, 2)
    writer = writer_for(pool, writers=1)
    first = asyncio.ensure_future(writer.record(a_hash, a, beat()))
    abandoned = asyncio.ensure_future(writer.record(b_hash, b, beat()))
    await asyncio.sleep(0)  # both queued; the writer has not started yet
    abandoned.cancel()
    assert (await first).verdict == "ok"
    assert batches == [[a]]
    assert await pool.fetchval("SELECT last_heartbeat_at FROM workspaces WHERE id = $1::uuid", b) is None


async def test_a_beat_postgres_refuses_fails_alone(pool, batches):
    (a, a_hash), (b, b_hash), (c, c_hash) = await fleet(pool, 3)
    writer = writer_for(pool, writers=1)
    outcomes = await asyncio.gather(
        writer.record(a_hash, a, beat(uptime=1)),
        writer.record(b_hash, b, beat(active_tasks=2**40)),  # past int4: the schema stops this at the API
        writer.record(c_hash, c, beat(uptime=3)),
        return_exceptions=True,
    )
    assert [getattr(o, "verdict", None) for o in outcomes] == ["ok", None, "ok"]
    assert isinstance(outcomes[1], Exception)
    assert batches == [[a, b, c], [a], [b], [c]]  # the batch, then each beat alone
    stored = await pool.fetch(
        "SELECT id::text, uptime_seconds FROM workspaces"
        " WHERE last_heartbeat_at IS NOT NULL AND id = ANY($1::uuid[])",
        [a, b, c],
    )
    assert {r["id"]: r["uptime_seconds"] for r in stored} == {a: 1, c: 3}


async def test_a_newer_beat_is_never_overwritten_by_an_older_one_across_writers(pool):
    made = await fleet(pool, 64)
    last, last_hash = max(made)  # sorts last: locked last in a batch
    writer = writer_for(pool, writers=4)
    for _ in range(5):
        results = await asyncio.gather(
            writer.record(last_hash, last, beat(current_task="older")),
            *(writer.record(h, ws, beat()) for ws, h in made if ws != last),
            writer.record(last_hash, last, beat(current_task="newer")),
        )
        assert {r.verdict for r in results} == {"ok"}
        stored = await pool.fetchval("SELECT current_task FROM workspaces WHERE id = $1::uuid", last)
        assert stored == "newer"


async def test_a_task_longer_than_a_notify_payload_is_stored_whole(pool):
    ((ws, token_hash),) = await fleet(pool, 1)
    writer = writer_for(pool, writers=1)
    assert (await writer.record(token_hash, ws, beat(current_task="é" * 8000))).verdict == "ok"
    stored = await pool.fetchval("SELECT current_task FROM workspaces WHERE id = $1::uuid", ws)
    assert stored == "é" * 8000
