"""Heartbeat-driven health end to end with the reference agent and its fault modes."""

from __future__ import annotations

import json
import os
import signal

import asyncpg
import httpx
import pytest

from backends.process import parse_instance_id
from tests.integration.api import bearer, create
from tests.integration.sse import EventStream

pytestmark = pytest.mark.integration

FAST = {"HEARTBEAT_INTERVAL": "0.5"}


async def test_wedged_agent_is_degraded(make_stack):
    stack = await make_stack()
    async with stack.client() as client, EventStream(client) as events:
        workspace_id = (await create(client, env={**FAST, "AGENT_WEDGED": "1"}))["workspace"]["id"]
        await events.wait_type("WORKSPACE_ONLINE", workspace_id)
        degraded = await events.wait_type("WORKSPACE_DEGRADED", workspace_id)
        assert degraded["payload"]["runtime_state"] == "wedged"
        row = (await client.get(f"/workspaces/{workspace_id}")).json()
        assert (row["status"], row["runtime_state"]) == ("degraded", "wedged")


async def test_error_rate_degrades_then_recovers_when_the_agent_heals(make_stack):
    stack = await make_stack()
    async with stack.client() as client, EventStream(client) as events:
        workspace_id = (await create(client, env={**FAST, "AGENT_ERROR_RATE": "0.8"}))["workspace"]["id"]
        degraded = await events.wait_type("WORKSPACE_DEGRADED", workspace_id)
        assert degraded["payload"]["error_rate"] == 0.8
        # The same agent now reports 0.0 (its run-time fault override).
        faults = stack.data_dir / "workspaces" / workspace_id / "configs" / "faults.json"
        faults.write_text(json.dumps({"error_rate": 0.0}))
        online = await events.wait_for(
            lambda e: (
                e["event_type"] == "WORKSPACE_ONLINE"
                and e["workspace_id"] == workspace_id
                and e["payload"].get("recovered_from") == "degraded"
            )
        )
        assert online["payload"]["error_rate"] == 0.0


async def test_killed_agent_goes_offline_and_is_restarted(make_stack):
    stack = await make_stack(REMOTE_LIVENESS_STALE_AFTER=3)
    async with stack.client() as client, EventStream(client) as events:
        workspace_id = (await create(client, env=FAST))["workspace"]["id"]
        await events.wait_type("WORKSPACE_ONLINE", workspace_id)
        first = (await client.get(f"/workspaces/{workspace_id}")).json()["instance_id"]
        pid, _ = parse_instance_id(first)
        os.killpg(pid, signal.SIGKILL)
        offline = await events.wait_type("WORKSPACE_OFFLINE", workspace_id, timeout=30)
        assert "not running" in offline["payload"]["reason"]
        restarted = await events.wait_for(
            lambda e: (
                e["event_type"] == "WORKSPACE_PROVISIONING"
                and e["workspace_id"] == workspace_id
                and e["payload"].get("generation") == 2
            ),
            timeout=30,
        )
        assert restarted["payload"]["instance_id"] != first
        await events.wait_for(
            lambda e: (
                e["event_type"] == "WORKSPACE_ONLINE"
                and e["workspace_id"] == workspace_id
                and e["id"] > restarted["id"]
            ),
            timeout=30,
        )
        row = (await client.get(f"/workspaces/{workspace_id}")).json()
        assert row["status"] == "online" and row["instance_id"] == restarted["payload"]["instance_id"]


async def test_stale_external_agent_awaits_then_recovers(make_stack):
    stack = await make_stack(REMOTE_LIVENESS_STALE_AFTER=2)
    async with stack.client() as client, EventStream(client) as events:
        created = await create(client, external=True)
        workspace_id, token = created["workspace"]["id"], created["auth_token"]
        async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(token)) as agent:
            assert (await agent.post("/registry/register", json={"id": workspace_id})).status_code == 200
            await events.wait_type("WORKSPACE_ONLINE", workspace_id)
            waiting = await events.wait_type("WORKSPACE_AWAITING_AGENT", workspace_id, timeout=30)
            assert waiting["payload"]["stale_after_secs"] == 2
            beat = await agent.post("/registry/heartbeat", json={"workspace_id": workspace_id})
            assert beat.json()["status"] == "online", "the reply reports the status this beat brings"
            back = await events.wait_for(
                lambda e: (
                    e["event_type"] == "WORKSPACE_ONLINE"
                    and e["id"] > waiting["id"]
                    and e["workspace_id"] == workspace_id
                )
            )
            assert back["payload"]["recovered_from"] == "awaiting_agent"


async def test_heartbeat_bad_input_and_metadata_semantics(make_stack, database_url):
    stack = await make_stack()
    async with stack.client() as client:
        a = await create(client, name="a", external=True)
        b = await create(client, name="b", external=True)
    a_id, token = a["workspace"]["id"], a["auth_token"]
    conn = await asyncpg.connect(database_url)
    try:
        async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(token)) as agent:

            async def beat(**body):
                return await agent.post("/registry/heartbeat", json={"workspace_id": a_id, **body})

            other = await agent.post("/registry/heartbeat", json={"workspace_id": b["workspace"]["id"]})
            assert other.status_code == 403
            assert (await beat(error_rate=2)).status_code == 422

            assert (await beat(runtime_state="defragmenting")).status_code == 200
            row = await conn.fetchrow(
                "SELECT status::text, runtime_state FROM workspaces WHERE id = $1", a_id
            )
            assert tuple(row) == ("awaiting_agent", "defragmenting"), (
                "stored; no transition for unknown states"
            )

            caps = {"capabilities": {"status_mgmt": True, "streaming": True}, "idle_timeout_seconds": 600}
            assert (await beat(runtime_metadata=caps)).status_code == 200
            assert (await beat()).status_code == 200  # no runtime_metadata: unchanged
            row = await conn.fetchrow(
                "SELECT capabilities, idle_timeout_seconds FROM workspaces WHERE id = $1", a_id
            )
            assert (
                json.loads(row["capabilities"]) == caps["capabilities"] and row["idle_timeout_seconds"] == 600
            )
            assert (await beat(runtime_metadata={"idle_timeout_seconds": 0})).status_code == 200
            row = await conn.fetchrow(
                "SELECT capabilities, idle_timeout_seconds FROM workspaces WHERE id = $1", a_id
            )
            assert (
                row["idle_timeout_seconds"] is None and json.loads(row["capabilities"])["streaming"] is True
            )
            assert (await beat(runtime_metadata={})).status_code == 200  # explicit empty map clears
            row = await conn.fetchrow("SELECT capabilities FROM workspaces WHERE id = $1", a_id)
            assert json.loads(row["capabilities"]) == {}

            # A NULL secret is healed on the next beat (and echoed from then on).
            await conn.execute("UPDATE workspaces SET platform_inbound_secret = NULL WHERE id = $1", a_id)
            healed = (await beat()).json()["platform_inbound_secret"]
            assert healed and healed == (await beat()).json()["platform_inbound_secret"]

            # Removed (delete revokes tokens): the agent is told its workspace is gone.
            await conn.execute(
                "UPDATE workspaces SET status = $2::workspace_status, removed_at = now() WHERE id = $1",
                a_id,
                "removed",
            )
            await conn.execute(
                "UPDATE workspace_auth_tokens SET revoked_at = now() WHERE workspace_id = $1", a_id
            )
            gone = await beat()
            assert gone.status_code == 410
            assert gone.json()["code"] == "workspace_removed"
    finally:
        await conn.close()
