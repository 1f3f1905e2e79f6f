"""Issue 10.2 and 10.3 on real components: the store refuses a status write that is not newer than
the row's, and a cascade finishes when the API dies right after accepting the delete."""

from __future__ import annotations

import asyncio
import signal
import uuid

import asyncpg
import pytest
from temporalio.client import Client

from domain.events import EventType
from domain.models import workflow_id_for
from domain.status import WorkspaceStatus
from store import workspaces as ws_store
from store.db import create_pool
from tests.integration.api import create

pytestmark = pytest.mark.integration


async def test_a_status_write_older_than_the_rows_is_refused(database_url):
    pool = await create_pool(database_url)
    try:
        wid = str(uuid.uuid4())
        async with pool.acquire() as conn:
            await ws_store.insert_workspace(
                conn,
                ws_store.NewWorkspace(wid, "order", "claude-code", "process", WorkspaceStatus.PROVISIONING),
            )

        async def write(status: WorkspaceStatus, seq: int) -> bool:
            return await ws_store.apply_status_change(
                pool, wid, status, EventType.WORKSPACE_ONLINE, {}, f"t:{wid}:{seq}", None, False, seq=seq
            )

        assert await write(WorkspaceStatus.PAUSED, 3)
        assert not await write(WorkspaceStatus.ONLINE, 2), "an older write arriving late is refused"
        assert not await write(WorkspaceStatus.ONLINE, 3), "so is one with the same sequence"
        row = await pool.fetchrow(
            "SELECT status::text AS status, status_seq FROM workspaces WHERE id = $1", wid
        )
        assert (row["status"], row["status_seq"]) == ("paused", 3)
        events = await pool.fetchval("SELECT count(*) FROM structure_events WHERE workspace_id = $1", wid)
        assert events == 1, "a refused write leaves no event either"
        assert await write(WorkspaceStatus.ONLINE, 4)
    finally:
        await pool.close()


async def test_a_cascade_finishes_when_the_api_dies_after_accepting_the_delete(make_stack, database_url):
    stack = await make_stack()
    async with stack.client() as client:
        parent = (await create(client, external=True))["workspace"]["id"]
        children = [
            (await create(client, external=True, parent_id=parent))["workspace"]["id"] for _ in range(3)
        ]
        grandchild = (await create(client, external=True, parent_id=children[1]))["workspace"]["id"]
        everyone = [parent, *children, grandchild]

        pool = await asyncpg.connect(database_url)
        try:
            request = asyncio.create_task(client.delete(f"/workspaces/{parent}", params={"confirm": "true"}))
            # The moment the parent is removed the cascade workflow owns the rest: kill the API then.
            async with asyncio.timeout(30):
                while (
                    await pool.fetchval("SELECT status::text FROM workspaces WHERE id = $1", parent)
                    != "removed"
                ):
                    await asyncio.sleep(0.01)
            assert stack.api is not None
            stack.api.send_signal(signal.SIGKILL)
            stack.api.wait(10)
            request.cancel()

            async with asyncio.timeout(60):
                while True:
                    rows = await pool.fetch(
                        "SELECT status::text AS status, teardown FROM workspaces WHERE id = ANY($1::uuid[])",
                        everyone,
                    )
                    if all(
                        r["status"] == "removed" and '"complete": true' in (r["teardown"] or "") for r in rows
                    ):
                        break
                    await asyncio.sleep(0.1)
        finally:
            await pool.close()

        await stack.start_api()
        for wid in everyone:
            assert (await client.get(f"/workspaces/{wid}")).status_code == 410
        again = await client.delete(f"/workspaces/{parent}")
        assert again.status_code == 410, "nothing left to finish: the retried delete is a plain 410"


async def test_a_retried_delete_of_a_removed_parent_finishes_a_live_child(make_stack, database_url):
    stack = await make_stack()
    async with stack.client() as client:
        parent = (await create(client, external=True))["workspace"]["id"]
        child = (await create(client, external=True, parent_id=parent))["workspace"]["id"]
        # A parent removed alone (as a cascade cut short would leave it), its child still live.
        assert (
            await client.delete(f"/workspaces/{parent}", params={"wait": 30, "confirm": "false"})
        ).status_code == 409
        pool = await create_pool(database_url)
        try:
            await ws_store.apply_status_change(
                pool,
                parent,
                WorkspaceStatus.REMOVED,
                EventType.WORKSPACE_REMOVED,
                {},
                f"t:{parent}",
                None,
                False,
            )
        finally:
            await pool.close()
        assert (await client.get(f"/workspaces/{child}")).json()["status"] == "awaiting_agent"
        reply = await client.delete(f"/workspaces/{parent}", params={"wait": 30})
        assert reply.status_code == 200, reply.text
        assert reply.json()["cascade_deleted"] == 1
        assert (await client.get(f"/workspaces/{child}")).status_code == 410


async def test_no_child_is_left_live_under_a_parent_deleted_while_it_was_created(make_stack):
    stack = await make_stack()
    async with stack.client() as client:
        for _ in range(3):
            parent = (await create(client, external=True))["workspace"]["id"]

            async def child(i: int, parent: str = parent):
                await asyncio.sleep(i * 0.004)  # spread the creates across the delete
                body = {"name": f"c{i}", "external": True, "parent_id": parent}
                return await client.post("/workspaces", json=body)

            # confirm=true: a child that commits before the delete looks is part of its cascade
            # (without it the delete would be a 409 asking for confirmation, depending on timing).
            delete, *children = await asyncio.gather(
                client.delete(f"/workspaces/{parent}", params={"confirm": "true"}),
                *(child(i) for i in range(15)),
            )
            assert delete.status_code in (200, 202), delete.text
            for reply in children:
                assert reply.status_code in (201, 422), reply.text
                if reply.status_code == 201:
                    wid = reply.json()["workspace"]["id"]
                    assert (await client.get(f"/workspaces/{wid}")).status_code == 410, "live under removed"
                else:
                    assert reply.json()["code"] == "unknown_parent"


async def test_delete_wait_on_a_terminated_workflow_is_pending_not_500(make_stack):
    stack = await make_stack()
    async with stack.client() as client:
        wid = (await create(client, external=True))["workspace"]["id"]
        temporal = await Client.connect(stack.temporal_address)
        await temporal.get_workflow_handle(workflow_id_for(wid)).terminate(reason="test")
        reply = await client.delete(f"/workspaces/{wid}", params={"wait": 5})
        assert reply.status_code == 202, reply.text
        assert reply.json()["teardown"] == "pending", "nothing tore it down: reconcile will"
        assert (await client.get(f"/workspaces/{wid}")).status_code == 410
