"""The Provisioner contract, run against every backend on real components: process groups, a real
Docker engine, and EC2 through boto3 against moto's server."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import docker
import pytest

from backends.base import (
    BackendConfigError,
    BackendError,
    BackendNotConfigured,
    ForeignResourceError,
    InstanceSpec,
    Provisioner,
)
from backends.docker import DockerOptions, DockerProvisioner
from backends.ec2 import Ec2Options, Ec2Provisioner
from backends.process import ProcessProvisioner
from backends.registry import Backends
from config.settings import Settings
from domain.templates import Template

AMI = "ami-12c6146b"  # one of moto's built-in images


async def start(backend: Provisioner, spec: InstanceSpec) -> str:
    instance_id = await backend.start(spec)
    assert instance_id, "every instance-backed provisioner returns an id"
    return instance_id


@dataclass
class Harness:
    """A backend under test, a second platform's instance of it, and how to build specs for it."""

    backend: Provisioner
    other_platform: Provisioner
    template: Template
    unconfigured_template: Template  # a template this backend cannot start
    missing_template_error: str
    # The backend built without what it needs (daemon, region), and the error that names it.
    unconfigured: Callable[[], Provisioner] | None = None
    unconfigured_error: str = ""
    workspaces: set[str] = field(default_factory=set)  # every workspace a test used, for clean-up

    def spec(self, workspace_id: str | None = None, generation: int = 1, template: Template | None = None):
        workspace_id = workspace_id or str(uuid.uuid4())
        self.workspaces.add(workspace_id)
        return InstanceSpec(
            workspace_id=workspace_id,
            runtime="claude-code",
            generation=generation,
            template=template or self.template,
            env={"SECRET_NAME": "value-1"},
            token="tok",
            platform_url="http://127.0.0.1:1",  # nothing listens: the agent keeps retrying register
        )


def _process(tmp_path: Path) -> Harness:
    agent = Template(name="t", runtime="claude-code", command=["{python}", "-m", "agent"])
    return Harness(
        backend=ProcessProvisioner(tmp_path / "a", uuid.uuid4().hex[:12]),
        other_platform=ProcessProvisioner(tmp_path / "b", uuid.uuid4().hex[:12]),
        template=agent,
        unconfigured_template=Template(name="t", runtime="claude-code"),  # no command
        missing_template_error="has no template with a `command`",
    )


def _docker(request: pytest.FixtureRequest) -> Harness:
    image = request.getfixturevalue("agent_image")

    def options(factory=None) -> DockerOptions:
        return DockerOptions(platform_url="http://127.0.0.1:1", client_factory=factory)

    def unreachable() -> docker.DockerClient:
        return docker.DockerClient(base_url="unix:///nonexistent/docker.sock")

    return Harness(
        backend=DockerProvisioner(uuid.uuid4().hex[:12], options()),
        other_platform=DockerProvisioner(uuid.uuid4().hex[:12], options()),
        template=Template(name="t", runtime="claude-code", image=image),
        unconfigured_template=Template(name="t", runtime="claude-code"),  # no image
        missing_template_error="has no template with an `image`",
        unconfigured=lambda: DockerProvisioner("x", options(unreachable)),
        unconfigured_error="docker daemon not reachable",
    )


def _ec2(endpoint: str) -> Harness:
    def options(region: str | None = "us-east-1") -> Ec2Options:
        return Ec2Options(region=region, platform_url="http://127.0.0.1:1", endpoint_url=endpoint)

    return Harness(
        backend=Ec2Provisioner(uuid.uuid4().hex[:12], options()),
        other_platform=Ec2Provisioner(uuid.uuid4().hex[:12], options()),
        template=Template(name="t", runtime="claude-code", ami=AMI, instance_type="t3.micro"),
        unconfigured_template=Template(name="t", runtime="claude-code"),  # no AMI here nor in EC2_AMI_ID
        missing_template_error="has no AMI",
        unconfigured=lambda: Ec2Provisioner("x", options(region=None)),
        unconfigured_error="set EC2_REGION",
    )


@pytest.fixture(params=["process", "docker", "ec2"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    build = {
        "process": lambda: _process(tmp_path),
        "docker": lambda: _docker(request),
        "ec2": lambda: _ec2(request.getfixturevalue("moto_endpoint")),
    }
    h = build[request.param]()
    yield h
    for backend in (h.backend, h.other_platform):
        for leftover in await backend.list_managed():
            await backend.stop(leftover.instance_id)
        for workspace_id in h.workspaces:
            with contextlib.suppress(ForeignResourceError):  # the other platform's: refused, as it should be
                await backend.remove_volumes(workspace_id)


async def test_start_run_stop_and_stop_again(harness: Harness) -> None:
    spec = harness.spec()
    instance_id = await start(harness.backend, spec)
    assert instance_id
    assert await harness.backend.is_running(instance_id)
    await harness.backend.stop(instance_id)
    assert not await harness.backend.is_running(instance_id)
    await harness.backend.stop(instance_id)  # already gone is success
    assert not await harness.backend.is_running(instance_id)
    await harness.backend.remove_volumes(spec.workspace_id)
    await harness.backend.remove_volumes(spec.workspace_id)  # nothing left is success too


async def test_a_repeated_start_replaces_the_instance(harness: Harness) -> None:
    spec = harness.spec()
    first = await start(harness.backend, spec)
    # An activity retry after a worker died mid-start: same generation, and a freshly minted token
    # that revoked the first one's, so the first instance is useless and must not be kept.
    second = await start(harness.backend, dataclasses.replace(spec, token="tok-retry"))
    mine = [m for m in await harness.backend.list_managed() if m.workspace_id == spec.workspace_id]
    assert [m.instance_id for m in mine] == [second]
    assert second != first
    assert await harness.backend.is_running(second)
    assert not await harness.backend.is_running(first)


async def test_a_new_generation_replaces_the_old_instance(harness: Harness) -> None:
    workspace_id = str(uuid.uuid4())
    old = await start(harness.backend, harness.spec(workspace_id, generation=1))
    new = await start(harness.backend, harness.spec(workspace_id, generation=2))
    assert old != new
    mine = [m.instance_id for m in await harness.backend.list_managed() if m.workspace_id == workspace_id]
    assert mine == [new]
    assert not await harness.backend.is_running(old)


async def test_list_managed_returns_exactly_this_platforms_instances(harness: Harness) -> None:
    ours = {await start(harness.backend, harness.spec()) for _ in range(2)}
    theirs = await start(harness.other_platform, harness.spec())
    managed = await harness.backend.list_managed()
    assert {m.instance_id for m in managed} == ours
    now = datetime.now(UTC)  # launch times let reconcile judge a stray's age
    assert all(
        m.launched_at and timedelta(0) <= now - m.launched_at < timedelta(minutes=5) for m in managed
    ), [m.launched_at for m in managed]
    assert {m.instance_id for m in await harness.other_platform.list_managed()} == {theirs}
    for instance_id in ours:
        await harness.backend.stop(instance_id)
    assert await harness.backend.list_managed() == []
    assert await harness.other_platform.is_running(theirs), "another platform's instance is untouched"


async def test_list_managed_of_one_workspace_is_that_workspaces_with_its_generation(harness: Harness) -> None:
    workspace_id = str(uuid.uuid4())
    mine = await start(harness.backend, harness.spec(workspace_id, generation=3))
    await start(harness.backend, harness.spec())  # another workspace of the same platform
    listed = await harness.backend.list_managed(workspace_id)
    assert [(m.instance_id, m.workspace_id, m.generation) for m in listed] == [(mine, workspace_id, 3)]


async def test_a_start_replaces_a_launch_nobody_recorded(harness: Harness, tmp_path: Path) -> None:
    """A worker killed between "instance created" and "start returned" leaves an instance no
    record knows of: the retried start still finds it by its label and replaces it."""
    spec = harness.spec()
    if isinstance(harness.backend, ProcessProvisioner):
        # The process backend's own record of what it launched lives in its data dir: launch from
        # a copy with another data dir, so the real one has no record of it.
        unrecorded = ProcessProvisioner(tmp_path / "elsewhere", harness.backend.platform_id)
        first = await start(unrecorded, spec)
    else:
        first = await start(harness.backend, spec)  # docker and ec2 find their instances by label only
    second = await start(harness.backend, dataclasses.replace(spec, token="tok-retry"))
    assert [m.instance_id for m in await harness.backend.list_managed(spec.workspace_id)] == [second]
    assert not await harness.backend.is_running(first)


async def test_unconfigured_backend_gives_a_clear_error(harness: Harness) -> None:
    with pytest.raises(BackendConfigError, match=harness.missing_template_error):
        await start(harness.backend, harness.spec(template=harness.unconfigured_template))
    if harness.unconfigured is not None:
        with pytest.raises(BackendError, match=harness.unconfigured_error):
            await start(harness.unconfigured(), harness.spec())


def test_backend_not_enabled_on_this_worker_is_a_clear_error(tmp_path: Path) -> None:
    backends = Backends(
        Settings.model_validate({"molecule_backends": ["process"], "MOLECULE_DATA_DIR": tmp_path})
    )
    with pytest.raises(BackendNotConfigured, match=r"'docker' is not enabled.*MOLECULE_BACKENDS=process"):
        backends.get("docker")


async def test_ec2_retried_launch_carries_the_new_token_under_a_new_idempotency_key(moto_endpoint) -> None:
    harness = _ec2(moto_endpoint)
    spec = harness.spec()
    first = await start(harness.backend, dataclasses.replace(spec, token="tok-attempt-1"))
    second = await start(harness.backend, dataclasses.replace(spec, token="tok-attempt-2"))
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_endpoint)
    try:
        described = {
            i["InstanceId"]: i
            for r in ec2.describe_instances(InstanceIds=[first, second])["Reservations"]
            for i in r["Instances"]
        }
        assert described[first]["State"]["Name"] in ("shutting-down", "terminated")
        user_data = base64.b64decode(
            ec2.describe_instance_attribute(InstanceId=second, Attribute="userData")["UserData"]["Value"]
        ).decode()
        assert "tok-attempt-2" in user_data and "tok-attempt-1" not in user_data
        keys = [described[i].get("ClientToken") for i in (first, second)]
        assert keys[0] != keys[1] and all(k and "tok-attempt" not in k for k in keys)
    finally:
        await harness.backend.stop(second)
