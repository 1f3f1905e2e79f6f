"""The A2A proxy, its busy queue and delegations, end to end: real Postgres, Temporal, API and worker,
and the reference agent as the target (its faults.json switches it between modes while it runs)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.integration.api import bearer, create, until
from tests.integration.conftest import Stack
from tests.integration.sse import EventStream

pytestmark = pytest.mark.integration

FAST = {"HEARTBEAT_INTERVAL": "0.5"}


def send(text: str, message_id: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "user", "parts": [{"kind": "text", "text": text}]}
    if message_id:
        message["messageId"] = message_id
    return {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": message}}


class Agent:
    """A process-backend workspace running the reference agent."""

    def __init__(self, stack: Stack, created: dict[str, Any]) -> None:
        self.stack = stack
        self.id: str = created["workspace"]["id"]
        self.token: str = created["auth_token"]
        self.url = ""

    @property
    def faults_path(self) -> Path:
        return self.stack.data_dir / "workspaces" / self.id / "configs" / "faults.json"

    def faults(self, **modes: Any) -> None:
        self.faults_path.write_text(json.dumps(modes))

    async def received(self) -> list[str]:
        async with httpx.AsyncClient() as client:
            ids: list[str] = (await client.get(f"{self.url}/debug/received")).json()["message_ids"]
            return ids


async def start_agent(stack: Stack, client: httpx.AsyncClient, events: EventStream, **body: Any) -> Agent:
    body.setdefault("env", FAST)
    agent = Agent(stack, await create(client, **body))
    await events.wait_type("WORKSPACE_ONLINE", agent.id)
    agent.url = (await client.get(f"/workspaces/{agent.id}")).json()["url"]
    return agent


async def external(client: httpx.AsyncClient, url: str | None = None, **body: Any) -> tuple[str, str]:
    """An external workspace (a caller, or a second door to a running agent's URL): (id, token)."""
    created = await create(client, external=True, **body)
    wid, token = created["workspace"]["id"], created["auth_token"]
    if url is not None:
        async with httpx.AsyncClient(base_url=str(client.base_url), headers=bearer(token)) as agent:
            reply = await agent.post("/registry/register", json={"id": wid, "url": url})
            assert reply.status_code == 200, reply.text

        async def online() -> bool:
            # The workflow applies the registration: reachable once it says online.
            return bool((await client.get(f"/workspaces/{wid}")).json()["status"] == "online")

        await until(online, f"external workspace {wid} online")
    return wid, token


def as_workspace(stack: Stack, token: str, workspace_id: str | None = None) -> httpx.AsyncClient:
    headers = bearer(token) | ({"X-Workspace-ID": workspace_id} if workspace_id else {})
    return httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=60)


@pytest.fixture
async def stack(make_stack: Callable[..., Awaitable[Stack]]) -> Stack:
    return await make_stack(MOLECULE_ENV="development", A2A_IDLE_TIMEOUT_SECONDS=60)


async def test_who_may_call_whom(stack: Stack) -> None:
    async with stack.client() as client, EventStream(client) as events:
        agent = await start_agent(stack, client, events)
        # Every door below leads to the one running agent; access is decided by the tree.
        parent, parent_token = await external(client, agent.url, name="parent")
        target, target_token = await external(client, agent.url, name="target", parent_id=parent)
        child, child_token = await external(client, name="child", parent_id=target)
        sibling, sibling_token = await external(client, name="sibling", parent_id=parent)
        cousin, cousin_token = await external(client, name="cousin", parent_id=sibling)
        root, root_token = await external(client, name="other-root")
        cases = [
            ("self", target, target_token, target, 200),
            ("parent", parent, parent_token, target, 200),
            ("child", child, child_token, target, 200),
            ("sibling", sibling, sibling_token, target, 200),
            ("root to root", root, root_token, parent, 200),
            ("root to a non-root", root, root_token, target, 403),
            ("cousin", cousin, cousin_token, target, 403),
            ("unknown target", child, child_token, str(uuid.uuid4()), 403),
        ]
        for name, caller, token, to, expected in cases:
            async with as_workspace(stack, token, caller) as peer:
                reply = await peer.post(f"/workspaces/{to}/a2a", json=send(f"hi from {name}"))
            assert reply.status_code == expected, (name, reply.text)
            if expected == 200:
                assert reply.json()["result"]["parts"][0]["text"] == f"echo: hi from {name}", name
        # The operator reaches anyone, and learns when a workspace does not exist.
        assert (await client.post(f"/workspaces/{target}/a2a", json=send("op"))).status_code == 200
        assert (await client.post(f"/workspaces/{uuid.uuid4()}/a2a", json=send("op"))).status_code == 404
        async with as_workspace(stack, child_token, sibling) as liar:
            reply = await liar.post(f"/workspaces/{target}/a2a", json=send("x"))
        assert reply.status_code == 403 and "X-Workspace-ID" in reply.json()["error"]
        async with httpx.AsyncClient(base_url=stack.api_url) as anonymous:
            assert (await anonymous.post(f"/workspaces/{target}/a2a", json=send("x"))).status_code == 401


async def test_bad_bodies_are_400_naming_the_problem(stack: Stack) -> None:
    async with stack.client() as client:
        target, _ = await external(client, "http://127.0.0.1:9")
        cases = [
            (b"{not json", "not valid JSON"),
            (b"[1, 2]", "JSON-RPC 2.0 object"),
            (json.dumps({"jsonrpc": "1.0", "method": "message/send"}).encode(), '"jsonrpc" must be "2.0"'),
            (json.dumps({"jsonrpc": "2.0"}).encode(), '"method" is required'),
            (json.dumps({"method": "message/send", "params": {}}).encode(), "params.message"),
            (json.dumps({"method": "message/send", "params": {"message": {"parts": []}}}).encode(), "parts"),
        ]
        for body, expected in cases:
            reply = await client.post(
                f"/workspaces/{target}/a2a", content=body, headers={"Content-Type": "application/json"}
            )
            assert reply.status_code == 400, (body, reply.text)
            assert expected in reply.json()["error"], (body, reply.json())
        deep = b'{"method": "message/send", "params": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        reply = await client.post(
            f"/workspaces/{target}/a2a", content=deep, headers={"Content-Type": "application/json"}
        )
        assert reply.status_code in (400, 413), reply.text  # never a 500
        huge = json.dumps(send("x" * (1024 * 1024 + 1))).encode()
        reply = await client.post(f"/workspaces/{target}/a2a", content=huge)
        assert reply.status_code == 413


async def test_calls_are_logged_with_an_event_and_bodies_never_carry_secrets(stack: Stack) -> None:
    async with stack.client() as client, EventStream(client) as events:
        agent = await start_agent(stack, client, events)
        caller, token = await external(client, name="caller")
        secret = "sk-ant-" + "a" * 40
        async with as_workspace(stack, token, caller) as peer:
            reply = await peer.post(f"/workspaces/{agent.id}/a2a", json=send(f"use key {secret}", "m-log"))
        assert reply.status_code == 200, reply.text
        response = await events.wait_type("A2A_RESPONSE", agent.id)
        assert response["payload"]["source_id"] == caller and response["payload"]["status"] == "ok"
        pool = await asyncpg.connect(stack.database_url)
        try:
            rows = await pool.fetch(
                """SELECT workspace_id::text, activity_type, source_id::text, target_id::text, method, status,
                          request_body::text AS req, response_body::text AS resp
                   FROM activity_logs WHERE target_id = $1 ORDER BY id""",
                agent.id,
            )
        finally:
            await pool.close()
        kinds = {(r["workspace_id"], r["activity_type"]) for r in rows}
        assert kinds == {(agent.id, "a2a_receive"), (caller, "a2a_send")}
        for row in rows:
            assert (row["source_id"], row["method"], row["status"]) == (caller, "message/send", "ok")
            assert secret not in row["req"] and secret not in row["resp"]
            assert "[REDACTED]" in row["req"]


async def test_target_states(stack: Stack) -> None:
    async with stack.client() as client, EventStream(client) as events:
        agent = await start_agent(stack, client, events)
        no_url, _ = await external(client)
        beat = await client.post(f"/workspaces/{no_url}/a2a", json=send("x"))
        assert beat.status_code == 503  # awaiting its agent: no URL yet
        assert (await client.post(f"/workspaces/{agent.id}/hibernate")).status_code in (200, 202)
        hibernated = await events.wait_type("WORKSPACE_HIBERNATED", agent.id)
        reply = await client.post(f"/workspaces/{agent.id}/a2a", json=send("wake up"))
        assert reply.status_code == 503, reply.text
        assert reply.json()["code"] == "waking" and reply.json()["waking"] is True
        assert reply.headers["retry-after"] == "15"
        await events.wait_for(
            lambda e: (
                e["event_type"] == "WORKSPACE_ONLINE"
                and e["workspace_id"] == agent.id
                and e["id"] > hibernated["id"]
            )
        )
        agent.url = (await client.get(f"/workspaces/{agent.id}")).json()["url"]
        assert (await client.post(f"/workspaces/{agent.id}/a2a", json=send("awake"))).status_code == 200
        assert (await client.post(f"/workspaces/{agent.id}/pause")).status_code in (200, 202)
        paused = await client.post(f"/workspaces/{agent.id}/a2a", json=send("x"))
        assert paused.status_code == 409 and paused.json()["code"] == "workspace_paused"
        assert (await client.delete(f"/workspaces/{agent.id}")).status_code == 202
        gone = await client.post(f"/workspaces/{agent.id}/a2a", json=send("x"))
        assert gone.status_code == 410


async def test_native_session_agent_that_is_busy_gets_503_and_nothing_queued(stack: Stack) -> None:
    async with stack.client() as client, EventStream(client) as events:
        agent = await start_agent(stack, client, events)
        agent.faults(native_session=True)

        async def declared() -> bool:
            row = (await client.get(f"/workspaces/{agent.id}")).json()
            return bool(row["capabilities"].get("session"))

        await until(declared, "the native session capability to arrive by heartbeat")
        agent.faults(native_session=True, a2a="reset")
        reply = await client.post(f"/workspaces/{agent.id}/a2a", json=send("x", "m-native"))
        assert reply.status_code == 503, reply.text
        body = reply.json()
        assert (body["busy"], body["retry_after"], body["native_session"]) == (True, 30, True)
        assert reply.headers["retry-after"] == "30"
        assert await queue_rows(stack, agent.id) == []


async def queue_rows(stack: Stack, workspace_id: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch(
            """SELECT id::text, status, attempts, idempotency_key FROM a2a_queue
               WHERE workspace_id = $1 ORDER BY created_at""",
            workspace_id,
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def test_busy_agent_is_queued_once_and_drained_on_the_heartbeat_that_frees_it(stack: Stack) -> None:
    async with stack.client() as client, EventStream(client) as events:
        agent = await start_agent(stack, client, events)
        agent.faults(a2a="reset", active_tasks=1)  # drops every call, and reports itself at capacity
        first = await client.post(f"/workspaces/{agent.id}/a2a", json=send("queued work", "m-queue"))
        assert first.status_code == 202, first.text
        queued = first.json()
        assert queued["queued"] is True and queued["queue_depth"] == 1
        again = await client.post(f"/workspaces/{agent.id}/a2a", json=send("queued work", "m-queue"))
        assert again.status_code == 202 and again.json()["queue_id"] == queued["queue_id"]
        assert [r["id"] for r in await queue_rows(stack, agent.id)] == [queued["queue_id"]]
        tries = (await agent.received()).count("m-queue")  # the two dropped calls reached the agent
        agent.faults()  # healthy, with room: its next heartbeat is news for the workflow

        async def completed() -> bool:
            return [r["status"] for r in await queue_rows(stack, agent.id)] == ["completed"]

        await until(completed, "the drain to deliver the queued message")
        assert (await agent.received()).count("m-queue") == tries + 1  # delivered exactly once


async def test_an_entry_fails_after_five_attempts_with_an_event(stack: Stack) -> None:
    async with stack.client() as client, EventStream(client) as events:
        agent = await start_agent(stack, client, events)
        agent.faults(a2a="reset", active_tasks=1)
        reply = await client.post(f"/workspaces/{agent.id}/a2a", json=send("doomed", "m-doomed"))
        assert reply.status_code == 202
        agent.faults(a2a="reset")  # room on every beat, yet every delivery is dropped
        failed = await events.wait_type("A2A_QUEUE_FAILED", agent.id)
        assert failed["payload"]["queue_id"] == reply.json()["queue_id"]
        assert failed["payload"]["attempts"] == 5
        [row] = await queue_rows(stack, agent.id)
        assert (row["status"], row["attempts"]) == ("failed", 5)
        # A message that failed for good may be sent again: a new entry, not the dead one.
        agent.faults(a2a="reset", active_tasks=1)
        again = await client.post(f"/workspaces/{agent.id}/a2a", json=send("doomed", "m-doomed"))
        assert again.status_code == 202 and again.json()["queue_id"] != reply.json()["queue_id"]
        # The same messageId from another caller is that caller's own entry.
        caller, token = await external(client, name="other-caller")
        async with as_workspace(stack, token, caller) as peer:
            theirs = await peer.post(f"/workspaces/{agent.id}/a2a", json=send("doomed", "m-doomed"))
        assert theirs.status_code == 202 and theirs.json()["queue_id"] != again.json()["queue_id"]
        assert theirs.json()["queue_depth"] == 2


async def test_delegation_queued_then_completed_with_the_real_answer(stack: Stack) -> None:
    async with stack.client() as client, EventStream(client) as events:
        agent = await start_agent(stack, client, events)
        source, token = await external(client, name="boss")  # two roots: siblings
        agent.faults(a2a="reset", active_tasks=1)
        async with as_workspace(stack, token) as boss:
            reply = await boss.post(
                f"/workspaces/{source}/delegate", json={"target_id": agent.id, "task": "build it"}
            )
            assert reply.status_code == 202, reply.text
            delegation_id = reply.json()["delegation_id"]
            assert reply.json()["status"] == "pending"
            queued = await events.wait_for(
                lambda e: e["event_type"] == "DELEGATION_STATUS" and e["payload"].get("status") == "queued"
            )
            assert queued["payload"]["delegation_id"] == delegation_id
            listed = (await boss.get(f"/workspaces/{source}/delegations")).json()
            assert [(d["delegation_id"], d["status"]) for d in listed] == [(delegation_id, "queued")]
            assert listed[0]["summary"] == "Delegation queued: the target is at capacity"
            agent.faults()
            done = await events.wait_type("DELEGATION_COMPLETE", source)
            assert done["payload"]["delegation_id"] == delegation_id
            assert done["payload"]["response_preview"] == "echo: build it"
            [item] = (await boss.get(f"/workspaces/{source}/delegations")).json()
            assert (item["status"], item["response_preview"], item["source_id"]) == (
                "completed",
                "echo: build it",
                source,
            )
            # The same idempotency key twice is one delegation; both shapes the clients send work.
            body = {"task": "sdk task", "idempotency_key": "k1"}
            first = await boss.post(
                f"/workspaces/{agent.id}/delegate", json=body, headers={"X-Workspace-ID": source}
            )
            second = await boss.post(
                f"/workspaces/{agent.id}/delegate", json=body, headers={"X-Workspace-ID": source}
            )
            assert first.status_code == second.status_code == 202
            assert second.json()["delegation_id"] == first.json()["delegation_id"]
            assert second.json()["idempotent_hit"] is True
            # The platform runs this one: a runtime's report cannot overwrite it.
            update = {"status": "failed", "error": "forged"}
            forged = await boss.post(f"/workspaces/{source}/delegations/{delegation_id}/update", json=update)
            assert forged.status_code == 409 and forged.json()["code"] == "platform_delegation"


async def test_runtime_records_and_updates_its_own_delegations(stack: Stack) -> None:
    async with stack.client() as client:
        source, token = await external(client, name="runtime")
        target, _ = await external(client, name="peer")
        _, other_token = await external(client, name="intruder")
        delegation_id = str(uuid.uuid4())
        async with as_workspace(stack, token, source) as runtime:
            body = {"target_id": target, "task": "t", "delegation_id": delegation_id}
            recorded = await runtime.post(f"/workspaces/{source}/delegations/record", json=body)
            assert recorded.status_code == 202 and recorded.json()["status"] == "recorded"
            for status in ("queued", "completed"):
                update = {
                    "status": status,
                    "error": "",
                    "response_preview": "done" if status == "completed" else "",
                }
                reply = await runtime.post(
                    f"/workspaces/{source}/delegations/{delegation_id}/update", json=update
                )
                assert reply.status_code == 200, reply.text
            bad = await runtime.post(
                f"/workspaces/{source}/delegations/{delegation_id}/update", json={"status": "exploded"}
            )
            assert bad.status_code == 422
            [item] = (await runtime.get(f"/workspaces/{source}/delegations")).json()
            assert (item["status"], item["response_preview"], item["self_reported"]) == (
                "completed",
                "done",
                True,
            )
        async with as_workspace(stack, other_token) as intruder:
            reply = await intruder.post(
                f"/workspaces/{source}/delegations/{delegation_id}/update", json={"status": "failed"}
            )
            assert reply.status_code == 403


async def test_register_refuses_blocked_urls(stack: Stack) -> None:
    async with stack.client() as client:
        for url in ("http://169.254.169.254/latest", "http://[fe80::1]:80", "http://192.0.2.1", "ftp://x"):
            wid, token = await external(client)
            async with as_workspace(stack, token) as agent:
                reply = await agent.post("/registry/register", json={"id": wid, "url": url})
            assert reply.status_code == 422, (url, reply.text)
            assert reply.json()["code"] == "unsafe_url"


async def test_a_real_a2a_client_speaks_through_the_proxy(stack: Stack) -> None:
    from a2a.client.transports.jsonrpc import JsonRpcTransport
    from a2a.types import Message, MessageSendParams, Part, Role, TextPart

    async with stack.client() as client, EventStream(client) as events:
        agent = await start_agent(stack, client, events)
        caller, token = await external(client, name="sdk-user")
        async with as_workspace(stack, token, caller) as http:
            transport = JsonRpcTransport(http, url=f"{stack.api_url}/workspaces/{agent.id}/a2a")
            params = MessageSendParams(
                message=Message(
                    role=Role.user, parts=[Part(root=TextPart(text="hello sdk"))], message_id="sdk-1"
                )
            )
            answer = await transport.send_message(params)
        assert isinstance(answer, Message)
        assert answer.parts[0].root.text == "echo: hello sdk"  # type: ignore[union-attr]
