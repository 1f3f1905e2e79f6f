"""Secrets on real PostgreSQL, Temporal and backends: the routes, the merge into an instance's env
(process and docker), the fixed failure for a value that cannot be decrypted, rotation, the move of
plain-text env rows, and no planted value anywhere it must not be."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import asyncpg
import psutil
import pytest
import yaml

from backends.docker import container_name
from backends.process import ProcessProvisioner, parse_instance_id
from domain.secrets import Scope, associated_data
from domain.status import WorkspaceStatus
from store import secrets as secret_store
from store.db import create_pool
from store.keyring import Keyring, load_keyring
from store.workspaces import NewWorkspace, insert_workspace
from tests.integration.api import bearer, create, until
from tests.integration.test_boot_log_redaction import assert_no_secret, history_bytes, stored_events

pytestmark = pytest.mark.integration

GLOBAL_VALUE = "planted-global-4b1f7c0d9e"
WORKSPACE_VALUE = "planted-workspace-8a2e6d31c5"
CREATE_VALUE = "planted-create-env-73c9e04f1a"
# Written in plain text on purpose (an upgrade's legacy table), so never one of the planted values.
LEGACY_VALUE = "legacy-plain-env-0c61d5"


def sleeping_templates(root: Path, image: str | None = None) -> Path:
    """claude-code: a process that never registers (its env is what the backend gave it); hermes: the
    reference agent's image on docker."""
    (root / "claude-code").mkdir(parents=True)
    (root / "claude-code" / "config.yaml").write_text(
        yaml.safe_dump({"runtime": "claude-code", "backend": "process", "command": ["sleep", "600"]})
    )
    if image:
        (root / "hermes").mkdir(parents=True)
        (root / "hermes" / "config.yaml").write_text(
            yaml.safe_dump({"runtime": "hermes", "backend": "docker", "image": image})
        )
    return root


async def instance_env(stack, workspace_id: str) -> dict[str, str]:
    backend = ProcessProvisioner(stack.data_dir, stack.platform_id)
    found: list = []

    async def launched() -> bool:
        found[:] = await backend.list_managed(workspace_id)
        return bool(found)

    await until(launched, f"the instance of {workspace_id}")
    pid, _ = parse_instance_id(found[0].instance_id)
    return psutil.Process(pid).environ()


async def status_of(client, workspace_id: str) -> str:
    return (await client.get(f"/workspaces/{workspace_id}")).json()["status"]


async def test_secret_routes_merge_and_values_for_the_agent_only(make_stack, tmp_path, database_url):
    stack = await make_stack(TEMPLATES_DIR=sleeping_templates(tmp_path / "templates"))
    async with stack.client() as client:
        assert (await client.put("/settings/secrets", json={"key": "SHARED", "value": "g"})).json() == {
            "status": "saved",
            "key": "SHARED",
            "scope": "global",
        }
        assert (
            await client.post("/settings/secrets", json={"key": "ONLY_GLOBAL", "value": "g2"})
        ).status_code == 200
        assert (await client.put("/settings/secrets/VIA_PATH", json={"value": "p"})).status_code == 200
        listed = (await client.get("/settings/secrets")).json()
        assert [s["key"] for s in listed] == ["ONLY_GLOBAL", "SHARED", "VIA_PATH"]
        assert all(s["has_value"] and s["scope"] == "global" and "value" not in s for s in listed)
        assert [s["key"] for s in (await client.get("/admin/secrets")).json()] == [s["key"] for s in listed]

        created = await create(client, env={"FROM_CREATE": CREATE_VALUE})
        wid, token = created["workspace"]["id"], created["auth_token"]
        other = await create(client, name="other")
        reply = await client.post(f"/workspaces/{wid}/secrets", json={"key": "SHARED", "value": "w"})
        assert reply.json() == {"status": "saved", "key": "SHARED", "scope": "workspace"}
        names = [(s["key"], s["scope"]) for s in (await client.get(f"/workspaces/{wid}/secrets")).json()]
        assert names == [
            ("FROM_CREATE", "workspace"),
            ("SHARED", "workspace"),
            ("ONLY_GLOBAL", "global"),
            ("VIA_PATH", "global"),
        ]

        values = await client.get(f"/workspaces/{wid}/secrets/values", headers=bearer(token))
        assert values.status_code == 200, values.text
        assert values.json() == {
            "FROM_CREATE": CREATE_VALUE,
            "SHARED": "w",
            "ONLY_GLOBAL": "g2",
            "VIA_PATH": "p",
        }
        # Another workspace's token, the operator, and a token asking about an unknown id: 403.
        forbidden = [
            await client.get(f"/workspaces/{wid}/secrets/values", headers=bearer(other["auth_token"])),
            await client.get(f"/workspaces/{wid}/secrets/values"),
            await client.get(f"/workspaces/{uuid.uuid4()}/secrets/values", headers=bearer(token)),
        ]
        assert [r.status_code for r in forbidden] == [403, 403, 403], [r.text for r in forbidden]

        bad = [
            await client.put("/settings/secrets", json={"key": "lower_case", "value": "x"}),
            await client.put("/settings/secrets", json={"key": "1ABC", "value": "x"}),
            await client.post(f"/workspaces/{wid}/secrets", json={"key": "A-B", "value": "x"}),
            await client.post(f"/workspaces/{wid}/secrets", json={"key": "BIG", "value": "x" * 65537}),
            await client.post(f"/workspaces/{wid}/secrets", json={"key": "NUL", "value": "a\u0000b"}),
            await client.post(f"/workspaces/{wid}/secrets", json={"key": "NOVALUE"}),
            await client.post("/workspaces", json={"name": "x", "env": {"lower": "x"}}),
        ]
        assert [r.status_code for r in bad] == [422] * len(bad), [r.text for r in bad]
        assert "environment variable name" in bad[0].json()["error"]
        assert "65536" in bad[3].json()["error"]

        assert (await client.delete(f"/workspaces/{wid}/secrets/SHARED")).json()["status"] == "deleted"
        assert (await client.delete(f"/workspaces/{wid}/secrets/SHARED")).status_code == 404
        assert (await client.delete("/settings/secrets/VIA_PATH")).json() == {
            "status": "deleted",
            "key": "VIA_PATH",
            "scope": "global",
        }
        assert (await client.delete("/admin/secrets/VIA_PATH")).status_code == 404
        values = (await client.get(f"/workspaces/{wid}/secrets/values", headers=bearer(token))).json()
        assert values == {"FROM_CREATE": CREATE_VALUE, "SHARED": "g", "ONLY_GLOBAL": "g2"}
        for key in ("SHARED", "ONLY_GLOBAL"):
            await client.delete(f"/settings/secrets/{key}")

        # A deleted workspace's secrets go with its teardown, and its token reads none of them.
        other_id = other["workspace"]["id"]
        await client.post(f"/workspaces/{other_id}/secrets", json={"key": "GOES", "value": "away"})
        removed = await client.delete(f"/workspaces/{other_id}", params={"wait": 60})
        assert removed.json()["teardown"] == "complete", removed.text
        conn = await asyncpg.connect(database_url)
        try:
            left = await conn.fetchval(
                "SELECT count(*) FROM workspace_secrets WHERE workspace_id = $1", other_id
            )
        finally:
            await conn.close()
        assert left == 0
        gone = await client.get(f"/workspaces/{other_id}/secrets/values", headers=bearer(other["auth_token"]))
        assert gone.status_code == 410, gone.text

        # Without a token: 401, and the operator routes stay the operator's.
        async with stack.client() as anonymous:
            anonymous.headers.pop("Authorization")
            assert (await anonymous.get("/settings/secrets")).status_code == 401
            assert (await anonymous.get(f"/workspaces/{wid}/secrets")).status_code == 401
            assert (
                await anonymous.put(f"/workspaces/{wid}/secrets", json={"key": "K", "value": "v"})
            ).status_code == 401
        agent_writes = await client.put(
            "/settings/secrets", json={"key": "K", "value": "v"}, headers=bearer(token)
        )
        assert agent_writes.status_code == 401


async def test_secrets_reach_the_instance_env_in_merge_order_and_restart_applies_a_change(
    make_stack, tmp_path
):
    stack = await make_stack(TEMPLATES_DIR=sleeping_templates(tmp_path / "templates"))
    async with stack.client() as client:
        for key, value in {
            "LAYERED": "global",
            "GLOBAL_ONLY": GLOBAL_VALUE,
            "WORKSPACE_ID": "spoofed",
        }.items():
            assert (
                await client.put("/settings/secrets", json={"key": key, "value": value})
            ).status_code == 200
        try:
            created = await create(client, env={"LAYERED": "workspace", "PLATFORM_URL": "http://evil"})
            wid = created["workspace"]["id"]
            env = await instance_env(stack, wid)
            assert env["LAYERED"] == "workspace"  # the workspace's value over the global one
            assert env["GLOBAL_ONLY"] == GLOBAL_VALUE
            assert env["WORKSPACE_ID"] == wid, "a secret never overrides the platform's variables"
            assert env["PLATFORM_URL"] == stack.api_url
            first_pid = parse_instance_id(
                (await ProcessProvisioner(stack.data_dir, stack.platform_id).list_managed(wid))[0].instance_id
            )[0]

            # A change applies at the next start; ?restart=true makes that now.
            reply = await client.put(
                f"/workspaces/{wid}/secrets?restart=true", json={"key": "LAYERED", "value": WORKSPACE_VALUE}
            )
            assert reply.status_code == 200, reply.text
            assert reply.json()["restarted"] == [wid]

            async def restarted() -> bool:
                found = await ProcessProvisioner(stack.data_dir, stack.platform_id).list_managed(wid)
                return bool(found) and parse_instance_id(found[0].instance_id)[0] != first_pid

            await until(restarted, "the restarted instance")
            assert (await instance_env(stack, wid))["LAYERED"] == WORKSPACE_VALUE
        finally:
            for key in ("LAYERED", "GLOBAL_ONLY", "WORKSPACE_ID"):
                await client.delete(f"/settings/secrets/{key}")


async def test_secrets_reach_a_docker_instance(make_stack, docker_client, agent_image, tmp_path):
    stack = await make_stack(
        TEMPLATES_DIR=sleeping_templates(tmp_path / "templates", agent_image), DOCKER_NETWORK="host"
    )
    async with stack.client() as client:
        await client.put("/settings/secrets", json={"key": "GLOBAL_ONLY", "value": GLOBAL_VALUE})
        try:
            created = await create(client, runtime="hermes", env={"FROM_CREATE": CREATE_VALUE})
            wid = created["workspace"]["id"]

            async def running() -> bool:
                try:
                    docker_client.containers.get(container_name(wid))
                except Exception:
                    return False
                return True

            await until(running, "the container")
            container = docker_client.containers.get(container_name(wid))
            env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
            assert env["FROM_CREATE"] == CREATE_VALUE
            assert env["GLOBAL_ONLY"] == GLOBAL_VALUE
            assert env["WORKSPACE_ID"] == wid
        finally:
            await client.delete("/settings/secrets/GLOBAL_ONLY")


async def test_an_undecryptable_secret_fails_the_start_with_fixed_words(make_stack, tmp_path, database_url):
    stack = await make_stack(TEMPLATES_DIR=sleeping_templates(tmp_path / "templates"))
    keyring = load_keyring(None, stack.data_dir)
    pool = await create_pool(database_url)
    try:
        async with stack.client() as client:
            # A global value sealed under a key version this platform does not have.
            stranger = Keyring({7: bytes(32)}).seal(
                "x", associated_data(Scope.GLOBAL, None, "ALIEN_KEY_NAME")
            )
            await pool.execute(
                "INSERT INTO global_secrets (key, encrypted_value, encryption_version) VALUES ($1, $2, $3)",
                "ALIEN_KEY_NAME",
                stranger.blob,
                stranger.version,
            )
            try:
                wid = (await create(client))["workspace"]["id"]
                await until(lambda: _is(client, wid, "failed"), "the failed start")
            finally:
                await pool.execute("DELETE FROM global_secrets WHERE key = 'ALIEN_KEY_NAME'")
            row = (await client.get(f"/workspaces/{wid}")).json()
            assert row["last_sample_error"] == "failed to decrypt global secret"
            events = await stored_events(database_url, wid)
            assert "failed to decrypt global secret" in events
            for leak in ("ALIEN_KEY_NAME", "version", "InvalidTag"):
                assert leak not in events and leak not in row["last_sample_error"]

            # A workspace value copied from another workspace's row does not open under this one's id.
            donor = (await create(client, env={"MOVED": WORKSPACE_VALUE}))["workspace"]["id"]
            target = (await create(client, name="target"))["workspace"]["id"]
            await until(lambda: _is(client, target, "provisioning"), "the target provisioning")
            await pool.execute(
                """INSERT INTO workspace_secrets (workspace_id, key, encrypted_value, encryption_version)
                   SELECT $2, key, encrypted_value, encryption_version FROM workspace_secrets
                   WHERE workspace_id = $1""",
                uuid.UUID(donor),
                uuid.UUID(target),
            )
            with pytest.raises(secret_store.SecretsUndecryptable):
                await secret_store.values_for(pool, keyring, target)
            assert (await client.post(f"/workspaces/{target}/restart")).status_code == 202
            await until(
                lambda: _last_error(client, target, "failed to decrypt workspace secret"), "the failure"
            )
            reply = await client.get(
                f"/workspaces/{target}/secrets/values",
                headers=bearer((await client.post(f"/workspaces/{target}/tokens")).json()["auth_token"]),
            )
            assert reply.status_code == 503 and reply.json()["code"] == "secret_undecryptable"
            assert reply.json()["error"] == "failed to decrypt workspace secret"
    finally:
        await pool.close()


async def _is(client, workspace_id: str, status: str) -> bool:
    return await status_of(client, workspace_id) == status


async def _last_error(client, workspace_id: str, error: str) -> bool:
    row = (await client.get(f"/workspaces/{workspace_id}")).json()
    return row["status"] == "failed" and row["last_sample_error"] == error


async def test_rotation_and_the_move_of_plain_env_rows(database_url, tmp_path):
    pool = await create_pool(database_url)
    v1 = Keyring({1: b"\x01" * 32})
    both = Keyring({1: b"\x01" * 32, 2: b"\x02" * 32})
    wid = str(uuid.uuid4())
    try:
        async with pool.acquire() as conn:
            new = NewWorkspace(wid, "rotation", "claude-code", "external", WorkspaceStatus.AWAITING_AGENT)
            await insert_workspace(conn, new)
        await secret_store.put_workspace_secrets(pool, v1, wid, {"A": "a", "B": "b"})
        # The plain-text table of earlier versions, as an upgrade finds it (still there when no worker
        # has started on this database yet).
        await pool.execute(
            """CREATE TABLE IF NOT EXISTS workspace_env (
                   workspace_id uuid NOT NULL, name text NOT NULL, value text NOT NULL,
                   PRIMARY KEY (workspace_id, name))"""
        )
        await pool.executemany(
            "INSERT INTO workspace_env (workspace_id, name, value) VALUES ($1, $2, $3)",
            [(uuid.UUID(wid), "PLAIN", LEGACY_VALUE), (uuid.UUID(wid), "A", "stale plain copy")],
        )
        assert await secret_store.move_plain_env(pool, v1) == 2
        assert await pool.fetchval("SELECT to_regclass('workspace_env')") is None
        assert await secret_store.move_plain_env(pool, v1) == 0
        assert await secret_store.values_for(pool, v1, wid) == {"A": "a", "B": "b", "PLAIN": LEGACY_VALUE}

        # Other tests' rows in this database are sealed under their stacks' own keys: unreadable here,
        # so left as they are.
        rotated, _ = await secret_store.rotate(pool, both)
        assert rotated == 3
        versions = await pool.fetch(
            "SELECT encryption_version FROM workspace_secrets WHERE workspace_id = $1", wid
        )
        assert {r["encryption_version"] for r in versions} == {2}
        assert await secret_store.values_for(pool, both, wid) == {"A": "a", "B": "b", "PLAIN": LEGACY_VALUE}
        assert (await secret_store.rotate(pool, both))[0] == 0
        with pytest.raises(secret_store.SecretsUndecryptable):  # a process that lost version 2
            await secret_store.values_for(pool, v1, wid)
    finally:
        await pool.execute("DELETE FROM workspaces WHERE id = $1", uuid.UUID(wid))
        await pool.close()


async def test_no_planted_secret_anywhere_it_must_not_be(make_stack, tmp_path, database_url):
    stack = await make_stack(TEMPLATES_DIR=sleeping_templates(tmp_path / "templates"))
    planted = [GLOBAL_VALUE, WORKSPACE_VALUE, CREATE_VALUE]
    async with stack.client() as client:
        await client.put("/settings/secrets", json={"key": "PLANTED_GLOBAL", "value": GLOBAL_VALUE})
        try:
            visible = f"plain-name-{uuid.uuid4().hex}"  # the control: plain text the scan must find
            created = await create(client, name=visible, env={"PLANTED_CREATE": CREATE_VALUE})
            wid = created["workspace"]["id"]
            await client.post(
                f"/workspaces/{wid}/secrets", json={"key": "PLANTED_WS", "value": WORKSPACE_VALUE}
            )
            env = await instance_env(stack, wid)
            assert {env["PLANTED_GLOBAL"], env["PLANTED_CREATE"]} == {GLOBAL_VALUE, CREATE_VALUE}
            # The boot watcher's verdict with the values in its tail, and the bundle it leaves.
            tail = f"boot: {GLOBAL_VALUE} {WORKSPACE_VALUE} {CREATE_VALUE}\n"
            failed = await client.post(f"/admin/workspaces/{wid}/bootstrap-failed", json={"log_tail": tail})
            assert failed.status_code == 202, failed.text
            await until(lambda: _is(client, wid, "failed"), "the failed boot")
            bundle: dict[str, object] = {}

            async def captured() -> bool:
                reply = await client.get(f"/workspaces/{wid}/rescue")
                bundle.update(reply.json() if reply.status_code == 200 else {})
                return reply.status_code == 200

            await until(captured, "the rescue bundle")
            replies = [
                (await client.get(f"/workspaces/{wid}")).text,
                (await client.get(f"/workspaces/{wid}/secrets")).text,
                (await client.get("/settings/secrets")).text,
                (await client.get("/workspaces")).text,
            ]
        finally:
            await client.delete("/settings/secrets/PLANTED_GLOBAL")
    assert "PLANTED_CREATE" in json.dumps(bundle), "the bundle names the env it masked"
    assert_no_secret("the rescue bundle", json.dumps(bundle), planted)
    assert_no_secret("the API replies", "\n".join(replies), planted)
    assert_no_secret("the events table", await stored_events(database_url, wid), planted)
    assert_no_secret("the workflow history", await history_bytes(stack.temporal_address, wid), planted)
    logs = b"".join(p.read_bytes() for p in stack.data_dir.glob("*.log"))
    assert_no_secret("the worker and API logs", logs, planted)
    files = await database_files(database_url)
    assert visible.encode() in files, "the scan reads the tables' data"
    assert_no_secret("the database files", files, planted)


async def database_files(database_url: str) -> bytes:
    """Every file of the PostgreSQL cluster (tables, indexes, WAL), after a checkpoint."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CHECKPOINT")
        directory = Path(await conn.fetchval("SHOW data_directory"))
    finally:
        await conn.close()
    return b"".join(
        p.read_bytes() for p in directory.rglob("*") if p.is_file() and p.stat().st_size < 64 << 20
    )
