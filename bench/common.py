"""The real stack for benchmarks: Postgres, the Temporal dev server, worker and API as processes."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backends.process import ProcessProvisioner  # noqa: E402
from molecule.postgres import EmbeddedPostgres, ensure_database  # noqa: E402
from molecule.processes import free_port  # noqa: E402
from molecule.temporal_server import TemporalDevServer  # noqa: E402
from store.migrate import apply_migrations  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def describe_ms(name: str, seconds: list[float], width: int = 34) -> str:
    """One line of latency figures for durations given in seconds."""
    ms = [v * 1000 for v in seconds]
    return (
        f"{name:<{width}} n={len(ms):<4} p50={statistics.median(ms):7.1f} ms  "
        f"p99={percentile(ms, 99):7.1f} ms  max={max(ms):7.1f} ms"
    )


def launch(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=env, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)


@dataclass
class BenchStack:
    work: Path
    dsn: str
    temporal: TemporalDevServer
    env: dict[str, str]
    api_port: int
    platform_id: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        proc = launch([sys.executable, *args], self.env, self.work / f"{role}.log")
        self.procs[role] = proc
        return proc


async def wait_healthy(url: str, attempts: int = 600) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(attempts):
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never became healthy")


@asynccontextmanager
async def bench_stack(extra_env: dict[str, str] | None = None) -> AsyncIterator[BenchStack]:
    work = Path(tempfile.mkdtemp(prefix="molecule-bench-"))
    pg = None
    if os.environ.get("DATABASE_URL"):
        base = os.environ["DATABASE_URL"]
    else:
        pg = EmbeddedPostgres(work / "pg")
        base = pg.start()
    dsn = await ensure_database(base, f"bench_{uuid.uuid4().hex[:8]}")
    await apply_migrations(dsn)
    temporal = TemporalDevServer(log_path=work / "temporal.log").start()
    await temporal.wait_ready(60)
    api_port = free_port()
    platform_id = uuid.uuid4().hex[:12]
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "TEMPORAL_ADDRESS": temporal.address,
        "MOLECULE_DATA_DIR": str(work / "data"),
        "MOLECULE_PLATFORM_INSTANCE": platform_id,
        "PLATFORM_URL": f"http://127.0.0.1:{api_port}",
        "MOLECULE_ENV": "development",
        **(extra_env or {}),
    }
    env.pop("ADMIN_TOKEN", None)
    stack = BenchStack(work, dsn, temporal, env, api_port, platform_id)
    try:
        stack.start("worker", "-m", "molecule", "worker")
        stack.start("api", "-m", "molecule", "api", "--port", str(api_port))
        await wait_healthy(f"{stack.api_url}/health")
        yield stack
    finally:
        for proc in stack.procs.values():
            proc.terminate()
        for proc in stack.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        backend = ProcessProvisioner(work / "data", platform_id)
        for instance in await backend.list_managed():
            await backend.stop(instance.instance_id)
        temporal.stop()
        if pg is not None:
            pg.stop()
