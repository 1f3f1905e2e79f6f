"""The A2A proxy's clocks (idle timeout reset by events, the per-workspace override, the agent-call
ceiling), its response cap, stale queue entries, and a delegation that outlives its worker and API.

Timeouts here are seconds, not minutes, with margins of seconds around each: the outcome (answered
or queued) is asserted, never a duration."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest

from tests.integration.api import bearer, until
from tests.integration.conftest import Stack
from tests.integration.sse import EventStream
from tests.integration.test_a2a import as_workspace, external, queue_rows, send, start_agent

pytestmark = pytest.mark.integration

IDLE, SLOW, CEILING, PAST_CEILING = 3, 8, 12, 16
QUIET = {"HEARTBEAT_INTERVAL": "3600"}  # registers, then says nothing for the length of a test


@pytest.fixture
async def stack(make_stack: Callable[..., Awaitable[Stack]]) -> Stack:
    return await make_stack(
        MOLECULE_ENV="development",
        A2A_IDLE_TIMEOUT_SECONDS=IDLE,
        A2A_CALL_CEILING_SECONDS=CEILING,
        A2A_QUEUE_TTL_SECONDS=2,
    )


async def test_idle_timeout_is_reset_by_events_and_overridden_per_workspace(stack: Stack) -> None:
    async with stack.client() as client, EventStream(client) as events:
        beating = await start_agent(stack, client, events)
        quiet = await start_agent(stack, client, events, env=QUIET)
        for agent in (beating, quiet):
            agent.faults(a2a="slow", a2a_delay_seconds=SLOW)
        answered = await client.post(f"/workspaces/{beating.id}/a2a", json=send("slow", "idle-1"))
        assert answered.status_code == 200, answered.text  # heartbeats kept resetting the idle timer
        timed_out = await client.post(f"/workspaces/{quiet.id}/a2a", json=send("slow", "idle-2"))
        assert timed_out.status_code == 202 and timed_out.json()["queued"] is True, timed_out.text
        # The agent's own idle timeout (as its runtime sends it in a heartbeat) wins over the default.
        async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(quiet.token)) as runtime:
            beat = {
                "workspace_id": quiet.id,
                "active_tasks": 1,
                "runtime_metadata": {"idle_timeout_seconds": 30},
            }
            assert (await runtime.post("/registry/heartbeat", json=beat)).status_code == 200
        overridden = await client.post(f"/workspaces/{quiet.id}/a2a", json=send("slow", "idle-3"))
        assert overridden.status_code == 200, overridden.text


async def test_calls_end_at_the_ceiling_whatever_the_events(stack: Stack) -> None:
    async with stack.client() as client, EventStream(client) as events:
        agent = await start_agent(stack, client, events)
        agent.faults(a2a="slow", a2a_delay_seconds=PAST_CEILING)
        caller, token = await external(client, name="peer")
        async with as_workspace(stack, token, caller) as peer:
            reply = await peer.post(f"/workspaces/{agent.id}/a2a", json=send("long", "ceiling-1"))
        assert reply.status_code == 202, reply.text  # heartbeats flowed all along; the ceiling ended it
        conn = await asyncpg.connect(stack.database_url)
        try:
            status = await conn.fetchval(
                "SELECT status FROM activity_logs WHERE workspace_id = $1 AND activity_type = 'a2a_send'",
                caller,
            )
        finally:
            await conn.close()
        assert status == "error"


async def test_answers_over_ten_mib_are_refused_and_smaller_ones_stream_whole(stack: Stack) -> None:
    async with stack.client() as client, EventStream(client) as events:
        agent = await start_agent(stack, client, events)
        for declared in (False, True):  # chunked (counted as it arrives) and with a Content-Length
            agent.faults(a2a="large", a2a_response_bytes=11 * 1024 * 1024, a2a_content_length=declared)
            reply = await client.post(f"/workspaces/{agent.id}/a2a", json=send("big"))
            assert reply.status_code == 502, reply.text[:200]
            assert reply.json()["code"] == "response_too_large"
        agent.faults(a2a="large", a2a_response_bytes=3 * 1024 * 1024)
        reply = await client.post(f"/workspaces/{agent.id}/a2a", json=send("big"))
        assert reply.status_code == 200 and len(reply.content) == 3 * 1024 * 1024
        assert reply.json()["result"]["kind"] == "message"


async def test_drop_stale_drops_expired_entries(stack: Stack) -> None:
    async with stack.client() as client, EventStream(client) as events:
        agent = await start_agent(stack, client, events)
        agent.faults(a2a="reset", active_tasks=1)
        queued = await client.post(f"/workspaces/{agent.id}/a2a", json=send("stale", "stale-1"))
        assert queued.status_code == 202
        conn = await asyncpg.connect(stack.database_url)
        try:

            async def expired() -> bool:
                return bool(
                    await conn.fetchval(
                        "SELECT expires_at <= now() FROM a2a_queue WHERE workspace_id = $1", agent.id
                    )
                )

            await until(expired, "the entry to pass its expiry (A2A_QUEUE_TTL_SECONDS=2)")
        finally:
            await conn.close()
        reply = await client.post("/admin/a2a-queue/drop-stale", params={"workspace_id": agent.id})
        assert reply.status_code == 200 and reply.json() == {"dropped": 1}
        assert [r["status"] for r in await queue_rows(stack, agent.id)] == ["dropped"]
        again = await client.post("/admin/a2a-queue/drop-stale", params={"workspace_id": agent.id})
        assert again.json() == {"dropped": 0}


async def test_a_delegation_survives_kill_9_of_its_worker_and_a_restart_of_the_api(stack: Stack) -> None:
    hold = stack.data_dir / "hold"
    hold.touch()
    async with stack.client() as client, EventStream(client) as events:
        agent = await start_agent(stack, client, events)
        agent.faults(a2a="hold", a2a_hold_file=str(hold))
        source, token = await external(client, name="boss")
        async with as_workspace(stack, token) as boss:
            reply = await boss.post(
                f"/workspaces/{source}/delegate", json={"target_id": agent.id, "task": "survive"}
            )
        assert reply.status_code == 202, reply.text
        delegation_id = reply.json()["delegation_id"]

        async def in_flight() -> bool:
            return delegation_id in await agent.received()

        await until(in_flight, "the delegation to reach the agent")
    stack.kill_worker(stack.workers[-1])  # mid-dispatch: the agent is holding the call
    assert stack.api is not None
    stack.api.terminate()
    await asyncio.to_thread(stack.api.wait, 15)
    await stack.start_api()
    stack.start_worker()
    hold.unlink()  # the agent answers now (the dead worker's call, and the retried one)
    async with as_workspace(stack, token) as boss:

        async def completed() -> bool:
            listed = (await boss.get(f"/workspaces/{source}/delegations")).json()
            return bool(listed) and listed[0]["status"] == "completed"

        await until(completed, "the delegation to complete on the new worker", timeout=90)
        [item] = (await boss.get(f"/workspaces/{source}/delegations")).json()
    assert (item["delegation_id"], item["response_preview"]) == (delegation_id, "echo: survive")
    assert (await agent.received()).count(delegation_id) >= 1
