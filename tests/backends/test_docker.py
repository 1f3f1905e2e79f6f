"""Docker backend behaviour beyond the shared contract: daemon errors and the image pull policy."""

from __future__ import annotations

import contextlib
import uuid

import docker
import pytest
from docker.models.images import ImageCollection

from backends.base import BackendConfigError, BackendError
from backends.docker import DockerOptions, DockerProvisioner, numeric_owner
from molecule.agent_image import REPOSITORY, _prune_superseded


def unreachable_daemon() -> DockerProvisioner:
    def factory() -> docker.DockerClient:
        return docker.DockerClient(base_url="tcp://127.0.0.1:1", timeout=2)

    return DockerProvisioner("x", DockerOptions(platform_url="http://127.0.0.1:1", client_factory=factory))


async def test_a_daemon_error_is_raised_never_read_as_not_running() -> None:
    backend = unreachable_daemon()
    with pytest.raises(BackendError, match="docker"):
        await backend.is_running("0123456789ab")
    with pytest.raises(BackendError, match="docker"):
        await backend.stop("0123456789ab")  # so nobody goes on to remove the volumes
    with pytest.raises(BackendError, match="docker"):
        await backend.list_managed()


@pytest.fixture
def backend(docker_client: docker.DockerClient) -> DockerProvisioner:
    return DockerProvisioner(uuid.uuid4().hex[:12], DockerOptions(platform_url="http://127.0.0.1:1"))


def test_moving_tag_whose_pull_fails_falls_back_to_the_cached_image(
    backend: DockerProvisioner, docker_client: docker.DockerClient, agent_image: str
) -> None:
    # A registry that refuses connections: every pull fails.
    moving = f"127.0.0.1:1/molecule/agent-{uuid.uuid4().hex[:6]}:latest"
    repository, tag = moving.rsplit(":", 1)
    docker_client.images.get(agent_image).tag(repository, tag)
    try:
        backend.ensure_image(moving)  # pull attempted (moving), failed, cached copy used
    finally:
        docker_client.images.remove(moving)


def test_missing_image_whose_pull_fails_is_image_not_found(backend: DockerProvisioner) -> None:
    ref = f"127.0.0.1:1/molecule/absent-{uuid.uuid4().hex[:6]}:1.0"
    with pytest.raises(BackendConfigError, match=f"image not found: {ref}"):
        backend.ensure_image(ref)


def test_pinned_cached_image_is_never_pulled(
    backend: DockerProvisioner, docker_client: docker.DockerClient, agent_image: str, monkeypatch
) -> None:
    pulls: list[str] = []
    monkeypatch.setattr(ImageCollection, "pull", lambda self, ref, *a, **k: pulls.append(ref))
    backend.ensure_image(agent_image)
    assert pulls == []
    moving = f"{agent_image.split(':')[0]}:latest"
    docker_client.images.get(agent_image).tag(moving.split(":")[0], "latest")
    try:
        backend.ensure_image(moving)
        assert pulls == [moving]
    finally:
        docker_client.images.remove(moving)


@pytest.mark.parametrize(
    ("user", "owner"),
    [
        ("10001:10001", (10001, 10001)),
        ("10001", (10001, 10001)),
        ("1000:50", (1000, 50)),
        ("", (0, 0)),
        (None, (0, 0)),
        ("agent", (0, 0)),
        ("0:0", (0, 0)),
    ],
)
def test_the_token_file_belongs_to_the_user_the_image_runs_as(user, owner):
    assert numeric_owner(user) == owner


def test_a_new_agent_image_drops_the_tags_of_superseded_builds(docker_client, agent_image):
    image = docker_client.images.get(agent_image)
    superseded, operator_tag = f"{REPOSITORY}:{'a' * 12}", f"{REPOSITORY}:pinned-by-operator"
    image.tag(REPOSITORY, "a" * 12)
    image.tag(REPOSITORY, "pinned-by-operator")
    try:
        _prune_superseded(docker_client, agent_image)
        tags = docker_client.images.get(agent_image).tags
        assert superseded not in tags
        assert agent_image in tags and operator_tag in tags
    finally:
        for tag in (superseded, operator_tag):
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(tag)
