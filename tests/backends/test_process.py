"""The process backend with real process groups."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import psutil
import pytest

from backends.base import BackendConfigError, InstanceSpec
from backends.process import ProcessProvisioner, format_instance_id, parse_instance_id
from domain.templates import Template

SLEEPER = ["{python}", "-c", "import os, time; print('env', os.environ['SECRET_NAME']); time.sleep(600)"]
# A leader that also forks a child into its group: stop must take the whole group.
FORKER = [
    "{python}",
    "-c",
    "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
    " print('ready', flush=True); time.sleep(600)",
]


def spec(
    command: list[str], workspace_id: str | None = None, env: dict[str, str] | None = None
) -> InstanceSpec:
    return InstanceSpec(
        workspace_id=workspace_id or str(uuid.uuid4()),
        runtime="claude-code",
        generation=1,
        template=Template(name="t", runtime="claude-code", command=command),
        env=env or {"SECRET_NAME": "value-1"},
        token="tok",
        platform_url="http://127.0.0.1:1",
    )


@pytest.fixture
async def backend(tmp_path):
    provisioner = ProcessProvisioner(tmp_path, uuid.uuid4().hex[:12])
    yield provisioner
    for leftover in await provisioner.list_managed():
        await provisioner.stop(leftover.instance_id)


async def test_start_stop_idempotent_and_env_passed(backend):
    s = spec(SLEEPER)
    instance_id = await backend.start(s)
    assert instance_id is not None
    pid, _ = parse_instance_id(instance_id)
    assert await backend.is_running(instance_id)
    proc = psutil.Process(pid)
    assert os.getsid(pid) == pid, "the agent leads its own session, detached from the worker"
    assert proc.ppid() != os.getpid(), "reparented away from the starter: survives a worker restart"
    assert proc.environ()["WORKSPACE_ID"] == s.workspace_id
    assert proc.environ()["SECRET_NAME"] == "value-1"
    assert proc.environ()["WORKSPACE_TOKEN"] == "tok"
    assert [m.workspace_id for m in await backend.list_managed()] == [s.workspace_id]

    await backend.stop(instance_id)
    assert not await backend.is_running(instance_id)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    await backend.stop(instance_id)  # already gone = success
    assert await backend.list_managed() == []


async def test_stop_kills_the_whole_process_group(backend):
    instance_id = await backend.start(spec(FORKER))
    assert instance_id is not None
    pid, _ = parse_instance_id(instance_id)
    log = backend.log_path((await backend.list_managed())[0].workspace_id)
    for _ in range(200):
        if "ready" in log.read_text(errors="replace"):
            break
        await asyncio.sleep(0.02)
    members = [p for p in psutil.process_iter() if _pgid(p.pid) == pid]
    assert len(members) == 2
    await backend.stop(instance_id)
    alive = [p for p in members if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == []


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


async def test_a_recycled_pid_is_never_killed(backend):
    # Same pid, different start time: somebody else's process now.
    me = psutil.Process(os.getpid())
    stale = format_instance_id(me.pid, me.create_time() - 1000)
    assert not await backend.is_running(stale)
    await backend.stop(stale)
    assert me.is_running()


async def test_list_managed_ignores_other_platforms(backend, tmp_path):
    other = ProcessProvisioner(tmp_path / "other", uuid.uuid4().hex[:12])
    mine = await backend.start(spec(SLEEPER))
    theirs = await other.start(spec(SLEEPER))
    assert mine is not None and theirs is not None
    try:
        assert [m.instance_id for m in await backend.list_managed()] == [mine]
        assert [m.instance_id for m in await other.list_managed()] == [theirs]
    finally:
        await backend.stop(mine)
        await other.stop(theirs)


async def test_rescue_material_has_the_log_tail(backend):
    s = spec([sys.executable, "-c", "print('\\n'.join(f'line {i}' for i in range(500)))"])
    instance_id = await backend.start(s)
    for _ in range(200):
        if not await backend.is_running(instance_id):
            break
        await asyncio.sleep(0.02)
    material = await backend.rescue_material(s.workspace_id, instance_id)
    lines = material.sections["logs"].splitlines()
    assert len(lines) == 200 and lines[-1] == "line 499"
    assert material.sections["state"] == "exited"
    await backend.remove_volumes(s.workspace_id)
    assert not backend.workspace_dir(s.workspace_id).exists()


async def test_missing_command_is_a_config_error(backend):
    with pytest.raises(BackendConfigError, match="no template with a `command`"):
        await backend.start(spec([]))
    with pytest.raises(BackendConfigError):
        parse_instance_id("docker:abc")


async def test_a_second_start_replaces_the_first_instance(backend):
    s = spec(SLEEPER)
    first = await backend.start(s)
    second = await backend.start(s)
    assert first != second
    assert not await backend.is_running(first)
    assert await backend.is_running(second)
    assert [m.instance_id for m in await backend.list_managed()] == [second]
