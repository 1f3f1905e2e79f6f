"""Discovery against the real stack: GET /registry/{id}/peers, GET /registry/discover/{id} and
POST /registry/check-access, with external workspaces in a small tree:

    A (root)                                 Z (root)
    ├── B1 "mid-m", role "Lead Researcher"   └── Y
    │   ├── C1 "leaf-y"                          └── X
    │   └── C2 "leaf-x"
    ├── B2 "mid-z", no role, url remote://…
    └── B3 "mid-b Ærø", role "", no url
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.integration.api import bearer, create

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(make_stack):
    return await make_stack()


@dataclass
class Ws:
    id: str
    token: str
    name: str
    url: str | None = None


@dataclass
class Family:
    a: Ws
    z: Ws
    b1: Ws
    b2: Ws
    b3: Ws
    c1: Ws
    c2: Ws
    y: Ws
    x: Ws


CARD = {"name": "lead", "skills": [{"id": "research"}]}


async def _make(stack, client, name: str, parent: Ws | None = None, url: str | None = None, **extra) -> Ws:
    created = await create(client, external=True, name=name, parent_id=parent.id if parent else None, **extra)
    ws = Ws(created["workspace"]["id"], created["auth_token"], name, url)
    if url is not None:
        body: dict[str, Any] = {"id": ws.id, "url": url}
        if name.endswith("mid-m"):
            body["agent_card"] = CARD
        async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(ws.token)) as agent:
            registered = await agent.post("/registry/register", json=body)
            assert registered.status_code == 200, registered.text
    return ws


async def family(stack) -> Family:
    tag = uuid.uuid4().hex[:8]
    n = 0

    def url() -> str:
        nonlocal n
        n += 1
        return f"http://93.184.215.{n}:8000"  # a public address literal: stored, never dialled

    async with stack.client() as client:
        a = await _make(stack, client, f"{tag} root-a", url=url())
        z = await _make(stack, client, f"{tag} root-z", url=url())
        # Created out of name order: the listing sorts by name within each group.
        b1 = await _make(stack, client, f"{tag} mid-m", a, url(), role="Lead Researcher", tier=3)
        b2 = await _make(stack, client, f"{tag} mid-z", a, f"remote://{tag}-b2")
        b3 = await _make(stack, client, f"{tag} mid-b Ærø", a, role="")
        c1 = await _make(stack, client, f"{tag} leaf-y", b1, url())
        c2 = await _make(stack, client, f"{tag} leaf-x", b1, url())
        y = await _make(stack, client, f"{tag} far-y", z, url())
        x = await _make(stack, client, f"{tag} far-x", y, url())
    return Family(a, z, b1, b2, b3, c1, c2, y, x)


def agent(stack, ws: Ws, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.api_url, headers={**bearer(ws.token), **headers}, timeout=60)


async def remove(stack, ws: Ws) -> None:
    async with stack.client() as client:
        reply = await client.delete(f"/workspaces/{ws.id}", params={"wait": 30})
        assert reply.status_code in (200, 202), reply.text
        assert (await client.get(f"/workspaces/{ws.id}")).status_code == 410


# --- discover ------------------------------------------------------------------------------------


async def test_discover_follows_the_access_rule(stack):
    f = await family(stack)
    allowed = [
        (f.c1, f.c1),  # self
        (f.c1, f.b1),  # parent
        (f.b1, f.a),  # parent, a root one
        (f.b1, f.c1),  # child
        (f.a, f.b1),  # child of a root
        (f.c1, f.c2),  # sibling
        (f.a, f.z),  # root to root
        (f.z, f.a),
    ]
    refused = [
        (f.c1, f.x),  # not related
        (f.b1, f.y),  # cousin
        (f.y, f.b1),
        (f.c1, f.a),  # grandparent
        (f.a, f.c1),  # grandchild
        (f.c1, f.b3),  # uncle (refused before its missing URL is told)
        (f.a, f.y),  # a root and another root's child
    ]
    for caller, target in allowed:
        async with agent(stack, caller) as client:
            reply = await client.get(f"/registry/discover/{target.id}")
        assert reply.status_code == 200, (caller.name, target.name, reply.text)
        assert reply.json() == {"id": target.id, "url": target.url, "name": target.name}
    for caller, target in refused:
        async with agent(stack, caller) as client:
            reply = await client.get(f"/registry/discover/{target.id}")
        assert reply.status_code == 403, (caller.name, target.name, reply.text)
        assert reply.json()["code"] == "forbidden"
        assert target.url is None or target.url not in reply.text
    async with stack.client() as operator:
        for target in (f.x, f.c1, f.a):
            reply = await operator.get(f"/registry/discover/{target.id}")
            assert reply.status_code == 200, reply.text
            assert reply.json() == {"id": target.id, "url": target.url, "name": target.name}


async def test_discover_unknown_removed_unreachable_and_bad_callers(stack):
    f = await family(stack)
    unknown = str(uuid.uuid4())
    async with agent(stack, f.c1) as c1, stack.client() as operator:
        # No existence oracle: an unknown target is refused like an unreachable one.
        reply = await c1.get(f"/registry/discover/{unknown}")
        assert reply.status_code == 403 and reply.json()["code"] == "forbidden", reply.text
        reply = await operator.get(f"/registry/discover/{unknown}")
        assert reply.status_code == 404 and reply.json()["code"] == "not_found", reply.text
        for client in (c1, operator):
            reply = await client.get("/registry/discover/not-a-uuid")
            assert reply.status_code == 400 and reply.json()["code"] == "invalid_id", reply.text

        # No URL, and a remote:// placeholder, are 503 no_url with the workspace's status.
        for caller, target in ((f.b1, f.b3), (f.a, f.b3), (f.b1, f.b2)):
            async with agent(stack, caller) as client:
                reply = await client.get(f"/registry/discover/{target.id}")
            assert reply.status_code == 503, (caller.name, target.name, reply.text)
            assert reply.json()["code"] == "no_url"
            assert target.url is None or target.url not in reply.text
        reply = await operator.get(f"/registry/discover/{f.b3.id}")
        assert reply.status_code == 503 and reply.json()["code"] == "no_url", reply.text
        assert reply.json()["status"] == "awaiting_agent"  # never registered
        reply = await operator.get(f"/registry/discover/{f.b2.id}")
        assert reply.status_code == 503 and reply.json()["code"] == "no_url", reply.text
        assert reply.json()["status"] in {"awaiting_agent", "online"}  # registered a placeholder

        # X-Workspace-ID must name the token's workspace (any spelling of its UUID).
        for claimed in (f.b1.id, str(uuid.uuid4()), "not-a-uuid"):
            reply = await c1.get(f"/registry/discover/{f.c2.id}", headers={"X-Workspace-ID": claimed})
            assert reply.status_code == 403 and reply.json()["code"] == "forbidden", (claimed, reply.text)
        reply = await c1.get(f"/registry/discover/{f.c2.id}", headers={"X-Workspace-ID": f.c1.id.upper()})
        assert reply.status_code == 200, reply.text
        # The operator is not a workspace: the header does not change what it may see.
        reply = await operator.get(f"/registry/discover/{f.x.id}", headers={"X-Workspace-ID": f.c1.id})
        assert reply.status_code == 200, reply.text

        # Tokens: none, a wrong one, then a removed workspace's own.
        async with httpx.AsyncClient(base_url=stack.api_url) as anonymous:
            reply = await anonymous.get(f"/registry/discover/{f.c2.id}")
            assert reply.status_code == 401, reply.text
            reply = await anonymous.get(f"/registry/discover/{f.c2.id}", headers=bearer("wrong"))
            assert reply.status_code == 401, reply.text

        await remove(stack, f.c2)
        reply = await c1.get(f"/registry/discover/{f.c2.id}")
        assert reply.status_code == 410 and reply.json()["code"] == "workspace_removed", reply.text
        reply = await operator.get(f"/registry/discover/{f.c2.id}")
        assert reply.status_code == 410, reply.text
        async with agent(stack, f.x) as x:  # not allowed to reach it: not told it was removed
            reply = await x.get(f"/registry/discover/{f.c2.id}")
            assert reply.status_code == 403, reply.text
        async with agent(stack, f.c2) as c2:
            reply = await c2.get(f"/registry/discover/{f.c1.id}")
            assert reply.status_code == 410, reply.text


# --- check-access --------------------------------------------------------------------------------


async def test_check_access_answers_the_rule_for_its_caller_or_the_operator(stack):
    f = await family(stack)
    cases = [
        (f.c1, f.c1, True),  # self
        (f.c1, f.b1, True),  # parent
        (f.b1, f.c1, True),  # child
        (f.c1, f.c2, True),  # sibling
        (f.a, f.z, True),  # root to root
        (f.b1, f.y, False),  # cousin
        (f.c1, f.x, False),
        (f.c1, f.a, False),  # grandparent
        (f.a, f.c1, False),  # grandchild
        (f.c1, f.b2, False),  # uncle
        (f.a, f.y, False),  # a root and another root's child
    ]
    async with stack.client() as operator:
        for caller, target, expected in cases:
            body = {"caller_id": caller.id, "target_id": target.id}
            async with agent(stack, caller) as client:
                reply = await client.post("/registry/check-access", json=body)
            assert reply.status_code == 200, (caller.name, target.name, reply.text)
            assert reply.json() == {"allowed": expected}, (caller.name, target.name)
            reply = await operator.post("/registry/check-access", json=body)
            assert reply.status_code == 200 and reply.json() == {"allowed": expected}, (
                caller.name,
                target.name,
            )

        unknown = str(uuid.uuid4())
        async with agent(stack, f.c1) as c1:
            reply = await c1.post("/registry/check-access", json={"caller_id": f.c1.id, "target_id": unknown})
            assert reply.status_code == 200 and reply.json() == {"allowed": False}, reply.text
            # Asking on another workspace's behalf, or under another X-Workspace-ID, is refused.
            reply = await c1.post("/registry/check-access", json={"caller_id": f.c2.id, "target_id": f.c1.id})
            assert reply.status_code == 403 and reply.json()["code"] == "forbidden", reply.text
            reply = await c1.post(
                "/registry/check-access",
                json={"caller_id": f.c1.id, "target_id": f.c2.id},
                headers={"X-Workspace-ID": f.c2.id},
            )
            assert reply.status_code == 403, reply.text
            reply = await c1.post("/registry/check-access", json={"caller_id": "nope", "target_id": f.c2.id})
            assert reply.status_code == 400 and reply.json()["code"] == "invalid_id", reply.text
            reply = await c1.post("/registry/check-access", json={"caller_id": f.c1.id, "target_id": "nope"})
            assert reply.status_code == 400, reply.text
            reply = await c1.post("/registry/check-access", json={"caller_id": f.c1.id})
            assert reply.status_code == 422, reply.text
            assert [e["field"] for e in reply.json()["fields"]] == ["target_id"]
        reply = await operator.post(
            "/registry/check-access", json={"caller_id": unknown, "target_id": f.a.id}
        )
        assert reply.status_code == 200 and reply.json() == {"allowed": False}, reply.text
        async with httpx.AsyncClient(base_url=stack.api_url) as anonymous:
            body = {"caller_id": f.c1.id, "target_id": f.c2.id}
            assert (await anonymous.post("/registry/check-access", json=body)).status_code == 401

        await remove(stack, f.c2)
        for client in (agent(stack, f.c1), stack.client()):
            async with client:
                reply = await client.post(
                    "/registry/check-access", json={"caller_id": f.c1.id, "target_id": f.c2.id}
                )
                assert reply.status_code == 200 and reply.json() == {"allowed": False}, reply.text


# --- peers ---------------------------------------------------------------------------------------


def names(reply: httpx.Response) -> list[str]:
    assert reply.status_code == 200, reply.text
    return [peer["name"] for peer in reply.json()]


async def test_peers_are_siblings_then_children_then_parent(stack):
    f = await family(stack)
    async with agent(stack, f.c2) as c2:  # a heartbeat's active tasks show in the listing
        beat = await c2.post("/registry/heartbeat", json={"workspace_id": f.c2.id, "active_tasks": 3})
        assert beat.status_code == 200, beat.text
    async with agent(stack, f.b1) as b1:
        reply = await b1.get(f"/registry/{f.b1.id}/peers")
    assert names(reply) == [f.b3.name, f.b2.name, f.c2.name, f.c1.name, f.a.name]
    peers = {peer["id"]: peer for peer in reply.json()}
    assert all(
        set(peer)
        == {"id", "name", "role", "tier", "status", "url", "parent_id", "active_tasks", "agent_card"}
        for peer in peers.values()
    )
    assert {k: v for k, v in peers[f.b3.id].items() if k != "status"} == {
        "id": f.b3.id,
        "name": f.b3.name,
        "role": None,  # an empty role is null
        "tier": 2,
        "url": "",  # no URL is ""
        "parent_id": f.a.id,
        "active_tasks": 0,
        "agent_card": None,
    }
    assert peers[f.b3.id]["status"] == "awaiting_agent"
    assert peers[f.b2.id]["role"] is None and peers[f.b2.id]["url"] == f.b2.url
    assert peers[f.c2.id]["active_tasks"] == 3 and peers[f.c2.id]["parent_id"] == f.b1.id
    assert peers[f.c1.id]["url"] == f.c1.url and peers[f.c1.id]["active_tasks"] == 0
    assert peers[f.a.id]["parent_id"] is None and peers[f.a.id]["url"] == f.a.url

    async with agent(stack, f.c1) as c1:
        reply = await c1.get(f"/registry/{f.c1.id}/peers")
        lead = reply.json()[-1]
    assert names(reply) == [f.c2.name, f.b1.name]
    assert (lead["role"], lead["tier"], lead["agent_card"]) == ("Lead Researcher", 3, CARD)

    async with agent(stack, f.x) as x:  # an only child without children: its parent alone
        assert names(await x.get(f"/registry/{f.x.id}/peers")) == [f.y.name]

    # A root: every other root workspace (this session's other tests make some too), then its
    # children; no parent, nothing from another tree.
    async with agent(stack, f.a) as a:
        reply = await a.get(f"/registry/{f.a.id}/peers")
    listed = reply.json()
    assert names(reply)[-3:] == [f.b3.name, f.b1.name, f.b2.name]
    roots = listed[:-3]
    assert f.z.id in {peer["id"] for peer in roots} and f.a.id not in {peer["id"] for peer in listed}
    assert all(peer["parent_id"] is None for peer in roots)
    assert [p["name"] for p in roots] == sorted(p["name"] for p in roots)  # C collation: by bytes
    assert not {f.c1.id, f.c2.id, f.y.id, f.x.id} & {peer["id"] for peer in listed}

    # The operator sees the same listing; 404 for an unknown workspace.
    async with stack.client() as operator:
        assert names(await operator.get(f"/registry/{f.b1.id}/peers")) == [
            f.b3.name,
            f.b2.name,
            f.c2.name,
            f.c1.name,
            f.a.name,
        ]
        reply = await operator.get(f"/registry/{uuid.uuid4()}/peers")
        assert reply.status_code == 404 and reply.json()["code"] == "not_found", reply.text
        assert (await operator.get("/registry/nope/peers")).status_code == 400


async def test_peers_only_for_the_tokens_own_workspace(stack):
    f = await family(stack)
    async with agent(stack, f.c1) as c1:
        for other in (f.c2.id, f.b1.id, str(uuid.uuid4())):  # a peer, its parent, an unknown id
            reply = await c1.get(f"/registry/{other}/peers")
            assert reply.status_code == 403 and reply.json()["code"] == "forbidden", reply.text
        reply = await c1.get(f"/registry/{f.c1.id}/peers", headers={"X-Workspace-ID": f.c2.id})
        assert reply.status_code == 403, reply.text
        reply = await c1.get(f"/registry/{f.c1.id}/peers", headers={"X-Workspace-ID": f.c1.id})
        assert names(reply) == [f.c2.name, f.b1.name]
        assert (await c1.get("/registry/nope/peers")).status_code == 400
    async with httpx.AsyncClient(base_url=stack.api_url) as anonymous:
        assert (await anonymous.get(f"/registry/{f.c1.id}/peers")).status_code == 401
        wrong = await anonymous.get(f"/registry/{f.c1.id}/peers", headers=bearer("not-a-token"))
        assert wrong.status_code == 401 and wrong.json()["code"] == "unauthorized"


async def test_peers_query_filters_on_name_or_role(stack):
    f = await family(stack)
    everyone = [f.b3.name, f.b2.name, f.c2.name, f.c1.name, f.a.name]
    async with agent(stack, f.b1) as b1:

        async def peers(q: str) -> list[str]:
            return names(await b1.get(f"/registry/{f.b1.id}/peers", params={"q": q}))

        assert await peers("mid-z") == [f.b2.name]  # name; its role is null
        assert await peers("LEAF") == [f.c2.name, f.c1.name]  # name, ignoring case
        assert await peers("  leaf-y ") == [f.c1.name]  # surrounding blanks are not part of it
        assert await peers("ærø") == [f.b3.name]  # beyond ASCII too
        assert await peers("   ") == everyone  # blank: no filter
        assert await peers("") == everyone
        assert await peers("no such peer") == []
        assert await peers("%") == [] and await peers("_") == []  # not LIKE patterns
    async with agent(stack, f.c1) as c1:  # a role matches, ignoring case; null roles around it
        reply = await c1.get(f"/registry/{f.c1.id}/peers", params={"q": "researcher"})
        assert names(reply) == [f.b1.name]
        reply = await c1.get(f"/registry/{f.c1.id}/peers", params={"q": "LEAD RESEARCH"})
        assert names(reply) == [f.b1.name]
    async with agent(stack, f.a) as a:  # B2 (role null) and B3 (role "") do not break the filter
        reply = await a.get(f"/registry/{f.a.id}/peers", params={"q": "researcher"})
        assert names(reply) == [f.b1.name]
        reply = await a.get(f"/registry/{f.a.id}/peers", params={"q": "x" * 2001})
        assert reply.status_code == 422 and reply.json()["fields"][0]["field"] == "q", reply.text


async def test_removed_peers_are_left_out(stack):
    f = await family(stack)
    await remove(stack, f.c2)
    await remove(stack, f.b3)
    async with agent(stack, f.b1) as b1:
        assert names(await b1.get(f"/registry/{f.b1.id}/peers")) == [f.b2.name, f.c1.name, f.a.name]
    async with agent(stack, f.c1) as c1:
        assert names(await c1.get(f"/registry/{f.c1.id}/peers")) == [f.b1.name]
    async with agent(stack, f.a) as a:
        listed = {peer["id"] for peer in (await a.get(f"/registry/{f.a.id}/peers")).json()}
        assert f.b3.id not in listed and {f.b1.id, f.b2.id, f.z.id} <= listed
    # The removed workspace's own token, and the operator asking about it: 410.
    async with agent(stack, f.c2) as c2:
        reply = await c2.get(f"/registry/{f.c2.id}/peers")
        assert reply.status_code == 410 and reply.json()["code"] == "workspace_removed", reply.text
    async with stack.client() as operator:
        reply = await operator.get(f"/registry/{f.c2.id}/peers")
        assert reply.status_code == 410 and reply.json()["code"] == "workspace_removed", reply.text
    # A removed parent: its whole subtree goes, and the survivors no longer list it.
    await remove_tree(stack, f.y)
    async with agent(stack, f.z) as z:
        listed = {peer["id"] for peer in (await z.get(f"/registry/{f.z.id}/peers")).json()}
        assert f.y.id not in listed and f.a.id in listed


async def remove_tree(stack, ws: Ws) -> None:
    async with stack.client() as client:
        reply = await client.delete(f"/workspaces/{ws.id}", params={"confirm": "true", "wait": 30})
        assert reply.status_code in (200, 202), reply.text
        assert (await client.get(f"/workspaces/{ws.id}")).status_code == 410
