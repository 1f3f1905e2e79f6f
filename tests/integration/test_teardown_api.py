"""Delete, restart, pause, the boot watcher and rescue bundles through the HTTP API, on real
Postgres, the Temporal dev server and the process backend."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path

import pytest
import yaml

from activities.rescue import capture_rescue_bundle
from backends.process import ProcessProvisioner
from backends.registry import Backends
from config.settings import Settings
from config.templates import TemplateCatalog
from domain.models import RescueRequest
from store import rescue as rescue_store
from store.db import create_pool
from store.keyring import load_keyring
from tests.integration.api import bearer, create
from tests.integration.sse import EventStream

pytestmark = pytest.mark.integration

FAST = {"HEARTBEAT_INTERVAL": "1"}


@pytest.fixture
async def stack(make_stack):
    return await make_stack()


async def online_workspace(client, events, **body) -> dict:
    created = await create(client, runtime="claude-code", env=FAST, **body)
    await events.wait_type("WORKSPACE_ONLINE", created["workspace"]["id"])
    return created


async def online_after(events: EventStream, workspace_id: str, event_id: int) -> None:
    await events.wait_for(
        lambda e: (
            e["event_type"] == "WORKSPACE_ONLINE" and e["workspace_id"] == workspace_id and e["id"] > event_id
        )
    )


async def file_contains(path: Path, text: str, timeout: float = 15.0) -> str:
    """Poll a file another process writes (there is no event to await for it)."""
    async with asyncio.timeout(timeout):
        while not (path.exists() and text in path.read_text()):
            await asyncio.sleep(0.05)
    return path.read_text()


async def test_delete_removes_at_once_and_tears_down(stack):
    backend = ProcessProvisioner(stack.data_dir, stack.platform_id)
    async with stack.client() as client, EventStream(client) as events:
        created = await online_workspace(client, events)
        wid = created["workspace"]["id"]
        assert len(await backend.list_managed()) == 1

        reply = await client.delete(f"/workspaces/{wid}")
        assert reply.status_code == 202, reply.text
        assert reply.json()["status"] == "removed" and reply.json()["cascade_deleted"] == 0
        assert reply.json()["teardown"] in ("pending", "complete")
        gone = await client.get(f"/workspaces/{wid}")
        assert gone.status_code == 410
        body = gone.json()
        assert body["error"] == "workspace removed" and body["id"] == wid
        assert body["removed_at"] is not None and "POST /workspaces" in body["hint"]

        await events.wait_type("WORKSPACE_TEARDOWN_COMPLETE", wid)
        shown = (await client.get(f"/workspaces/{wid}", params={"include_removed": "true"})).json()
        assert shown["status"] == "removed"
        assert shown["teardown"] == {
            "instance_stopped": True,
            "volumes_removed": True,
            "leak_suspect": False,
            "attempts": 0,
            "last_error": None,
            "complete": True,
        }
        assert await backend.list_managed() == []
        assert not backend.workspace_dir(wid).exists(), "its data is gone too"
        beat = await client.post(
            "/registry/heartbeat", json={"workspace_id": wid}, headers=bearer(created["auth_token"])
        )
        assert beat.status_code == 410, "the agent learns its workspace is gone"
        assert (await client.delete(f"/workspaces/{wid}")).status_code == 410


async def test_delete_with_wait_replies_once_teardown_is_complete(stack):
    async with stack.client() as client, EventStream(client) as events:
        wid = (await online_workspace(client, events))["workspace"]["id"]
        reply = await client.delete(f"/workspaces/{wid}", params={"wait": 30})
        assert reply.status_code == 200, reply.text
        assert reply.json()["teardown"] == "complete"


async def test_delete_with_children_needs_confirmation_then_cascades(stack):
    async with stack.client() as client:
        parent = (await create(client, external=True))["workspace"]["id"]
        child = (await create(client, external=True, parent_id=parent))["workspace"]["id"]
        grandchild = (await create(client, external=True, parent_id=child))["workspace"]["id"]
        refused = await client.delete(f"/workspaces/{parent}")
        assert refused.status_code == 409
        assert refused.json()["code"] == "confirmation_required" and refused.json()["children"] == 2
        assert (await client.get(f"/workspaces/{parent}")).json()["status"] == "awaiting_agent"

        reply = await client.delete(f"/workspaces/{parent}", params={"confirm": "true", "wait": 30})
        assert reply.status_code == 200, reply.text
        assert reply.json()["cascade_deleted"] == 2
        for wid in (parent, child, grandchild):
            assert (await client.get(f"/workspaces/{wid}")).status_code == 410


async def test_bad_inputs_for_lifecycle_routes(stack):
    async with stack.client() as client, EventStream(client) as events:
        unknown = str(uuid.uuid4())
        assert (await client.delete("/workspaces/not-a-uuid")).status_code == 400
        assert (await client.delete(f"/workspaces/{unknown}")).status_code == 404
        assert (await client.post(f"/workspaces/{unknown}/restart")).status_code == 404
        assert (await client.post("/workspaces/nope/restart")).status_code == 400
        assert (await client.get(f"/workspaces/{unknown}/rescue")).status_code == 404
        external = await create(client, external=True)
        wid = external["workspace"]["id"]
        hibernate = await client.post(f"/workspaces/{wid}/hibernate")  # still awaiting its agent
        assert hibernate.status_code == 409 and hibernate.json()["code"] == "invalid_state"
        noop = await client.post(f"/workspaces/{wid}/restart")
        assert noop.status_code == 200
        assert noop.json() == {"status": "noop", "message": "external agent: restart it on your side"}
        registered = await client.post(
            "/registry/register",
            json={"id": wid, "url": "http://x:1"},
            headers=bearer(external["auth_token"]),
        )
        assert registered.status_code == 200, "the token is untouched by a restart"
        await events.wait_type("WORKSPACE_ONLINE", wid)
        assert (await client.post(f"/workspaces/{wid}/resume")).status_code == 409
        watcher = await client.post(f"/admin/workspaces/{wid}/bootstrap-failed", json={"log_tail": "x"})
        assert watcher.status_code == 409
        assert watcher.json()["code"] == "invalid_state"
        assert (await client.get(f"/workspaces/{wid}")).json()["status"] == "online", "status unchanged"
        assert (
            await client.post(f"/admin/workspaces/{wid}/bootstrap-failed", json={"bad": 1})
        ).status_code == 422
        assert (await client.delete(f"/workspaces/{wid}", params={"wait": "-1"})).status_code == 422


async def test_an_action_the_workflow_cannot_answer_is_503_and_a_retry_later_succeeds(make_stack):
    stack = await make_stack(UPDATE_REPLY_TIMEOUT_SECONDS=2)
    async with stack.client() as client:
        wid = (await create(client, external=True))["workspace"]["id"]
        (worker,) = stack.workers
        worker.send_signal(signal.SIGSTOP)  # a worker that holds the workflow but never answers
        try:
            reply = await client.delete(f"/workspaces/{wid}")
            assert reply.status_code == 503, reply.text
            assert reply.json()["code"] == "orchestrator_timeout"
            assert "did not answer the delete within 2s" in reply.json()["error"]
            assert (await client.get(f"/workspaces/{wid}")).status_code == 200  # not removed behind our back
        finally:
            worker.send_signal(signal.SIGCONT)
        # Once the worker answers again, the operator's retry goes through (or finds it already done).
        retry = await client.delete(f"/workspaces/{wid}")
        assert retry.status_code in (200, 202, 410), retry.text
        assert (await client.get(f"/workspaces/{wid}")).status_code == 410


async def test_restart_replaces_the_instance_and_comes_back_online(stack):
    backend = ProcessProvisioner(stack.data_dir, stack.platform_id)
    async with stack.client() as client, EventStream(client) as events:
        wid = (await online_workspace(client, events))["workspace"]["id"]
        first = (await client.get(f"/workspaces/{wid}")).json()["instance_id"]
        reply = await client.post(f"/workspaces/{wid}/restart")
        assert reply.status_code == 202 and reply.json()["status"] == "provisioning"
        started = await events.wait_for(
            lambda e: (
                e["event_type"] == "WORKSPACE_PROVISIONING"
                and e["workspace_id"] == wid
                and e["payload"].get("generation") == 2
            )
        )
        await online_after(events, wid, started["id"])
        second = (await client.get(f"/workspaces/{wid}")).json()["instance_id"]
        assert second != first
        assert [m.instance_id for m in await backend.list_managed()] == [second]


async def test_pause_cascades_and_resume_reprovisions(stack):
    async with stack.client() as client, EventStream(client) as events:
        parent = (await online_workspace(client, events))["workspace"]["id"]
        child = (await create(client, external=True, parent_id=parent))["workspace"]["id"]
        reply = await client.post(f"/workspaces/{parent}/pause")
        assert reply.status_code == 202 and reply.json() == {
            "status": "paused", "coalesced": False, "message": None, "cascade_paused": 1
        }  # fmt: skip
        for wid in (parent, child):
            assert (await client.get(f"/workspaces/{wid}")).json()["status"] == "paused"
        resumed = await client.post(f"/workspaces/{parent}/resume")
        assert resumed.status_code == 202 and resumed.json()["status"] == "provisioning"
        paused = await events.wait_type("WORKSPACE_PAUSED", parent)
        await online_after(events, parent, paused["id"])


PLANTED = {
    "env_secret": "sup3r-s3cret-env-value-9f8e",
    "aws_key": "AKIAIOSFODNN7EXAMPLE",
    "bearer": "Bearer eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.sig",
    "private_key": (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretkeymaterial\n-----END RSA PRIVATE KEY-----"
    ),
}
LEAKY_AGENT = (
    "import os, time\n"
    "print('env secret', os.environ['API_SECRET'])\n"
    f"print('aws', {PLANTED['aws_key']!r})\n"
    f"print('auth header', {PLANTED['bearer']!r})\n"
    f"print({PLANTED['private_key']!r})\n"
    "print('my token is', os.environ['WORKSPACE_TOKEN'])\n"
    "print('password=hunter22', flush=True)\n"
    "time.sleep(600)\n"
)


def leaky_templates(root: Path) -> Path:
    (root / "claude-code").mkdir(parents=True)
    config = {
        "runtime": "claude-code",
        "backend": "process",
        "command": ["{python}", "-c", LEAKY_AGENT],
        "env": {"AWS_ACCESS_KEY_ID": PLANTED["aws_key"], "NOTE": "db password=hunter22"},
        "signing_key": PLANTED["private_key"],
    }
    (root / "claude-code" / "config.yaml").write_text(yaml.safe_dump(config))
    return root


async def test_boot_watcher_verdict_captures_a_bundle_with_every_secret_redacted(make_stack, tmp_path):
    stack = await make_stack(TEMPLATES_DIR=leaky_templates(tmp_path / "templates"))
    async with stack.client() as client, EventStream(client) as events:
        created = await create(client, runtime="claude-code", env={"API_SECRET": PLANTED["env_secret"]})
        wid = created["workspace"]["id"]
        log = await file_contains(stack.data_dir / "workspaces" / wid / "agent.log", "hunter22")
        log += "\nbinary junk: \x00\x00 end"  # kept as evidence, NULs shown as U+FFFD
        reply = await client.post(f"/admin/workspaces/{wid}/bootstrap-failed", json={"log_tail": log})
        assert reply.status_code == 202, reply.text
        failed = await events.wait_type("WORKSPACE_PROVISION_FAILED", wid)
        assert failed["payload"]["source"] == "bootstrap_watcher"
        captured = await events.wait_type("WORKSPACE_RESCUE_CAPTURED", wid)
        assert captured["payload"]["captured"] is True
        bundle = (await client.get(f"/workspaces/{wid}/rescue")).json()

    dump = json.dumps(bundle)
    assert "env secret" in dump and "API_SECRET=[REDACTED]" in dump, (
        "the evidence is there, the values are not"
    )
    for name, secret in PLANTED.items():
        assert secret not in dump, f"{name} survived into the bundle"
    assert "BEGIN RSA PRIVATE KEY" not in dump
    assert "hunter22" not in dump
    assert created["auth_token"] not in dump
    assert "my token is [REDACTED]" in bundle["sections"]["backend.logs"], (
        "the instance token, found by its hash"
    )
    assert bundle["reason"] == "bootstrap_watcher"
    assert "binary junk: \ufffd\ufffd end" in bundle["sections"]["log_tail"]
    assert {"backend.logs", "template_config", "env", "log_tail"} <= set(bundle["sections"])


async def test_no_redactor_means_no_bundle(stack, database_url):
    async with stack.client() as client:
        wid = (await create(client, runtime="claude-code", env={"API_SECRET": "x" * 12}))["workspace"]["id"]
    settings = Settings.model_validate(
        {"MOLECULE_DATA_DIR": stack.data_dir, "MOLECULE_PLATFORM_INSTANCE": stack.platform_id}
    )
    pool = await create_pool(database_url)
    try:

        async def no_redactor(pool, workspace_id):
            return None

        request = RescueRequest(wid, "process", None, "claude-code", None, 1, "provision_timeout")
        stored = await capture_rescue_bundle(
            pool,
            Backends(settings),
            TemplateCatalog(settings.templates_dir),
            request,
            no_redactor,
            load_keyring(None, stack.data_dir),
        )
        assert stored is False
        assert await rescue_store.latest_bundle(pool, wid) is None
        withheld = await pool.fetchval(
            """SELECT payload FROM structure_events
               WHERE workspace_id = $1 AND event_type = 'WORKSPACE_RESCUE_CAPTURED'""",
            uuid.UUID(wid),
        )
        assert withheld["captured"] is False and withheld["reason"] == "redaction unavailable"
    finally:
        await pool.close()
