"""A boot watcher's log tail is redacted at the API, before it is signalled, stored or served: planted
secrets appear in neither the reply, the SSE event, the events table nor the workflow's history."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import httpx
import pytest
from temporalio.client import Client

import store.rescue
from api.app import create_app
from config.settings import Settings
from domain.models import workflow_id_for
from tests.integration.api import create
from tests.integration.sse import EventStream

pytestmark = pytest.mark.integration

ENV_VALUE = "planted-env-value-5d1e9a77"
ANTHROPIC_KEY = "sk-ant-api03-" + "Zq9xW2" * 8


def never_registering_templates(root: Path) -> Path:
    (root / "codex").mkdir(parents=True)
    (root / "codex" / "config.yaml").write_text(
        "runtime: codex\nbackend: process\ncommand: ['sleep', '600']\n"
    )
    return root


def boot_log(token: str) -> str:
    return (
        "starting agent\n"
        f"upstream credentials loaded: using {ENV_VALUE} for the proxy\n"
        f"echo {token}\n"
        f"key in use {ANTHROPIC_KEY}\n"
        "fatal: exit status 1\n"
    )


async def provisioning_workspace(client: httpx.AsyncClient) -> tuple[str, list[str]]:
    created = await create(client, runtime="codex", env={"UPSTREAM_SECRET": ENV_VALUE})
    assert created["workspace"]["status"] == "provisioning"
    return created["workspace"]["id"], [ENV_VALUE, created["auth_token"], ANTHROPIC_KEY]


async def stored_events(database_url: str, wid: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT payload::text FROM structure_events WHERE workspace_id = $1", wid)
    finally:
        await conn.close()
    return "\n".join(r["payload"] for r in rows)


async def history_bytes(temporal_address: str, wid: str) -> bytes:
    client = await Client.connect(temporal_address)
    history = await client.get_workflow_handle(workflow_id_for(wid)).fetch_history()
    return b"".join(event.SerializeToString() for event in history.events)


def assert_no_secret(where: str, text: str | bytes, secrets: list[str]) -> None:
    data = text if isinstance(text, bytes) else text.encode()
    for secret in secrets:
        assert secret.encode() not in data, f"{secret[:12]}... reached {where}"


async def test_boot_watcher_log_tail_is_redacted_everywhere_it_goes(make_stack, tmp_path, database_url):
    stack = await make_stack(TEMPLATES_DIR=never_registering_templates(tmp_path / "templates"))
    async with stack.client() as client, EventStream(client) as events:
        wid, secrets = await provisioning_workspace(client)
        token = secrets[1]
        reply = await client.post(
            f"/admin/workspaces/{wid}/bootstrap-failed", json={"log_tail": boot_log(token)}
        )
        assert reply.status_code == 202, reply.text
        assert reply.json()["log_tail_status"] == "redacted"
        failed = await events.wait_type("WORKSPACE_PROVISION_FAILED", wid)
        await events.wait_type("WORKSPACE_RESCUE_CAPTURED", wid)
        replayed = EventStream(client, f"/workspaces/{wid}/events?since=0")
        async with replayed:
            await replayed.wait_type("WORKSPACE_RESCUE_CAPTURED", wid)
        bundle = (await client.get(f"/workspaces/{wid}/rescue")).json()

    tail = failed["payload"]["log_tail"]
    assert "fatal: exit status 1" in tail and "[REDACTED]" in tail, "the evidence stays, the secrets go"
    assert_no_secret("the API reply", reply.text, secrets)
    assert_no_secret("the live SSE event", json.dumps(failed), secrets)
    assert_no_secret("the replayed SSE events", json.dumps(replayed.events), secrets)
    assert_no_secret("the events table", await stored_events(database_url, wid), secrets)
    assert_no_secret("the workflow history", await history_bytes(stack.temporal_address, wid), secrets)
    assert_no_secret("the rescue bundle", json.dumps(bundle), secrets)


async def test_without_a_redactor_the_verdict_stands_and_the_tail_is_dropped(
    make_stack, tmp_path, database_url, monkeypatch
):
    stack = await make_stack(TEMPLATES_DIR=never_registering_templates(tmp_path / "templates"))

    async def secrets_unreadable(pool, workspace_id, keyring):
        return None

    monkeypatch.setattr(store.rescue, "redactor_for", secrets_unreadable)
    # This process's API (the redactor patched out), against the stack's Postgres, Temporal and worker.
    app = create_app(
        Settings(
            database_url=database_url,
            temporal_address=stack.temporal_address,
            task_queue=stack.task_queue,
            molecule_env="development",
            data_dir=stack.data_dir,
        )
    )
    async with stack.client() as client, EventStream(client) as events:
        wid, secrets = await provisioning_workspace(client)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as local:
            reply = await local.post(
                f"/admin/workspaces/{wid}/bootstrap-failed", json={"log_tail": boot_log(secrets[1])}
            )
        await app.state.platform.close()
        assert reply.status_code == 202, reply.text
        assert reply.json()["log_tail_bytes"] == 0
        assert reply.json()["log_tail_status"].startswith("dropped")
        failed = await events.wait_type("WORKSPACE_PROVISION_FAILED", wid)
        assert failed["payload"]["source"] == "bootstrap_watcher" and failed["payload"]["log_tail"] == ""
        assert (await client.get(f"/workspaces/{wid}")).json()["status"] == "failed"
    assert_no_secret("the events table", await stored_events(database_url, wid), secrets)
    assert_no_secret("the workflow history", await history_bytes(stack.temporal_address, wid), secrets)
