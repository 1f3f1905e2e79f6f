"""Real components: PostgreSQL (embedded or DATABASE_URL), the Temporal dev server, and the worker and
API as subprocesses, the way `molecule up` runs them."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import pytest_asyncio

from backends.base import Provisioner
from backends.docker import DockerOptions, DockerProvisioner
from backends.process import ProcessProvisioner
from molecule.postgres import EmbeddedPostgres, ensure_database
from molecule.processes import free_port, tail
from molecule.temporal_server import TemporalDevServer
from store.migrate import apply_migrations
from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]


def docker_engine_answers() -> bool:
    try:
        client = docker.from_env()
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except docker.errors.DockerException:
        return False
    finally:
        client.close()


@pytest_asyncio.fixture(scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    external = os.environ.get("DATABASE_URL")
    server: EmbeddedPostgres | None = None
    try:
        if external:
            base = external
        else:
            # Not under pytest's basetemp: each new pytest session resets it to 0700, which locks
            # out the unprivileged user the server runs as when tests run as root.
            server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="molecule-test-pg-")) / "data")
            base = await asyncio.to_thread(server.start)
        dsn = await ensure_database(base, f"molecule_test_{uuid.uuid4().hex[:8]}")
        await apply_migrations(dsn)
    except Exception as exc:  # report why, then fail (CI) or skip (local)
        require("PostgreSQL", False, f"{type(exc).__name__}: {exc}")
        raise
    yield dsn
    if server is not None:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(server.pgdata.parent, ignore_errors=True)


@pytest_asyncio.fixture(scope="session")
async def temporal_address(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    server = TemporalDevServer(log_path=tmp_path_factory.mktemp("temporal") / "temporal.log")
    try:
        server.start()
        await server.wait_ready(60)
    except Exception as exc:
        require("Temporal dev server", False, f"{type(exc).__name__}: {exc}")
        raise
    yield server.address
    await asyncio.to_thread(server.stop)


@dataclass
class Stack:
    """One worker and one API against the session's Postgres and Temporal, with its own data dir."""

    database_url: str
    temporal_address: str
    data_dir: Path
    env_overrides: dict[str, str]
    api_port: int = field(default_factory=free_port)
    platform_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    task_queue: str = field(default_factory=lambda: f"workspaces-{uuid.uuid4().hex[:8]}")
    admin_token: str = field(default_factory=lambda: uuid.uuid4().hex)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    api: subprocess.Popen[bytes] | None = None
    worker_module: str | None = None  # run this module instead of `molecule worker`

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PROVISION_TIMEOUT_SECONDS", "ADMIN_TOKEN")}
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "TEMPORAL_ADDRESS": self.temporal_address,
                "MOLECULE_DATA_DIR": str(self.data_dir),
                "MOLECULE_PLATFORM_INSTANCE": self.platform_id,
                "TASK_QUEUE": self.task_queue,
                "PLATFORM_URL": self.api_url,
                "ADMIN_TOKEN": self.admin_token,
                "MOLECULE_ENV": "test",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.env_overrides)
        return env

    def _spawn(self, role: str, *args: str, module: str = "molecule") -> subprocess.Popen[bytes]:
        log = (self.data_dir / f"{role}-{len(self.workers)}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=self.env(),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_worker(self) -> subprocess.Popen[bytes]:
        if self.worker_module:
            proc = self._spawn("worker", module=self.worker_module)
        else:
            proc = self._spawn("worker", "worker")
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    async def start_api(self) -> None:
        self.api = self._spawn("api", "api", "--port", str(self.api_port))
        async with httpx.AsyncClient(base_url=self.api_url) as client:
            for _ in range(300):
                if self.api.poll() is not None:
                    raise RuntimeError(f"API exited: {self.logs('api')}")
                try:
                    if (await client.get("/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"API not healthy: {self.logs('api')}")

    def logs(self, role: str) -> str:
        return "\n".join(tail(p, 60) for p in sorted(self.data_dir.glob(f"{role}-*.log")))

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api_url, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=60
        )

    async def stop(self) -> None:
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            try:
                await asyncio.to_thread(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()
        # Agents outlive workers by design; each test cleans up the ones its stack started.
        backends: list[Provisioner] = [ProcessProvisioner(self.data_dir, self.platform_id)]
        if docker_engine_answers():
            backends.append(DockerProvisioner(self.platform_id, DockerOptions(platform_url=self.api_url)))
        for backend in backends:
            for instance in await backend.list_managed():
                await backend.stop(instance.instance_id)
            for workspace_id in await backend.list_volume_owners():
                await backend.remove_volumes(workspace_id)


StackFactory = Callable[..., Awaitable[Stack]]


@pytest_asyncio.fixture
async def own_temporal(tmp_path: Path) -> AsyncIterator[TemporalDevServer]:
    """A Temporal dev server of this test's own, persisted to a file so a kill -9 loses nothing,
    restarted on the same port with `restart()`: for tests that kill the server."""
    server = TemporalDevServer(db_filename=tmp_path / "temporal.db", log_path=tmp_path / "temporal.log")
    try:
        server.start()
        await server.wait_ready(60)
    except Exception as exc:
        require("Temporal dev server", False, f"{type(exc).__name__}: {exc}")
        raise
    yield server
    await asyncio.to_thread(server.stop)


@pytest_asyncio.fixture
async def make_stack(database_url: str, temporal_address: str, tmp_path: Path) -> AsyncIterator[StackFactory]:
    stacks: list[Stack] = []

    async def build(worker_module: str | None = None, temporal: str | None = None, **env: Any) -> Stack:
        data_dir = tmp_path / f"stack{len(stacks)}"
        data_dir.mkdir()
        stack = Stack(
            database_url, temporal or temporal_address, data_dir, {k: str(v) for k, v in env.items()}
        )
        stack.worker_module = worker_module
        stacks.append(stack)
        stack.start_worker()
        await stack.start_api()
        return stack

    yield build
    for stack in stacks:
        await stack.stop()
