"""The API's contract with bad input, auth and failing dependencies, against real Postgres and Temporal."""

from __future__ import annotations

import hashlib
import json
import math
import uuid

import asyncpg
import httpx
import pytest

from api.app import create_app
from config.settings import Settings
from domain.status import WorkspaceStatus
from molecule.processes import free_port
from tests.integration.api import bearer, create
from tests.integration.sse import EventStream

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def stack(make_stack):
    return await make_stack()


async def test_status_enum_in_postgres_matches_python(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        values = await conn.fetchval(
            "SELECT array_agg(v::text) FROM unnest(enum_range(NULL::workspace_status)) v"
        )
    finally:
        await conn.close()
    assert values == [s.value for s in WorkspaceStatus]


async def test_bad_ids_and_unknown_workspaces(stack):
    async with stack.client() as client:
        response = await client.get("/workspaces/not-a-uuid")
        assert response.status_code == 400
        assert "not-a-uuid" in response.json()["error"]
        unknown = uuid.uuid4()
        response = await client.get(f"/workspaces/{unknown}")
        assert response.status_code == 404
        assert str(unknown) in response.json()["error"]


async def test_operator_routes_need_the_admin_token(stack):
    async with httpx.AsyncClient(base_url=stack.api_url) as anonymous:
        assert (await anonymous.get("/workspaces")).status_code == 401
        wrong = await anonymous.get("/workspaces", headers=bearer("nope"))
        assert wrong.status_code == 401
        assert wrong.json()["error"] == "invalid admin token"


async def test_malformed_json_and_wrong_types_name_the_fields(stack):
    async with stack.client() as client:
        response = await client.post(
            "/workspaces", content=b'{"name": "x",', headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422
        assert "malformed JSON" in response.json()["error"]

        response = await client.post("/workspaces", json={"name": 5, "tier": "high", "env": {"1BAD": "x"}})
        assert response.status_code == 422
        fields = {f["field"] for f in response.json()["fields"]}
        assert {"name", "tier", "env"} <= fields
        assert "Traceback" not in response.text

        response = await client.post("/workspaces", json={"name": "x", "template": "no-such-template"})
        assert response.status_code == 422
        assert "no-such-template" in response.json()["error"]


async def test_values_postgres_cannot_store_are_422_naming_the_field(stack):
    """NUL characters, NaN in JSON maps and integers past the column's range: refused up front."""
    async with stack.client() as client:
        for body, field in (
            ({"name": "a\x00b"}, "name"),
            ({"name": "x", "env": {"KEY": "v\x00"}}, "env.KEY"),
            ({"name": "x", "budget_limit": 2**63}, "budget_limit"),
        ):
            response = await client.post("/workspaces", json=body)
            assert response.status_code == 422, (body, response.text)
            assert field in {f["field"] for f in response.json()["fields"]}
        # A lone surrogate, written as a JSON escape (the only way it can arrive over the wire).
        surrogate = b'{"name": "a\\ud800b"}'
        response = await client.post("/workspaces", content=surrogate, headers=JSON)
        assert response.status_code == 422 and response.json()["fields"][0]["field"] == "name", response.text
        created = await create(client, external=True)
    workspace_id, token = created["workspace"]["id"], created["auth_token"]
    async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(token)) as agent:
        response = await agent.post(
            "/registry/register", json={"id": workspace_id, "agent_card": {"name": "\x00"}}
        )
        assert response.status_code == 422 and "NUL" in response.json()["error"]
        card = b'{"id": "%s", "agent_card": {"k": "\\udc00"}}' % workspace_id.encode()
        response = await agent.post("/registry/register", content=card, headers=JSON)
        assert response.status_code == 422, response.text
        assert response.json()["fields"][0]["field"] == "agent_card", response.text
        for extra, field in (
            ({"active_tasks": 2**40}, "active_tasks"),
            ({"uptime_seconds": 2**70}, "uptime_seconds"),
            ({"sample_error": "a\x00b"}, "sample_error"),
            ({"current_task": "\x00"}, "current_task"),
            ({"runtime_state": "\x00"}, "runtime_state"),
            ({"runtime_metadata": {"capabilities": {"x\x00": True}}}, "runtime_metadata.capabilities"),
            (
                {"runtime_metadata": {"capabilities": {"deep": [{"x": "\x00"}]}}},
                "runtime_metadata.capabilities",
            ),
            ({"runtime_metadata": {"idle_timeout_seconds": 2**40}}, "runtime_metadata.idle_timeout_seconds"),
        ):
            response = await agent.post("/registry/heartbeat", json={"workspace_id": workspace_id, **extra})
            assert response.status_code == 422, (extra, response.text)
            assert field in {f["field"] for f in response.json()["fields"]}, response.text
        nan = json.dumps(
            {"workspace_id": workspace_id, "runtime_metadata": {"capabilities": {"x": math.nan}}}
        )
        response = await agent.post(
            "/registry/heartbeat", content=nan, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422 and "NaN" in response.json()["error"]
        # Nothing above was stored, and the workspace still takes its beats.
        assert (
            await agent.post("/registry/heartbeat", json={"workspace_id": workspace_id})
        ).status_code == 200
    async with stack.client() as client:
        row = (await client.get(f"/workspaces/{workspace_id}")).json()
    assert (row["active_tasks"], row["current_task"], row["capabilities"]) == (0, None, {})


async def test_body_over_one_mebibyte_is_413(stack):
    async with stack.client() as client:
        big = json.dumps({"name": "x", "role": "a" * (1024 * 1024)})
        response = await client.post("/workspaces", content=big, headers={"Content-Type": "application/json"})
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"


async def test_unknown_runtime_becomes_claude_code(stack):
    async with stack.client() as client:
        for runtime in ("", "cobol-bot"):
            workspace = (await create(client, runtime=runtime, env={"AGENT_NEVER_REGISTER": "1"}))[
                "workspace"
            ]
            assert workspace["runtime"] == "claude-code"


async def test_tokens_are_stored_hashed_and_env_values_never_returned(stack, database_url):
    async with stack.client() as client:
        created = await create(
            client, env={"ANTHROPIC_API_KEY": "sk-secret-value-123", "AGENT_NEVER_REGISTER": "1"}
        )
        token = created["auth_token"]
        workspace_id = created["workspace"]["id"]
        listing = await client.get("/workspaces")
        single = await client.get(f"/workspaces/{workspace_id}")
        assert "sk-secret-value-123" not in listing.text + single.text
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT token_hash, prefix, kind FROM workspace_auth_tokens WHERE workspace_id = $1", workspace_id
        )
        dump = json.dumps([dict(r) for r in rows])
    finally:
        await conn.close()
    assert token not in dump
    api_rows = [r for r in rows if r["kind"] == "api"]
    assert api_rows[0]["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert api_rows[0]["prefix"] == token[:8]


async def test_workspace_tokens_are_scoped_to_their_workspace(stack):
    async with stack.client() as client, EventStream(client) as events:
        a = await create(client, name="a", external=True)
        b = await create(client, name="b", external=True)
        a_id = a["workspace"]["id"]
        assert a["workspace"]["status"] == "awaiting_agent"
        async with httpx.AsyncClient(base_url=stack.api_url) as agent:
            body = {"id": a_id, "url": "http://agent-a:9000", "agent_card": {"name": "a"}}
            assert (await agent.post("/registry/register", json=body)).status_code == 401
            assert (
                await agent.post("/registry/register", json=body, headers=bearer("bogus"))
            ).status_code == 401
            forbidden = await agent.post("/registry/register", json=body, headers=bearer(b["auth_token"]))
            assert forbidden.status_code == 403
            beat = {"workspace_id": a_id, "error_rate": 0.0}
            assert (
                await agent.post("/registry/heartbeat", json=beat, headers=bearer(b["auth_token"]))
            ).status_code == 403

            registered = await agent.post("/registry/register", json=body, headers=bearer(a["auth_token"]))
            assert registered.status_code == 200
            assert registered.json()["status"] == "registered"
            secret = registered.json()["platform_inbound_secret"]
            online = await events.wait_type("WORKSPACE_ONLINE", a_id)
            assert online["payload"]["recovered_from"] == "awaiting_agent"

            reply = await agent.post("/registry/heartbeat", json=beat, headers=bearer(a["auth_token"]))
            assert reply.status_code == 200
            assert reply.json() == {"status": "online", "platform_inbound_secret": secret}


async def test_heartbeat_bad_values(stack):
    async with stack.client() as client:
        created = await create(client, external=True)
    workspace_id, token = created["workspace"]["id"], created["auth_token"]
    async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(token)) as agent:
        for rate in (1.5, -0.1):
            response = await agent.post(
                "/registry/heartbeat", json={"workspace_id": workspace_id, "error_rate": rate}
            )
            assert response.status_code == 422, rate
            assert response.json()["fields"][0]["field"] == "error_rate"
        nan = '{"workspace_id": "' + workspace_id + '", "error_rate": NaN}'
        response = await agent.post(
            "/registry/heartbeat", content=nan, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422
        response = await agent.post(
            "/registry/heartbeat",
            json={"workspace_id": workspace_id, "monthly_spend": -50, "active_tasks": 2},
        )
        assert response.status_code == 200
        async with stack.client() as client:
            row = (await client.get(f"/workspaces/{workspace_id}")).json()
        assert row["monthly_spend"] == 0
        assert row["active_tasks"] == 2
        for spend, stored in ((10**20, 10**12), (0, 10**12), (1234, 1234)):  # clamped; 0 keeps the value
            response = await agent.post(
                "/registry/heartbeat", json={"workspace_id": workspace_id, "monthly_spend": spend}
            )
            assert response.status_code == 200, response.text
            async with stack.client() as client:
                assert (await client.get(f"/workspaces/{workspace_id}")).json()["monthly_spend"] == stored


async def test_postgres_unreachable_is_503_without_leaking_the_dsn():
    port = free_port()
    app = create_app(
        Settings(
            database_url=f"postgresql://admin:hunter2@127.0.0.1:{port}/secretdb",
            temporal_address=f"127.0.0.1:{free_port()}",
            molecule_env="development",
        )
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        beat = {"workspace_id": "6f1c2a8e-0d4b-4f7a-9a51-3c2e1b0d9f88"}
        for method, path, body in (
            ("GET", "/workspaces", None),
            ("POST", "/workspaces", {"name": "x"}),
            ("POST", "/registry/heartbeat", beat),
        ):
            response = await client.request(method, path, json=body, headers={"Authorization": "Bearer t"})
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "platform_unavailable"
            for leak in ("hunter2", "secretdb", str(port), "127.0.0.1", "Traceback"):
                assert leak not in response.text
        health = await client.get("/health")
        assert health.status_code == 503


async def test_temporal_unreachable_is_503_and_create_leaves_no_row(database_url):
    port = free_port()
    app = create_app(
        Settings(database_url=database_url, temporal_address=f"127.0.0.1:{port}", molecule_env="development")
    )
    conn = await asyncpg.connect(database_url)
    try:
        before = await conn.fetchval("SELECT count(*) FROM workspaces")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            response = await client.post("/workspaces", json={"name": "orphan-candidate"})
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "orchestrator_unavailable"
            assert str(port) not in response.text
        after = await conn.fetchval("SELECT count(*) FROM workspaces")
        assert after == before
    finally:
        await conn.close()


async def test_create_rolls_back_the_row_when_the_workflow_cannot_start(database_url, temporal_address):
    # The client connects, but the start itself is refused (unknown namespace): neither row nor workflow.
    app = create_app(
        Settings(
            database_url=database_url,
            temporal_address=temporal_address,
            temporal_namespace="no-such-namespace",
            molecule_env="development",
        )
    )
    conn = await asyncpg.connect(database_url)
    try:
        before = await conn.fetchval("SELECT count(*) FROM workspaces")
        events_before = await conn.fetchval("SELECT count(*) FROM structure_events")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            response = await client.post("/workspaces", json={"name": "half-created"})
        assert response.status_code in (502, 503), response.text
        assert "Traceback" not in response.text
        assert await conn.fetchval("SELECT count(*) FROM workspaces") == before
        assert await conn.fetchval("SELECT count(*) FROM structure_events") == events_before
    finally:
        await conn.close()


async def test_list_filters_by_status_and_get_reports_the_manifest_timeout(make_stack, tmp_path):
    templates = tmp_path / "templates"
    (templates / "codex").mkdir(parents=True)
    (templates / "codex" / "config.yaml").write_text(
        "runtime: codex\nbackend: process\ncommand: ['sleep', '600']\n"
        "runtime_config:\n  provision_timeout_seconds: 1200\n"
    )
    stack = await make_stack(TEMPLATES_DIR=templates)
    async with stack.client() as client:
        codex = (await create(client, name="c", runtime="codex"))["workspace"]
        external = (await create(client, name="e", external=True))["workspace"]
        assert codex["provision_timeout_ms"] == 1_200_000
        assert external["provision_timeout_ms"] is None
        got = (await client.get(f"/workspaces/{codex['id']}")).json()
        assert got["provision_timeout_ms"] == 1_200_000

        waiting = (await client.get("/workspaces", params={"status": "awaiting_agent"})).json()
        assert external["id"] in [w["id"] for w in waiting]
        assert all(w["status"] == "awaiting_agent" for w in waiting)
        provisioning = (await client.get("/workspaces", params={"status": "provisioning"})).json()
        assert codex["id"] in [w["id"] for w in provisioning]
        assert external["id"] not in [w["id"] for w in provisioning]
        bad = await client.get("/workspaces", params={"status": "sleeping"})
        assert bad.status_code == 422
        assert bad.json()["fields"][0]["field"] == "status"


async def test_workspace_event_stream_replays_and_filters(stack):
    async with stack.client() as client:
        a = await create(client, name="a", external=True)
        b = await create(client, name="b", external=True)
        a_id, b_id = a["workspace"]["id"], b["workspace"]["id"]
        assert (await client.get(f"/workspaces/{uuid.uuid4()}/events")).status_code == 404
        # since=0 replays a's history (its WORKSPACE_CREATED) before going live.
        async with EventStream(client, f"/workspaces/{a_id}/events?since=0") as events:
            await events.wait_type("WORKSPACE_CREATED", a_id)
            async with httpx.AsyncClient(base_url=stack.api_url) as agent:
                for ws, token in ((b_id, b["auth_token"]), (a_id, a["auth_token"])):
                    reply = await agent.post(
                        "/registry/register", json={"id": ws, "url": f"http://{ws}"}, headers=bearer(token)
                    )
                    assert reply.status_code == 200
            await events.wait_type("WORKSPACE_ONLINE", a_id)
            assert {e["workspace_id"] for e in events.events} == {a_id}


async def test_token_last_used_is_written_at_most_once_a_minute(stack, database_url):
    async with stack.client() as client:
        created = await create(client, external=True)
    workspace_id, token = created["workspace"]["id"], created["auth_token"]
    conn = await asyncpg.connect(database_url)

    async def last_used():
        return await conn.fetchval(
            "SELECT last_used_at FROM workspace_auth_tokens WHERE token_hash = $1",
            hashlib.sha256(token.encode()).hexdigest(),
        )

    try:
        assert await last_used() is None
        async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(token)) as agent:
            beat = {"workspace_id": workspace_id}
            assert (await agent.post("/registry/heartbeat", json=beat)).status_code == 200
            first = await last_used()
            assert first is not None
            for _ in range(3):
                assert (await agent.post("/registry/heartbeat", json=beat)).status_code == 200
            assert await last_used() == first
    finally:
        await conn.close()


async def test_chunked_body_over_the_limit_is_413(stack):
    async def chunks():
        for _ in range(5):
            yield b"x" * (300 * 1024)

    async with stack.client() as client:
        response = await client.post(
            "/workspaces", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
