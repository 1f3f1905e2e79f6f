"""Create → provision → register or deadline, end to end: HTTP API, Temporal dev server, Postgres,
the process backend and the reference agent."""

from __future__ import annotations

import httpx
import pytest
from temporalio.client import Client

from domain.search_attributes import WORKSPACE_STATUS
from tests.integration.api import create
from tests.integration.sse import EventStream

pytestmark = pytest.mark.integration

FAST_AGENT = {"HEARTBEAT_INTERVAL": "1"}


async def workflow_status_attribute(stack, workspace_id: str) -> str | None:
    client = await Client.connect(stack.temporal_address)
    description = await client.get_workflow_handle(f"workspace-{workspace_id}").describe()
    return description.typed_search_attributes.get(WORKSPACE_STATUS)


async def test_create_over_http_goes_online(make_stack):
    stack = await make_stack()
    async with stack.client() as client, EventStream(client) as events:
        created = await create(client, runtime="claude-code", env=FAST_AGENT)
        workspace = created["workspace"]
        assert workspace["status"] == "provisioning"
        assert workspace["backend"] == "process"
        assert len(created["auth_token"]) >= 43
        online = await events.wait_type("WORKSPACE_ONLINE", workspace["id"])
        assert online["payload"]["url"].startswith("http://127.0.0.1:")
        assert online["payload"]["agent_card"]["name"]
        # The heartbeat fan-out reaches SSE too (NOTIFY only, no row).
        await events.wait_type("WORKSPACE_HEARTBEAT", workspace["id"])
        row = (await client.get(f"/workspaces/{workspace['id']}")).json()
        assert row["status"] == "online"
        assert row["instance_id"].startswith("process:")
        assert row["last_heartbeat_at"] is not None
        assert row["provision_deadline_at"] is not None
        # Operators see the status in the Temporal UI too.
        assert await workflow_status_attribute(stack, workspace["id"]) == "online"
        # The agent's A2A endpoint answers at the URL it registered.
        async with httpx.AsyncClient() as raw:
            reply = await raw.post(
                online["payload"]["url"],
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "message/send",
                    "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": "hi"}]}},
                },
            )
        assert "hi" in reply.json()["result"]["parts"][0]["text"]


async def test_agent_that_never_registers_fails_at_its_deadline(make_stack):
    stack = await make_stack(PROVISION_TIMEOUT_SECONDS=5)
    async with stack.client() as client, EventStream(client) as events:
        created = await create(client, runtime="hermes", env={"AGENT_NEVER_REGISTER": "1"})
        workspace_id = created["workspace"]["id"]
        failed = await events.wait_type("WORKSPACE_PROVISION_FAILED", workspace_id, timeout=30)
        assert failed["payload"]["source"] == "provision_timeout"
        assert failed["payload"]["timeout_secs"] == 5
        assert failed["payload"]["runtime"] == "hermes"
        row = (await client.get(f"/workspaces/{workspace_id}")).json()
        assert row["status"] == "failed"
        assert row["last_sample_error"].startswith("provisioning timed out")
        assert await workflow_status_attribute(stack, workspace_id) == "failed"


async def test_worker_killed_mid_provisioning_still_ends_online(make_stack):
    # The agent waits before registering, so the first worker dies while the workspace provisions.
    stack = await make_stack()
    async with stack.client() as client, EventStream(client) as events:
        created = await create(client, env={**FAST_AGENT, "AGENT_BOOT_DELAY_SECONDS": "4"})
        workspace_id = created["workspace"]["id"]
        first_worker = stack.workers[0]
        started = await events.wait_type("WORKSPACE_PROVISIONING", workspace_id)
        assert started["payload"]["instance_id"].startswith("process:")
        row = (await client.get(f"/workspaces/{workspace_id}")).json()
        assert row["status"] == "provisioning"
        stack.kill_worker(first_worker)
        stack.start_worker()
        online = await events.wait_type("WORKSPACE_ONLINE", workspace_id, timeout=60)
        assert online["payload"]["url"]
        row = (await client.get(f"/workspaces/{workspace_id}")).json()
        assert row["status"] == "online"
