"""The agent's side of the platform, end to end on real Postgres, Temporal, API and worker: state
polling, the activity log, notify, tokens and the first-register bootstrap, in the shapes the SDK,
the runtime and the CLI send and read."""

from __future__ import annotations

import asyncio
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.integration.api import bearer, create, until
from tests.integration.conftest import Stack
from tests.integration.sse import EventStream

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(make_stack: Callable[..., Awaitable[Stack]]) -> Stack:
    return await make_stack(REGISTER_CLAIM_WINDOW_SECONDS=3600)


def agent(stack: Stack, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.api_url, headers=bearer(token), timeout=30)


async def online_external(stack: Stack, client: httpx.AsyncClient, **body: Any) -> tuple[str, str]:
    created = await create(client, external=True, **body)
    wid, token = created["id"], created["auth_token"]
    async with agent(stack, token) as me:
        assert (
            await me.post("/registry/register", json={"id": wid, "url": "remote://no-inbound"})
        ).status_code == 200
        assert (await me.post("/registry/heartbeat", json={"workspace_id": wid})).status_code == 200

    async def online() -> bool:
        return bool((await client.get(f"/workspaces/{wid}")).json()["status"] == "online")

    await until(online, f"{wid} online")
    return wid, token


async def test_create_and_health_carry_the_original_top_level_fields(stack: Stack) -> None:
    async with stack.client() as client:
        created = await create(client, name="shape", external=True)
        assert created["id"] == created["workspace"]["id"]
        assert created["status"] == "awaiting_agent" == created["workspace"]["status"]
        health = (await client.get("/health")).json()
        assert health["status"] == "ok" and health["database"] == "ok"
        assert isinstance(health["version"], str) and health["version"]


async def test_state_for_online_paused_and_removed(stack: Stack) -> None:
    async with stack.client() as client:
        wid, token = await online_external(stack, client, name="stateful")
        _, other_token = await online_external(stack, client, name="other")
        async with agent(stack, token) as me, agent(stack, other_token) as stranger:
            reply = await me.get(f"/workspaces/{wid}/state")
            assert reply.status_code == 200
            assert reply.json() == {
                "workspace_id": wid,
                "status": "online",
                "paused": False,
                "deleted": False,
            }
            # Its own record, too (the runtime reads its parent_id there); not another's.
            assert (await me.get(f"/workspaces/{wid}")).json()["id"] == wid
            assert (await stranger.get(f"/workspaces/{wid}")).status_code == 403
            assert (await stranger.get(f"/workspaces/{wid}/state")).status_code == 403
            async with httpx.AsyncClient(base_url=stack.api_url) as anonymous:
                assert (await anonymous.get(f"/workspaces/{wid}/state")).status_code == 401

            assert (await client.post(f"/workspaces/{wid}/pause")).status_code in (200, 202)
            state = (await me.get(f"/workspaces/{wid}/state")).json()
            assert state["status"] == "paused" and state["paused"] is True and state["deleted"] is False

            assert (await client.delete(f"/workspaces/{wid}")).status_code in (200, 202)
            # The SDK stops its loops on 404; its token is revoked with the delete, and still hears it.
            gone = await me.get(f"/workspaces/{wid}/state")
            assert gone.status_code == 404
            assert gone.json()["deleted"] is True and gone.json()["status"] == "removed"
            assert (await client.get(f"/workspaces/{wid}/state")).json()["deleted"] is True
            # Everywhere else a removed workspace is 410, to its agent and to the operator.
            for caller in (me, client):
                for method, path, body in (
                    ("POST", "activity", report()),
                    ("GET", "activity", None),
                    ("POST", "notify", {"message": "too late"}),
                ):
                    gone = await caller.request(method, f"/workspaces/{wid}/{path}", json=body)
                    assert gone.status_code == 410, (method, path, gone.text)
                    assert gone.json()["code"] == "workspace_removed"
        missing = await client.get(f"/workspaces/{uuid.uuid4()}/state")
        assert missing.status_code == 404 and missing.json()["deleted"] is True


def rpc(text: str, message_id: str, role: str = "user", rpc_id: object = 1) -> dict[str, Any]:
    message = {"role": role, "messageId": message_id, "parts": [{"kind": "text", "text": text}]}
    return {"jsonrpc": "2.0", "id": rpc_id, "method": "message/send", "params": {"message": message}}


def report(**fields: Any) -> dict[str, Any]:
    return {"activity_type": "agent_log", "summary": "did a thing"} | fields


async def test_activity_is_reported_filtered_and_paged(stack: Stack) -> None:
    async with stack.client() as client, EventStream(client) as events:
        wid, token = await online_external(stack, client, name="busy")
        peer, _ = await online_external(stack, client, name="peer")
        async with agent(stack, token) as me:
            # The runtime's report_activity shape.
            sent = await me.post(
                f"/workspaces/{wid}/activity",
                json={
                    "activity_type": "a2a_send",
                    "source_id": wid,
                    "target_id": peer,
                    "method": "message/send",
                    "summary": "asked the peer, api_key=sk-live-abcdefghijklmnop1234",
                    "status": "ok",
                    "request_body": {"task": "hi", "password": "hunter2hunter2"},
                    "response_body": {"result": "hello"},
                },
            )
            assert sent.status_code == 200 and sent.json()["status"] == "logged"
            logged = await events.wait_type("ACTIVITY_LOGGED", wid)
            assert logged["payload"]["activity_id"] == sent.json()["id"]
            assert "sk-live" not in str(logged) and "hunter2" not in str(logged) and "task" not in str(logged)

            ids = [sent.json()["id"]]
            for i in range(4):
                kind = "task_update" if i % 2 else "agent_log"
                r = await me.post(
                    f"/workspaces/{wid}/activity", json=report(activity_type=kind, summary=f"n{i}")
                )
                ids.append(r.json()["id"])
            # A repeated idempotency key is one row.
            first = await me.post(f"/workspaces/{wid}/activity", json=report(idempotency_key="k1"))
            again = await me.post(f"/workspaces/{wid}/activity", json=report(idempotency_key="k1"))
            assert first.json()["id"] == again.json()["id"] and again.json()["duplicate"] is True
            ids.append(first.json()["id"])

            rows = (await me.get(f"/workspaces/{wid}/activity")).json()
            assert [r["id"] for r in rows] == ids, "oldest first: the pollers' next cursor is the last"
            newest_first = (await me.get(f"/workspaces/{wid}/activity", params={"order": "desc"})).json()
            assert [r["id"] for r in newest_first] == ids[::-1]
            stored = next(r for r in rows if r["activity_type"] == "a2a_send")
            assert stored["target_id"] == peer and stored["source_id"] == wid
            assert "hunter2" not in str(stored) and "sk-live" not in str(stored)
            assert stored["response_body"] == {"result": "hello"}
            self_action = next(r for r in rows if r["summary"] == "n0")
            assert self_action["target_id"] == wid, "a self-action carries its own id as target"

            async def get(**params: Any) -> httpx.Response:
                return await me.get(f"/workspaces/{wid}/activity", params=params)

            assert [r["summary"] for r in (await get(type="task_update")).json()] == ["n1", "n3"]
            assert [r["id"] for r in (await get(limit=2)).json()] == ids[-2:], "the latest, in order"
            after = (await get(since_id=ids[2])).json()
            assert [r["id"] for r in after] == ids[3:], "after the cursor, oldest first"
            assert [r["id"] for r in (await get(since_id=ids[2], limit=2)).json()] == ids[3:5]
            assert [r["id"] for r in (await get(peer_id=peer)).json()] == [ids[0]]
            assert [r["id"] for r in (await get(peer_id=peer, type="agent_log")).json()] == []
            assert len((await get(since_secs=3600)).json()) == len(ids)
            assert (await get(source="agent")).json() and (await get(source="canvas")).json() == []
            # Paging back by time: strictly older than the oldest row of the first page.
            page = (await get(limit=3)).json()
            older = (await get(before_ts=page[0]["created_at"])).json()
            assert older and all(r["created_at"] < page[0]["created_at"] for r in older)
            future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
            assert len((await get(before_ts=future, type="task_update")).json()) == 2

            bad = {
                "peer_id": "not-a-uuid",
                "before_ts": "2026-01-01' OR 1=1--",
                "since_secs": "-5",
                "limit": "100000",
                "type": "bogus",
                "source": "everyone",
                "since_id": "abc",
            }
            for name, value in bad.items():
                reply = await get(**{name: value})
                assert reply.status_code == 400, (name, reply.text)
                assert name.split("_")[0] in reply.json()["error"], (name, reply.json())
            encoded = await me.get(
                f"/workspaces/{wid}/activity?before_ts={urllib.parse.quote('x; DROP TABLE activity_logs')}"
            )
            assert encoded.status_code == 400
            # Another server's cursor (a UUID) or one this workspace never had: start again.
            for cursor in (str(uuid.uuid4()), "999999999"):
                lost = await get(since_id=cursor)
                assert lost.status_code == 410 and lost.json()["code"] == "cursor_lost"

            wrong = await me.post(f"/workspaces/{wid}/activity", json=report(activity_type="nope"))
            assert wrong.status_code == 400 and "activity_type" in wrong.json()["error"]
            spoof = await me.post(f"/workspaces/{wid}/activity", json=report(source_id=peer))
            assert spoof.status_code == 403
        # The operator reads everything; another workspace's token may not.
        assert len((await client.get(f"/workspaces/{wid}/activity")).json()) == len(ids)
        other_created = await create(client, external=True, name="nosy")
        async with agent(stack, other_created["auth_token"]) as nosy:
            assert (await nosy.get(f"/workspaces/{wid}/activity")).status_code == 403
            assert (await nosy.post(f"/workspaces/{wid}/activity", json=report())).status_code == 403


async def test_notify_broadcasts_and_keeps_the_message_with_its_files(stack: Stack) -> None:
    async with stack.client() as client, EventStream(client) as events:
        wid, token = await online_external(stack, client, name="talker")
        files = [
            {
                "uri": "workspace:/chat/report.pdf",
                "name": "report.pdf",
                "mimeType": "application/pdf",
                "size": 12,
            }
        ]
        async with agent(stack, token) as me:
            for i, bad in enumerate([{"uri": "", "name": "x"}, {"uri": "workspace:/a"}]):
                reply = await me.post(
                    f"/workspaces/{wid}/notify", json={"message": "late", "attachments": [*files, bad]}
                )
                assert reply.status_code == 400, reply.text
                assert reply.json()["error"] == "attachment[1]: uri and name are required", i
            assert (await me.get(f"/workspaces/{wid}/activity")).json() == [], "nothing stored"

            sent = await me.post(
                f"/workspaces/{wid}/notify", json={"message": "done: see file", "attachments": files}
            )
            assert sent.status_code == 200
            message = await events.wait_type("AGENT_MESSAGE", wid)
            assert message["payload"]["message"] == "done: see file"
            assert message["payload"]["name"] == "talker"
            assert message["payload"]["attachments"] == files
            assert not [
                e
                for e in events.events
                if e["event_type"] == "AGENT_MESSAGE" and e["payload"].get("message") == "late"
            ]

            # A chat reload shows it (the operator's read); the agent's own inbox does not echo it.
            rows = (await client.get(f"/workspaces/{wid}/activity", params={"type": "a2a_receive"})).json()
            assert len(rows) == 1 and rows[0]["method"] == "notify" and rows[0]["source_id"] is None
            assert rows[0]["response_body"] == {
                "result": "done: see file",
                "parts": [{"kind": "file", "file": files[0]}],
            }
            inbox = (await me.get(f"/workspaces/{wid}/activity", params={"type": "a2a_receive"})).json()
            assert inbox == []


async def test_tokens_are_listed_minted_and_revoked(stack: Stack) -> None:
    async with stack.client() as client:
        wid, token = await online_external(stack, client, name="tokens")
        listed = (await client.get(f"/workspaces/{wid}/tokens")).json()
        assert listed["count"] == 1
        first = listed["tokens"][0]
        assert token.startswith(first["prefix"]) and first["revoked_at"] is None and first["last_used_at"]
        assert token not in str(listed) and "hash" not in str(listed)

        minted = await client.post(f"/workspaces/{wid}/tokens")
        assert minted.status_code == 201
        extra = minted.json()["auth_token"]
        async with agent(stack, extra) as second:
            assert (await second.get(f"/workspaces/{wid}/state")).status_code == 200
            assert (await client.delete(f"/workspaces/{wid}/tokens/{minted.json()['id']}")).status_code == 200
            assert (await second.get(f"/workspaces/{wid}/state")).status_code == 401
        assert (await client.delete(f"/workspaces/{wid}/tokens/{minted.json()['id']}")).status_code == 404
        assert (await client.delete(f"/workspaces/{wid}/tokens/abc")).status_code == 400
        tokens = (await client.get(f"/workspaces/{wid}/tokens")).json()["tokens"]
        assert [t["revoked_at"] is not None for t in tokens] == [True, False]
        async with agent(stack, token) as me:
            assert (await me.get(f"/workspaces/{wid}/tokens")).status_code == 401, "operator only"


async def test_first_register_mints_the_token_once_inside_the_claim_window(stack: Stack) -> None:
    async with stack.client() as client:
        created = await create(client, name="remote", external=True, token_delivery="register")
        wid = created["id"]
        assert created["auth_token"] is None
        async with httpx.AsyncClient(base_url=stack.api_url) as anonymous:
            # A register refused for its body claims nothing: the agent's corrected retry still can.
            unsafe = await anonymous.post(
                "/registry/register", json={"id": wid, "url": "http://169.254.169.254/"}
            )
            assert unsafe.status_code == 422, unsafe.text
            body = {"id": wid, "url": "remote://no-inbound", "agent_card": {"name": "remote"}}
            first, second = await asyncio.gather(
                anonymous.post("/registry/register", json=body),
                anonymous.post("/registry/register", json=body),
            )
            assert sorted([first.status_code, second.status_code]) == [200, 401], "one claim wins"
            winner = first if first.status_code == 200 else second
            token = winner.json()["auth_token"]
            assert (await anonymous.post("/registry/register", json=body)).status_code == 401
        async with agent(stack, token) as me:
            assert (await me.post("/registry/register", json=body)).status_code == 200
            assert "auth_token" not in (await me.post("/registry/register", json=body)).json()

        # The window closes: a bearer-less register is refused; the operator mints a token instead.
        late = await create(client, name="late", external=True, token_delivery="register")
        conn = await asyncpg.connect(stack.database_url)
        try:
            await conn.execute(
                "UPDATE workspaces SET register_claim_until = now() - interval '1 second' WHERE id = $1",
                late["id"],
            )
        finally:
            await conn.close()
        async with httpx.AsyncClient(base_url=stack.api_url) as anonymous:
            closed = await anonymous.post("/registry/register", json={"id": late["id"], "url": "remote://x"})
            assert closed.status_code == 401
        assert (await client.post(f"/workspaces/{late['id']}/tokens")).status_code == 201
        # An ordinary workspace never took a bearer-less register.
        plain = await create(client, name="plain", external=True)
        async with httpx.AsyncClient(base_url=stack.api_url) as anonymous:
            assert (await anonymous.post("/registry/register", json={"id": plain["id"]})).status_code == 401
        refused = await client.post("/workspaces", json={"name": "x", "token_delivery": "register"})
        assert refused.status_code == 422


async def test_an_sdk_shaped_agent_loop_runs_until_the_operator_pauses_it(stack: Stack) -> None:
    """What RemoteAgentClient + PollDelivery do, call for call: a bearer-less first register that
    claims the token, heartbeats, state polls, inbox polls by cursor, replies to the user (notify,
    with a file) and to a peer (A2A), and a loop that ends when the state says paused."""
    async with stack.client() as operator, EventStream(operator) as events:
        wid = (await create(operator, name="sdk-agent", external=True, token_delivery="register"))["id"]
        peer, peer_token = await online_external(stack, operator, name="peer-agent")

        async with httpx.AsyncClient(base_url=stack.api_url) as bare:
            card = {"name": "sdk-agent", "skills": []}
            registered = await bare.post(
                "/registry/register", json={"id": wid, "url": "remote://no-inbound", "agent_card": card}
            )
        assert registered.status_code == 200, registered.text
        token = registered.json()["auth_token"]
        beat = {"workspace_id": wid, "current_task": "", "active_tasks": 0, "error_rate": 0.0,
                "sample_error": "", "uptime_seconds": 1}  # fmt: skip

        async with agent(stack, token) as sdk:
            assert (await sdk.post("/registry/heartbeat", json=beat)).status_code == 200

            async def online() -> bool:
                return bool((await sdk.get(f"/workspaces/{wid}/state")).json()["status"] == "online")

            await until(online, "the SDK agent online")
            # Messages for it: from the user (the operator's chat) and from a peer. It polls: they wait.
            user_msg = rpc("summarise the report", "u1")
            queued = await operator.post(f"/workspaces/{wid}/a2a", json=user_msg)
            assert queued.status_code == 202 and queued.json()["delivery_mode"] == "poll", queued.text
            async with agent(stack, peer_token) as other:
                peer_msg = rpc("status?", "p1")
                from_peer = await other.post(
                    f"/workspaces/{wid}/a2a", json=peer_msg, headers={"X-Workspace-ID": peer}
                )
                assert from_peer.status_code == 202, from_peer.text

            cursor: str | None = None
            handled: list[tuple[str, str, str]] = []
            pause_asked = False
            # The SDK's run loop with a short poll interval; bounded in case it never sees the pause.
            async with asyncio.timeout(60):
                while True:
                    await sdk.post("/registry/heartbeat", json=beat)
                    state = await sdk.get(f"/workspaces/{wid}/state")
                    if state.status_code == 404 or state.json()["paused"] or state.json()["deleted"]:
                        break
                    params: dict[str, Any] = {"type": "a2a_receive", "limit": 100}
                    if cursor:
                        params["since_id"] = cursor
                    batch = await sdk.get(f"/workspaces/{wid}/activity", params=params)
                    assert batch.status_code == 200, batch.text
                    for row in batch.json():
                        data = row["data"]
                        handled.append((row["id"], data["source"], data["text"]))
                        if data["source"] == "canvas_user":
                            summary = {"uri": "workspace:/chat-uploads/x-summary.md", "name": "summary.md"}
                            reply = {"message": "here it is", "attachments": [summary]}
                            assert (
                                await sdk.post(f"/workspaces/{wid}/notify", json=reply)
                            ).status_code == 200
                        else:
                            answer = rpc("all good", f"r-{row['id']}", role="agent", rpc_id=row["id"])
                            sent = await sdk.post(
                                f"/workspaces/{data['source_id']}/a2a",
                                json=answer,
                                headers={"X-Workspace-ID": wid},
                            )
                            assert sent.status_code == 202, sent.text  # the peer polls too
                        cursor = row["id"]
                    if len(handled) == 2 and not pause_asked:
                        # Everything answered: the operator pauses the workspace; the loop sees it and stops.
                        assert (await operator.post(f"/workspaces/{wid}/pause")).status_code in (200, 202)
                        pause_asked = True
                    await asyncio.sleep(0.1)  # the SDK's poll interval (5 s by default)

        assert [(source, text) for _, source, text in handled] == [
            ("canvas_user", "summarise the report"),
            ("peer_agent", "status?"),
        ], f"each message once, in order, its own notify never echoed back: {handled}"
        message = await events.wait_type("AGENT_MESSAGE", wid)
        assert message["payload"]["attachments"][0]["name"] == "summary.md"
        async with agent(stack, peer_token) as other:
            inbox = (await other.get(f"/workspaces/{peer}/activity", params={"type": "a2a_receive"})).json()
        assert [r["data"]["text"] for r in inbox] == ["all good"] and inbox[0]["source_id"] == wid


async def test_each_log_insert_takes_its_workspace_lock_before_its_id(database_url: str) -> None:
    """The proxy's one-statement log relies on the lock subquery running once, before any row is
    formed (an InitPlan), so before nextval draws the row's id: PostgreSQL's plan must say so."""
    from store.a2a import _LOG_CALL
    from store.db import create_pool

    conn = await create_pool(database_url)
    try:
        wid = str(uuid.uuid4())
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                f"EXPLAIN (VERBOSE) {_LOG_CALL}",
                None, wid, "m", "s", {}, None, 1, "ok", None, "A2A_RESPONSE", {}, "molecule_events",
            )
        )  # fmt: skip
    finally:
        await conn.close()
    assert plan.count("One-Time Filter") >= 2, plan  # both inserts wait for the locks
    assert "pg_advisory_xact_lock" in plan and "InitPlan" in plan, plan
