"""Chat files end to end: uploads (types, names, the cap), downloads, who may, and the files going
with their workspace; on the data dir (embedded default) and on an S3 bucket (moto's server)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import boto3
import httpx
import pytest

from api.app import create_app
from config.settings import Settings
from domain.chat_files import MAX_UPLOAD_BYTES
from tests.integration.api import bearer, create
from tests.integration.conftest import Stack
from tests.integration.sse import EventStream

pytestmark = pytest.mark.integration
BUCKET = "molecule-chat-files"


async def upload_download_and_delete(stack: Stack, stored: Callable[[str], Awaitable[int]]) -> None:
    """The shared scenario; `stored(workspace_id)` counts the objects the store holds for it."""
    async with stack.client() as client, EventStream(client) as events:
        created = await create(client, name="files", external=True)
        wid, token = created["id"], created["auth_token"]
        other = await create(client, name="other", external=True)
        async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(token), timeout=30) as me:
            files = [
                ("files", ("notes.md", b"# hello\n", "text/x-custom")),  # the part's own type wins
                ("files", ("photo of me.png", b"\x89PNG fake", "application/octet-stream")),  # guessed
                ("files", ("../../etc/passwd", b"root:x:0:0", "")),  # traversal: only the last segment
                ("files", ("blob.zzz-unknown", bytes(range(256)) * 64, "")),
            ]
            reply = await me.post(f"/workspaces/{wid}/chat/uploads", files=files)
            assert reply.status_code == 200, reply.text
            got = reply.json()["files"]
            assert [(f["name"], f["mimeType"], f["size"]) for f in got] == [
                ("notes.md", "text/x-custom", 8),
                ("photo_of_me.png", "image/png", 9),
                ("passwd", "application/octet-stream", 10),
                ("blob.zzz-unknown", "application/octet-stream", 256 * 64),
            ]
            assert all(f["uri"].startswith("workspace:/chat-uploads/") for f in got)
            assert await stored(wid) == 4

            for (_, (_, content, _)), f in zip(files, got, strict=True):
                down = await me.get(f"/workspaces/{wid}/chat/download", params={"uri": f["uri"]})
                assert down.status_code == 200 and down.content == content
                assert down.headers["content-type"].startswith(f["mimeType"])
                assert f["name"] in down.headers["content-disposition"]
            # The original's parameter name, without the scheme, reads the same file.
            bare = got[0]["uri"].removeprefix("workspace:")
            assert (
                await me.get(f"/workspaces/{wid}/chat/download", params={"path": bare})
            ).content == b"# hello\n"

            for bad in ("/etc/passwd", "workspace:/chat-uploads/../../x", "file:///etc/passwd", ""):
                assert (
                    await me.get(f"/workspaces/{wid}/chat/download", params={"uri": bad})
                ).status_code == 400
            unknown = f"workspace:/chat-uploads/{uuid.uuid4().hex}-nope.txt"
            assert (
                await me.get(f"/workspaces/{wid}/chat/download", params={"uri": unknown})
            ).status_code == 404
            assert (await me.post(f"/workspaces/{wid}/chat/uploads", data={"x": "1"})).status_code == 400
            assert (await me.post(f"/workspaces/{wid}/chat/uploads", json={"files": []})).status_code == 400
            # Another workspace's file is not reachable through this one, nor with another's token.
            assert (
                await me.get(f"/workspaces/{other['id']}/chat/download", params={"uri": got[0]["uri"]})
            ).status_code == 403
        async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(other["auth_token"])) as them:
            theirs = await them.get(f"/workspaces/{other['id']}/chat/download", params={"uri": got[0]["uri"]})
            assert theirs.status_code == 404
            assert (await them.post(f"/workspaces/{wid}/chat/uploads", files=files[:1])).status_code == 403

        assert (await client.delete(f"/workspaces/{wid}")).status_code in (200, 202)
        await events.wait_type("WORKSPACE_TEARDOWN_COMPLETE", wid)
        assert await stored(wid) == 0
        conn = await asyncpg.connect(stack.database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM chat_files WHERE workspace_id = $1", wid) == 0
        finally:
            await conn.close()


async def test_chat_files_on_the_data_dir(make_stack: Callable[..., Awaitable[Stack]]) -> None:
    stack = await make_stack()

    async def stored(wid: str) -> int:
        root = stack.data_dir / "files" / "workspaces" / wid
        return sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0

    await upload_download_and_delete(stack, stored)


async def test_chat_files_on_s3(make_stack: Callable[..., Awaitable[Stack]], moto_endpoint: str) -> None:
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    stack = await make_stack(FILES_STORE="s3", FILES_S3_BUCKET=BUCKET, FILES_S3_ENDPOINT_URL=moto_endpoint)

    async def stored(wid: str) -> int:
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"workspaces/{wid}/")
        return len(listed.get("Contents", []))

    await upload_download_and_delete(stack, stored)
    assert not (stack.data_dir / "files").exists(), "nothing written to the data dir"


async def test_an_upload_over_50_mb_is_413_before_it_is_read() -> None:
    # The app's own middleware stack, in process: the limit answers from the headers alone.
    app = create_app(Settings(database_url="postgresql://unused/none", admin_token="x"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        path = f"/workspaces/{uuid.uuid4()}/chat/uploads"
        over = await client.post(
            path,
            content=b"x" * (MAX_UPLOAD_BYTES + 1),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert over.status_code == 413 and over.json()["code"] == "payload_too_large"
        # Everywhere else the general limit holds; the uploads route's larger one is its own.
        other = await client.post(
            "/workspaces", content=b"x" * (2 * 1024 * 1024), headers={"Content-Type": "application/json"}
        )
        assert other.status_code == 413
        under = await client.post(
            path,
            content=b"x" * (2 * 1024 * 1024),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert under.status_code != 413
