"""Failed authentication is rate-limited per client address (issue 10 item 9), against real
PostgreSQL and Temporal, with the limiter on a fake clock."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from config.settings import Settings
from store import tokens
from tests.integration.api import bearer

pytestmark = pytest.mark.integration

ADMIN = "admin-" + uuid.uuid4().hex
LIMIT = 3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def app(database_url: str, temporal_address: str) -> AsyncIterator[FastAPI]:
    app = create_app(
        Settings(
            database_url=database_url,
            temporal_address=temporal_address,
            task_queue=f"no-worker-{uuid.uuid4().hex[:8]}",  # workflows start; nothing runs them
            admin_token=ADMIN,
            molecule_env="test",
            auth_failure_limit_per_minute=LIMIT,
        )
    )
    app.state.platform.auth_failures.clock = Clock()
    yield app
    await app.state.platform.close()


def client(app: FastAPI, address: str, token: str | None = ADMIN) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 40000)),
        base_url="http://api",
        headers=bearer(token) if token else {},
    )


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "too_many_auth_failures"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.json()["retry_after"] == int(response.headers["Retry-After"])


async def external_workspace(app: FastAPI) -> dict[str, Any]:
    async with client(app, "10.9.9.9") as operator:
        response = await operator.post("/workspaces", json={"name": "limits", "external": True})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_wrong_admin_tokens_lock_out_that_address_only(app):
    async with client(app, "10.0.0.1", "wrong") as attacker, client(app, "10.0.0.1") as neighbour:
        for _ in range(LIMIT):
            assert (await attacker.get("/workspaces")).status_code == 401
        assert_limited(await attacker.get("/workspaces"))
        # Once limited, the address gets 429 for a token it has not authenticated with before,
        # the valid one included: a locked-out address learns nothing.
        assert_limited(await neighbour.get("/workspaces"))
        assert_limited(await neighbour.get(f"/workspaces/{uuid.uuid4()}/events"))
    async with client(app, "10.0.0.2") as elsewhere:
        assert (await elsewhere.get("/workspaces")).status_code == 200
    app.state.platform.auth_failures.clock.now += 60
    async with client(app, "10.0.0.1") as after_the_window:
        assert (await after_the_window.get("/workspaces")).status_code == 200


async def test_a_missing_token_is_not_a_guess(app):
    async with client(app, "10.0.1.1", token=None) as anonymous:
        for _ in range(LIMIT * 3):
            assert (await anonymous.get("/workspaces")).status_code == 401


async def test_wrong_workspace_tokens_lock_out_heartbeat_and_register(app):
    created = await external_workspace(app)
    workspace_id = created["workspace"]["id"]
    beat = {"workspace_id": workspace_id}
    async with client(app, "10.0.2.1", "not-a-token") as attacker:
        for _ in range(LIMIT):
            assert (await attacker.post("/registry/heartbeat", json=beat)).status_code == 401
        assert_limited(await attacker.post("/registry/heartbeat", json=beat))
        assert_limited(await attacker.post("/registry/register", json={"id": workspace_id}))
    async with client(app, "10.0.2.1", created["auth_token"]) as same_address:
        assert_limited(await same_address.post("/registry/heartbeat", json=beat))
    async with client(app, "10.0.2.2", created["auth_token"]) as agent:
        assert (await agent.post("/registry/heartbeat", json=beat)).status_code == 200


async def test_a_valid_caller_that_shares_the_attackers_address_carries_on(app):
    """Agents on one host share an address: one that guesses must not lock the others out."""
    created = await external_workspace(app)
    beat = {"workspace_id": created["workspace"]["id"]}
    async with (
        client(app, "10.0.5.1", created["auth_token"]) as agent,
        client(app, "10.0.5.1", "not-a-token") as attacker,
        client(app, "10.0.5.1") as operator,
    ):
        assert (await agent.post("/registry/heartbeat", json=beat)).status_code == 200
        assert (await operator.get("/workspaces")).status_code == 200
        for _ in range(LIMIT):
            assert (await attacker.post("/registry/heartbeat", json=beat)).status_code == 401
        assert_limited(await attacker.post("/registry/heartbeat", json=beat))
        for _ in range(5):
            assert (await agent.post("/registry/heartbeat", json=beat)).status_code == 200
            assert (await operator.get("/workspaces")).status_code == 200
        register = await agent.post("/registry/register", json={"id": beat["workspace_id"]})
        assert register.status_code != 429, register.text


async def test_wrong_tokens_on_register_count_too(app):
    created = await external_workspace(app)
    body = {"id": created["workspace"]["id"], "url": "http://127.0.0.1:9"}
    async with client(app, "10.0.3.1", "not-a-token") as attacker:
        for _ in range(LIMIT):
            assert (await attacker.post("/registry/register", json=body)).status_code == 401
        assert_limited(await attacker.post("/registry/register", json=body))


async def test_a_revoked_token_is_a_stale_agent_not_a_guess(app, database_url):
    created = await external_workspace(app)
    workspace_id = created["workspace"]["id"]
    stale = tokens.mint_token()
    conn = await asyncpg.connect(database_url)
    try:
        await tokens.insert_token(conn, workspace_id, stale, "instance")
        await tokens.replace_instance_token(conn, workspace_id)  # revokes `stale`
    finally:
        await conn.close()
    async with client(app, "10.0.4.1", stale.token) as old_instance:
        for _ in range(LIMIT * 3):
            beat = await old_instance.post("/registry/heartbeat", json={"workspace_id": workspace_id})
            assert beat.status_code == 401
            register = await old_instance.post("/registry/register", json={"id": workspace_id})
            assert register.status_code == 401
