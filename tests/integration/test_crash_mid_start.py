"""Issue 10.1: a start held between "instance created" and "activity returns", the worker (or the
Temporal server) killed -9 right there, then the workspace deleted: as soon as teardown completes the
backend holds no instance of that workspace. Reconcile is disabled, so teardown alone must do it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from backends.base import Provisioner
from backends.docker import DockerOptions, DockerProvisioner
from backends.process import ProcessProvisioner
from molecule.temporal_server import TemporalDevServer
from tests.integration.api import create
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


async def until(predicate, what: str, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


def docker_templates(root: Path, image: str) -> Path:
    (root / "claude-code").mkdir(parents=True)
    config = {"runtime": "claude-code", "backend": "docker", "image": image}
    (root / "claude-code" / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def backend_of(kind: str, stack: Stack) -> Provisioner:
    if kind == "process":
        return ProcessProvisioner(stack.data_dir, stack.platform_id)
    return DockerProvisioner(stack.platform_id, DockerOptions(platform_url=stack.api_url))


@pytest.mark.parametrize("backend", ["process", "docker"])
@pytest.mark.parametrize("kill", ["worker", "temporal"])
async def test_a_launch_cut_short_by_a_kill_never_outlives_its_workspace(
    make_stack, own_temporal: TemporalDevServer, request, tmp_path, backend: str, kill: str
):
    env: dict[str, object] = {"RECONCILE_ENABLED": "false", "MOLECULE_FAULT_HOLD_START": tmp_path / "held"}
    if backend == "docker":
        image = request.getfixturevalue("agent_image")
        env |= {"TEMPLATES_DIR": docker_templates(tmp_path / "templates", image), "DOCKER_NETWORK": "host"}
    stack = await make_stack(temporal=own_temporal.address, **env)
    provisioner = backend_of(backend, stack)
    held = tmp_path / "held"
    async with stack.client() as client:
        wid = (await create(client, runtime="claude-code", env={"HEARTBEAT_INTERVAL": "1"}))["workspace"][
            "id"
        ]
        await until(held.exists, "the start to hold after creating its instance")
        assert [i.workspace_id for i in await provisioner.list_managed(wid)] == [wid]

        del stack.env_overrides["MOLECULE_FAULT_HOLD_START"]
        if kill == "worker":
            stack.kill_worker(stack.workers[-1])
            stack.start_worker()
        else:
            own_temporal.kill()
            own_temporal.start()
            await own_temporal.wait_ready(60)

        reply = await client.delete(f"/workspaces/{wid}", params={"wait": 120})
        assert reply.status_code == 200, reply.text
        assert reply.json()["teardown"] == "complete"
        assert await provisioner.list_managed(wid) == [], "an instance outlived its deleted workspace"
        removed = (await client.get(f"/workspaces/{wid}", params={"include_removed": "true"})).json()
        assert removed["teardown"]["instance_stopped"] is True
