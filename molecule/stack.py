"""`molecule up`: the whole platform on one machine, supervised.

Starts (or connects to) PostgreSQL and Temporal, applies migrations, runs the worker and the API as
child processes, restarts them when they die, and stops everything in order on Ctrl-C / SIGTERM.
Only our direct children's process groups are ever signalled: workspace agents started by the worker
live in their own sessions and outlive `molecule up` on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from molecule.postgres import EmbeddedPostgres, ensure_database, mask_dsn
from molecule.processes import port_in_use, process_alive, spawn, stop_process_groups, tail
from molecule.temporal_server import TemporalDevServer
from store.migrate import apply_migrations

EMBEDDED_DATABASE = "molecule"
HEALTH_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
BACKOFF_START, BACKOFF_CAP = 1.0, 30.0
STABLE_AFTER = 60.0  # a child that ran this long before dying restarts without accumulated backoff
POLL_INTERVAL = 0.5


@dataclass
class UpOptions:
    data_dir: Path = Path(".molecule")
    api_port: int = 8080
    temporal_port: int = 7233
    ui_port: int = 8233
    temporal_address: str | None = None
    database_url: str | None = None
    host: str = "127.0.0.1"


class UpError(Exception):
    """A startup failure the operator can act on: printed as a message, never as a traceback."""


def run_up(opts: UpOptions) -> int:
    """Run the stack until SIGINT/SIGTERM; returns the process exit code."""
    return asyncio.run(_up(opts, _Output()))


async def _up(opts: UpOptions, out: _Output) -> int:
    stack = _Stack(opts, out)
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Cancelling the main task unwinds whatever step we are in into the `finally` below.
        loop.add_signal_handler(sig, main.cancel)
    code = 0
    try:
        stack.acquire_lock()
        stack.stop_leftovers()
        stack.check_ports()
        await stack.start()
        stack.print_banner()
        await stack.supervise()
    except asyncio.CancelledError:
        out.info("stopping…")
    except UpError as exc:
        out.error(str(exc))
        code = 1
    finally:
        # Synchronous and bounded; a further signal meanwhile only queues a no-op cancel.
        stack.shutdown()
    return code


class _Output:
    """Console output. Plain, unwrapped lines when not on a terminal (logs, tests, CI)."""

    def __init__(self) -> None:
        tty = sys.stdout.isatty()
        self.console = Console(highlight=False, soft_wrap=not tty, width=None if tty else 200)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def info(self, message: str) -> None:
        self.console.print(f"[dim]molecule up:[/] {escape(message)}")

    def warn(self, message: str) -> None:
        self.console.print(f"[bold yellow]molecule up: {escape(message)}[/]")

    def error(self, message: str) -> None:
        self.err.print(f"[bold red]molecule up:[/] {escape(message)}")


@dataclass
class _Child:
    """A supervised child: how to (re)start it and its restart bookkeeping."""

    role: str
    launch: Callable[[], subprocess.Popen[bytes]]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = BACKOFF_START
    restart_at: float = 0.0

    def start(self) -> None:
        self.process = self.launch()
        self.started_at = time.monotonic()


@dataclass
class _Stack:
    opts: UpOptions
    out: _Output
    data_dir: Path = field(init=False)
    children: dict[str, _Child] = field(default_factory=dict)
    postgres: EmbeddedPostgres | None = None
    temporal: TemporalDevServer | None = None
    database_url: str = ""
    temporal_address: str = ""
    _lock_fd: int | None = None

    def __post_init__(self) -> None:
        self.data_dir = self.opts.data_dir.expanduser().resolve()

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def pids_path(self) -> Path:
        return self.data_dir / "pids.json"

    @property
    def embedded_temporal(self) -> bool:
        return not (self.opts.temporal_address or os.environ.get("TEMPORAL_ADDRESS"))

    # -- (1) one `molecule up` per data dir ----------------------------------------------------

    def acquire_lock(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir / "up.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UpError(
                f"another `molecule up` is already running on {self.data_dir} (pid {holder})"
            ) from None
        # flock dies with its holder, so a kill -9 never leaves a stale lock; the pid is for humans.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    # -- (2) leftovers of a run that was killed -------------------------------------------------

    def stop_leftovers(self) -> None:
        """Stop processes a killed previous run left behind, so their ports free up.

        Only a pid whose create_time still matches the record is ours: a recycled pid is left alone.
        """
        try:
            recorded = json.loads(self.pids_path.read_text()).get("children", [])
        except (FileNotFoundError, ValueError):
            return
        leftovers: list[psutil.Process] = []
        for entry in recorded:
            pid, created, role = entry.get("pid"), entry.get("create_time"), entry.get("role", "?")
            if not isinstance(pid, int) or not process_alive(pid, created):
                continue
            self.out.info(f"stopping {role} (pid {pid}) left over from a previous run")
            if role == "postgres":
                # Not our process group: pg_ctl daemonised it. A fast shutdown is the clean way.
                EmbeddedPostgres(self.data_dir / "postgres").stop()
            else:
                with contextlib.suppress(psutil.Error):
                    leftovers.append(psutil.Process(pid))
        stop_process_groups(leftovers, STOP_TIMEOUT)
        self.pids_path.unlink(missing_ok=True)

    # -- (3) ports --------------------------------------------------------------------------------

    def check_ports(self) -> None:
        wanted = [(self.opts.host, self.opts.api_port, "API", "--api-port")]
        if self.embedded_temporal:
            wanted += [
                ("127.0.0.1", self.opts.temporal_port, "Temporal gRPC", "--temporal-port"),
                ("127.0.0.1", self.opts.ui_port, "Temporal UI", "--ui-port"),
            ]
        ports = [port for _, port, _, _ in wanted]
        if len(set(ports)) != len(ports):
            raise UpError(f"the ports must differ: {', '.join(f'{label} {p}' for _, p, label, _ in wanted)}")
        for host, port, label, flag in wanted:
            if port_in_use(host, port):
                raise UpError(
                    f"port {port} ({label}) is already in use on {host}; pass {flag} to choose another"
                )

    # -- (4)-(8) start ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.start_temporal()  # boots while PostgreSQL starts and migrates
        await self.start_postgres()
        await self.migrate()
        if self.temporal is not None:
            try:
                await self.temporal.wait_ready(timeout=60)
            except RuntimeError as exc:
                raise UpError(str(exc)) from None
        env = self.child_env()
        self.add_child("worker", [sys.executable, "-m", "molecule", "worker"], env)
        api_args = ["api", "--host", self.opts.host, "--port", str(self.opts.api_port)]
        self.add_child("api", [sys.executable, "-m", "molecule", *api_args], env)
        await self.wait_healthy()

    def start_temporal(self) -> None:
        if not self.embedded_temporal:
            self.temporal_address = self.opts.temporal_address or os.environ["TEMPORAL_ADDRESS"]
            return
        self.temporal = TemporalDevServer(
            port=self.opts.temporal_port,
            ui_port=self.opts.ui_port,
            db_filename=self.data_dir / "temporal.db",  # workflows survive a restart
            log_path=self.log_dir / "temporal.log",
            die_with_parent=True,
        )
        self.temporal_address = self.temporal.address
        temporal = self.temporal

        def launch() -> subprocess.Popen[bytes]:
            process = temporal.start().process
            assert process is not None
            return process

        self.children["temporal"] = child = _Child("temporal", launch, temporal.log_path)
        try:
            child.start()
        except RuntimeError as exc:  # the `temporal` binary is missing
            del self.children["temporal"]
            raise UpError(str(exc)) from None
        self.write_pids()

    async def start_postgres(self) -> None:
        external = self.opts.database_url or os.environ.get("DATABASE_URL")
        if external:
            self.database_url = external
            return
        self.postgres = EmbeddedPostgres(self.data_dir / "postgres", log_path=self.log_dir / "postgres.log")
        try:
            # Synchronous on purpose (~1 s): a signal then waits for it instead of racing a thread.
            server_dsn = self.postgres.start()
        except RuntimeError as exc:
            raise UpError(str(exc)) from None
        self.write_pids()
        self.database_url = await ensure_database(server_dsn, EMBEDDED_DATABASE)

    async def migrate(self) -> None:
        try:
            await apply_migrations(self.database_url)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Unreachable server, bad credentials, missing database: the operator's to fix.
            raise UpError(f"could not migrate the database at {mask_dsn(self.database_url)}: {exc}") from None

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            TEMPORAL_ADDRESS=self.temporal_address,
            MOLECULE_DATA_DIR=str(self.data_dir),
            PLATFORM_URL=f"http://127.0.0.1:{self.opts.api_port}",
            PYTHONUNBUFFERED="1",  # logs reach the files as they happen
        )
        if "ADMIN_TOKEN" not in os.environ and "MOLECULE_ENV" not in os.environ:
            env["MOLECULE_ENV"] = "development"
            self.out.warn(
                "WARNING: neither ADMIN_TOKEN nor MOLECULE_ENV is set, so MOLECULE_ENV=development: "
                "the operator routes are OPEN to anyone who can reach the API"
            )
        return env

    def add_child(self, role: str, argv: list[str], env: dict[str, str]) -> None:
        log_path = self.log_dir / f"{role}.log"

        def launch() -> subprocess.Popen[bytes]:
            # die_with_parent: if we are killed -9 the children follow instead of lingering.
            return spawn(argv, log_path=log_path, env=env, die_with_parent=True)

        self.children[role] = child = _Child(role, launch, log_path)
        child.start()
        self.write_pids()

    async def wait_healthy(self) -> None:
        url = f"http://{_display_host(self.opts.host)}:{self.opts.api_port}/health"
        deadline = time.monotonic() + HEALTH_TIMEOUT
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not one INFO line per poll
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                self.fail_if_any_child_exited()
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        return
                await asyncio.sleep(0.25)
        api_log = self.children["api"].log_path
        raise UpError(
            f"the API did not answer GET {url} with 200 within {HEALTH_TIMEOUT:.0f}s "
            f"(log: {api_log}):\n{tail(api_log, 30)}"
        )

    def fail_if_any_child_exited(self) -> None:
        # During startup a crash is almost always a configuration problem: report it, don't loop.
        for child in self.children.values():
            code = child.process.poll() if child.process is not None else None
            if code is not None:
                raise UpError(
                    f"the {child.role} exited with code {code} during startup (log: {child.log_path}):\n"
                    f"{tail(child.log_path, 30)}"
                )

    def print_banner(self) -> None:
        host = _display_host(self.opts.host)
        rows = [("API", f"http://{host}:{self.opts.api_port}  (docs at /docs)")]
        if self.temporal is not None and self.temporal.ui_url is not None:
            rows.append(("Temporal UI", self.temporal.ui_url))
        rows += [
            ("Temporal gRPC", self.temporal_address + ("" if self.temporal else "  (external)")),
            ("Postgres", mask_dsn(self.database_url) + ("" if self.postgres else "  (external)")),
            ("Data dir", str(self.data_dir)),
            ("Logs", str(self.log_dir)),
        ]
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column(no_wrap=True)
        for label, value in rows:
            grid.add_row(label, escape(value))
        self.out.console.print(Panel(grid, title="molecule is up", expand=False, border_style="green"))
        self.out.info("press Ctrl-C to stop")

    # -- (9) supervision --------------------------------------------------------------------------

    async def supervise(self) -> None:
        while True:
            for child in self.children.values():
                self.tend(child, time.monotonic())
            await asyncio.sleep(POLL_INTERVAL)

    def tend(self, child: _Child, now: float) -> None:
        """Notice a dead child and schedule its restart; restart it when its backoff is over."""
        if child.process is not None:
            code = child.process.poll()
            if code is None:
                return
            if now - child.started_at >= STABLE_AFTER:
                child.backoff = BACKOFF_START
            delay, child.backoff = child.backoff, min(child.backoff * 2, BACKOFF_CAP)
            child.process, child.restart_at = None, now + delay
            self.out.warn(
                f"{child.role} exited with code {code}; restarting in {delay:.0f}s (log: {child.log_path})"
            )
            self.write_pids()
        elif now >= child.restart_at:
            child.start()
            self.out.info(f"{child.role} restarted")
            self.write_pids()

    def write_pids(self) -> None:
        entries: list[dict[str, Any]] = []
        for child in self.children.values():
            if child.process is not None:
                entries.append(_pid_entry(child.role, child.process.pid))
        if self.postgres is not None and (pid := self.postgres.pid) is not None:
            entries.append(_pid_entry("postgres", pid))
        entries = [e for e in entries if e["create_time"] is not None]
        tmp = self.pids_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"supervisor": os.getpid(), "children": entries}, indent=2))
        tmp.replace(self.pids_path)  # atomic: a reader never sees half a file

    # -- (10) shutdown ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """API and worker first (they use the others), then Temporal, then PostgreSQL."""
        apps = [
            c.process
            for role in ("api", "worker")
            if (c := self.children.get(role)) is not None and c.process is not None
        ]
        stop_process_groups(apps, STOP_TIMEOUT)
        if self.temporal is not None:
            self.temporal.stop(STOP_TIMEOUT)
        if self.postgres is not None:
            self.postgres.stop()
        if self._lock_fd is not None:  # the file belongs to whoever holds the lock
            self.pids_path.unlink(missing_ok=True)
            if self.children or self.postgres is not None:
                self.out.info("stopped")
        self.release_lock()


def _pid_entry(role: str, pid: int) -> dict[str, Any]:
    try:
        created: float | None = psutil.Process(pid).create_time()
    except psutil.Error:
        created = None
    return {"role": role, "pid": pid, "create_time": created}


def _display_host(host: str) -> str:
    """Where a local client reaches a server bound to `host`."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
