"""Docker-backed workspaces end to end: API → workflow → real Docker engine → the agent registers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from backends.docker import container_name, volume_names
from domain.failures import START_REFUSED
from tests.integration.api import create
from tests.integration.sse import EventStream

pytestmark = pytest.mark.integration


def docker_templates(root: Path, image: str) -> Path:
    for runtime in ("claude-code", "hermes"):
        (root / runtime).mkdir(parents=True)
        config = {"runtime": runtime, "backend": "docker", "image": image, "env": {"TEMPLATE_DEFAULT": "1"}}
        (root / runtime / "config.yaml").write_text(yaml.safe_dump(config))
    return root


async def test_docker_workspace_has_labels_volumes_limits_and_goes_online(
    make_stack, docker_client, agent_image, tmp_path
):
    templates = docker_templates(tmp_path / "templates", agent_image)
    stack = await make_stack(TEMPLATES_DIR=templates, DOCKER_NETWORK="host", TIER3_MEMORY_MB=1536)
    async with stack.client() as client, EventStream(client) as events:
        created = await create(
            client, runtime="hermes", tier=3, model="anthropic:claude", env={"HEARTBEAT_INTERVAL": "1"}
        )
        workspace = created["workspace"]
        assert workspace["backend"] == "docker"
        await events.wait_type("WORKSPACE_ONLINE", workspace["id"], timeout=60)

    workspace_id = workspace["id"]
    container = docker_client.containers.get(container_name(workspace_id))
    assert container.name == f"ws-{workspace_id[:12]}"
    assert container.labels["molecule.platform.managed"] == "true"
    assert container.labels["molecule.workspace.id"] == workspace_id
    assert container.labels["molecule.platform.instance"] == stack.platform_id
    host = container.attrs["HostConfig"]
    assert host["Memory"] == 1536 * 1024 * 1024  # TIER3_MEMORY_MB overrides the 2 GB default
    assert host["CpuShares"] == 2048
    assert host["Privileged"] is False
    assert not any("docker.sock" in bind for bind in host.get("Binds") or [])
    mounts = {m["Name"]: m["Destination"] for m in container.attrs["Mounts"]}
    configs, data = volume_names(workspace_id)
    assert mounts == {configs: "/configs", data: "/workspace"}
    for name in (configs, data):
        labels = docker_client.volumes.get(name).attrs["Labels"]
        assert labels["molecule.workspace.id"] == workspace_id
        assert labels["molecule.platform.instance"] == stack.platform_id
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert env["WORKSPACE_ID"] == workspace_id
    assert env["WORKSPACE_CONFIG_PATH"] == "/configs"
    assert env["TIER"] == "3"
    assert env["MODEL"] == env["HERMES_DEFAULT_MODEL"] == "anthropic:claude"
    assert env["TEMPLATE_DEFAULT"] == "1"
    assert "WORKSPACE_TOKEN" not in env, "the token travels in /configs/.auth_token, not the env"
    # The agent runs unprivileged, and its token file is readable by it alone.
    agent_status = container.exec_run(["cat", "/proc/1/status"]).output.decode()
    uids = next(line for line in agent_status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert set(uids) == {"10001"}, agent_status
    listing = container.exec_run(["stat", "-c", "%a %u %n", "/configs/.auth_token"]).output.decode()
    assert listing.strip() == "600 10001 /configs/.auth_token"

    async with stack.client() as client:
        row = (await client.get(f"/workspaces/{workspace_id}")).json()
    assert row["status"] == "online"
    assert row["instance_id"] == container.id


async def test_tier1_is_read_only_with_a_tmpfs(make_stack, docker_client, agent_image, tmp_path):
    templates = docker_templates(tmp_path / "templates", agent_image)
    stack = await make_stack(TEMPLATES_DIR=templates)
    async with stack.client() as client, EventStream(client) as events:
        workspace = (await create(client, runtime="claude-code", tier=1))["workspace"]
        await events.wait_type("WORKSPACE_ONLINE", workspace["id"], timeout=60)
    container = docker_client.containers.get(container_name(workspace["id"]))
    host = container.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {"/tmp": "size=64m"}  # noqa: S108
    assert container.exec_run(["touch", "/etc/x"]).exit_code != 0
    assert container.exec_run(["touch", "/tmp/x"]).exit_code == 0  # noqa: S108


async def test_missing_image_fails_the_workspace_with_the_reference_in_its_rescue_bundle(
    make_stack, docker_client, tmp_path
):
    templates = docker_templates(tmp_path / "templates", "localhost:1/molecule/absent:1.0")
    stack = await make_stack(TEMPLATES_DIR=templates)
    async with stack.client() as client, EventStream(client) as events:
        workspace = (await create(client, runtime="claude-code"))["workspace"]
        failed = await events.wait_type("WORKSPACE_PROVISION_FAILED", workspace["id"], timeout=60)
        # Every SSE client sees the failure's class in fixed words, never the daemon's own text...
        assert failed["payload"]["error"] == START_REFUSED
        row = (await client.get(f"/workspaces/{workspace['id']}")).json()
        assert row["last_sample_error"] == START_REFUSED
        # ...which the operator finds, redacted, in the rescue bundle.
        await events.wait_type("WORKSPACE_RESCUE_CAPTURED", workspace["id"], timeout=60)
        bundle = (await client.get(f"/workspaces/{workspace['id']}/rescue")).json()
    assert bundle["reason"] == "start_failed"
    assert "image not found: localhost:1/molecule/absent:1.0" in bundle["sections"]["start_error"]
