"""Behaviours of the system this replaces that had drifted (issue 10.10): the inbound secret survives
a re-register, a zero task limit means one, and a heartbeat's reply reports the status it brings."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.api import bearer, create

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(make_stack):
    return await make_stack()


def fields_of(response: httpx.Response) -> set[str]:
    return {f["field"] for f in response.json().get("fields", [])}


async def test_max_concurrent_tasks_zero_or_omitted_means_one(stack):
    async with stack.client() as client:
        for extra in ({"max_concurrent_tasks": 0}, {}):
            created = await create(client, external=True, **extra)
            assert created["workspace"]["max_concurrent_tasks"] == 1, extra
        for bad in (-1, 1001):
            response = await client.post("/workspaces", json={"name": "x", "max_concurrent_tasks": bad})
            assert response.status_code == 422 and fields_of(response) == {"max_concurrent_tasks"}


async def test_register_again_returns_the_stored_inbound_secret(stack):
    async with stack.client() as client:
        created = await create(client, external=True)
    wid, token = created["workspace"]["id"], created["auth_token"]
    async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(token)) as agent:
        first = await agent.post("/registry/register", json={"id": wid, "url": "http://a:1"})
        again = await agent.post("/registry/register", json={"id": wid, "url": "http://a:2"})
        assert first.status_code == again.status_code == 200
        secret = first.json()["platform_inbound_secret"]
        assert again.json()["platform_inbound_secret"] == secret
        beat = await agent.post("/registry/heartbeat", json={"workspace_id": wid})
        assert beat.json()["platform_inbound_secret"] == secret


async def test_first_heartbeat_reply_reports_the_status_it_brings(stack):
    """An external agent that beats before registering: that beat brings it online, and says so."""
    async with stack.client() as client:
        created = await create(client, external=True)
    wid, token = created["workspace"]["id"], created["auth_token"]
    assert created["workspace"]["status"] == "awaiting_agent"
    async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(token)) as agent:
        reply = await agent.post("/registry/heartbeat", json={"workspace_id": wid})
        assert reply.status_code == 200, reply.text
        assert reply.json()["status"] == "online"
