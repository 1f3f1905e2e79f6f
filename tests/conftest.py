from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator

import docker
import pytest
from moto.server import ThreadedMotoServer

from molecule.agent_image import ensure_agent_image

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def _own_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Settings() a test builds in process keeps its files (the generated secrets key, the
    platform id) in a temporary directory, never in the checkout's `.molecule`."""
    monkeypatch.setenv("MOLECULE_DATA_DIR", str(tmp_path_factory.mktemp("data")))


def require(component: str, available: bool, why: str = "") -> None:
    """Skip locally when a real component is missing; under CI=true that is a failure, never a skip."""
    if available:
        return
    message = f"{component} is not available{': ' + why if why else ''}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        require("Docker engine", False, f"{type(exc).__name__}: {exc}")
        raise
    yield client
    client.close()


@pytest.fixture(scope="session")
def agent_image(docker_client: docker.DockerClient) -> str:
    """The reference agent's image, built locally (debootstrap + our wheel) once per content hash."""
    return ensure_agent_image(docker_client)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A local EC2 API (moto's server) on loopback."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # The Temporal SDK's Rust bridge can abort the interpreter during finalisation
    # (temporalio/sdk-python#300); once pytest has reported, skip teardown to keep the exit code honest.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
