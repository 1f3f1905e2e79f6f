"""Hostile input through the HTTP API: deep and oversized JSON maps, integers past bigint, and rows
written before the bounds existed. Nothing reaches a 500 and nothing stored can break a read."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import httpx
import pytest

from tests.integration.api import bearer, create

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}
INT8_MAX = 2**63 - 1
MAX_DEPTH = 32
MAX_BYTES = 256 * 1024


def nested(depth: int) -> dict:
    """A JSON object `depth` levels deep: {"a": {"a": ... {} ...}}."""
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def nested_bytes(depth: int) -> bytes:
    """The same shape as text, for depths json.dumps itself would refuse to write."""
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


@pytest.fixture
async def stack(make_stack):
    return await make_stack()


def fields_of(response: httpx.Response) -> set[str]:
    return {f["field"] for f in response.json().get("fields", [])}


async def test_deep_or_oversized_agent_card_is_422_and_nothing_is_written(stack):
    async with stack.client() as client:
        created = await create(client, external=True)
    wid, token = created["workspace"]["id"], created["auth_token"]
    async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(token)) as agent:
        for depth in (MAX_DEPTH + 1, 260, 500, 950):
            card = b'{"id": "%s", "agent_card": %s}' % (wid.encode(), nested_bytes(depth))
            response = await agent.post("/registry/register", content=card, headers=JSON)
            assert response.status_code == 422, (depth, response.status_code, response.text[:300])
            assert response.json()["code"] == "validation_error"
            assert fields_of(response) == {"agent_card"}, response.text[:300]
            assert str(MAX_DEPTH) in response.json()["error"]
        # Deeper than any JSON parser recursion limit: still a client error, never a 500.
        deep = b'{"id": "%s", "agent_card": %s}' % (wid.encode(), nested_bytes(100_000))
        response = await agent.post("/registry/register", content=deep, headers=JSON)
        assert response.status_code in (400, 422), (response.status_code, response.text[:300])
        big = {"blob": "x" * (MAX_BYTES + 1)}
        response = await agent.post("/registry/register", json={"id": wid, "agent_card": big})
        assert response.status_code == 422, response.text[:300]
        assert fields_of(response) == {"agent_card"}
        assert "262144" in response.json()["error"]

    async with stack.client() as client:
        row = (await client.get(f"/workspaces/{wid}")).json()
        assert (row["status"], row["agent_card"], row["registered_at"]) == ("awaiting_agent", None, None)
        assert (await client.get("/workspaces")).status_code == 200

    async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(token)) as agent:
        at_limit = await agent.post("/registry/register", json={"id": wid, "agent_card": nested(MAX_DEPTH)})
        assert at_limit.status_code == 200, at_limit.text[:300]
    async with stack.client() as client:
        row = (await client.get(f"/workspaces/{wid}")).json()
        assert row["agent_card"] == nested(MAX_DEPTH)


async def test_deep_or_oversized_maps_elsewhere_are_422_naming_the_field(stack):
    async with stack.client() as client:
        big_env = {f"K{i}": "v" * 60_000 for i in range(5)}  # 300 kB, under the 1 MiB body limit
        response = await client.post("/workspaces", json={"name": "x", "env": big_env})
        assert response.status_code == 422 and fields_of(response) == {"env"}, response.text[:300]
        created = await create(client, external=True)
    wid, token = created["workspace"]["id"], created["auth_token"]
    async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(token)) as agent:
        for capabilities in (nested(MAX_DEPTH + 1), {"blob": "x" * (MAX_BYTES + 1)}):
            beat = {"workspace_id": wid, "runtime_metadata": {"capabilities": capabilities}}
            response = await agent.post("/registry/heartbeat", json=beat)
            assert response.status_code == 422, response.text[:300]
            assert fields_of(response) == {"runtime_metadata.capabilities"}, response.text[:300]
        beat = {"workspace_id": wid, "runtime_metadata": {"capabilities": nested(MAX_DEPTH)}}
        assert (await agent.post("/registry/heartbeat", json=beat)).status_code == 200
    async with stack.client() as client:
        response = await client.post(
            f"/admin/workspaces/{wid}/bootstrap-failed", json={"log_tail": "x" * (MAX_BYTES + 1)}
        )
        assert response.status_code == 422 and fields_of(response) == {"log_tail"}, response.text[:300]


async def test_rows_stored_before_the_bounds_do_not_break_list_or_get(stack, database_url):
    """A card written before the bounds (or by hand) is served degraded, never as a 500 for everyone."""
    async with stack.client() as client:
        bad = (await create(client, name="bad", external=True))["workspace"]["id"]
        worse = (await create(client, name="worse", external=True))["workspace"]["id"]
        good = (await create(client, name="good", external=True))["workspace"]["id"]
    conn = await asyncpg.connect(database_url)
    try:
        stored = (
            # Deep enough to break the reply's serializer, shallow enough for Python to decode.
            (bad, json.dumps(nested(300)), json.dumps(nested(400))),
            # Past what Python decodes at all: nesting over its recursion limit, a 5000-digit integer.
            (worse, nested_bytes(3000).decode(), '{"n": 1%s}' % ("0" * 5000)),
        )
        for wid, card, capabilities in stored:
            await conn.execute(
                "UPDATE workspaces SET agent_card = $2::jsonb, capabilities = $3::jsonb WHERE id = $1",
                wid,
                card,
                capabilities,
            )
    finally:
        await conn.close()
    async with stack.client() as client:
        listing = await client.get("/workspaces", params={"limit": 5000})
        assert listing.status_code == 200, listing.text[:300]
        rows = {w["id"]: w for w in listing.json()}
        assert {good, bad, worse} <= set(rows)
        for wid in (bad, worse):
            single = await client.get(f"/workspaces/{wid}")
            assert single.status_code == 200, single.text[:300]
            for row in (rows[wid], single.json()):
                assert "unreadable" in row["agent_card"] and "unreadable" in row["capabilities"], row
        assert (await client.get(f"/workspaces/{good}")).json()["agent_card"] is None


async def test_numeric_query_parameters_and_headers_past_bigint_are_client_errors(stack):
    async with stack.client() as client:
        wid = (await create(client, external=True))["workspace"]["id"]
        for path, params, field in (
            ("/workspaces", {"offset": str(2**63)}, "offset"),
            ("/workspaces", {"offset": "9" * 5000}, "offset"),
            ("/events", {"since": str(2**63)}, "since"),
            (f"/workspaces/{wid}/events", {"since": str(2**63)}, "since"),
            ("/events", {"since": "-1"}, "since"),
        ):
            response = await client.get(path, params=params)
            assert response.status_code == 422, (path, params, response.status_code, response.text[:300])
            assert fields_of(response) == {field}, response.text[:300]
        # At the bound itself: an offset past every row, a replay point after every event.
        assert (await client.get("/workspaces", params={"offset": str(INT8_MAX)})).json() == []
        for value in ("1" * 12 * 1024, str(2**63), "12abc", "-5"):
            for path in ("/events", f"/workspaces/{wid}/events"):
                response = await client.get(path, headers={"Last-Event-ID": value})
                assert response.status_code == 400, (path, value[:30], response.status_code)
                assert response.json()["code"] == "invalid_last_event_id", response.text[:300]
        for wait in ("nan", "inf", "1e400"):
            response = await client.delete(f"/workspaces/{uuid.uuid4()}", params={"wait": wait})
            assert response.status_code == 422, (wait, response.status_code, response.text[:300])


async def test_since_at_the_bound_streams_and_an_empty_last_event_id_is_live(stack):
    async with stack.client() as client:
        for headers, params in (({}, {"since": str(INT8_MAX)}), ({"Last-Event-ID": ""}, {})):
            async with client.stream("GET", "/events", params=params, headers=headers) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    assert line == ": connected"
                    break


async def test_a_content_length_past_any_integer_is_a_client_error(stack):
    """The one numeric header the server itself reads: refused by the HTTP parser or as too large."""
    for length, status in (("1" * 12 * 1024, b" 400 "), (str(2**64), b" 400 "), (str(2**63), b" 413 ")):
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.api_port)
        try:
            writer.write(
                b"POST /workspaces HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer %s\r\nContent-Length: %s\r\n\r\n{}"
                % (stack.admin_token.encode(), length.encode())
            )
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 30)
        finally:
            writer.close()
        assert status in status_line, (length[:25], status_line)
