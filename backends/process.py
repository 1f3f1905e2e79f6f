"""Workspaces as local process groups (the embedded default, no Docker needed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

import psutil

from backends.base import (
    BackendConfigError,
    BackendError,
    InstanceSpec,
    ManagedInstance,
    RescueMaterial,
    agent_environment,
    parse_generation,
    refuse_if_newer,
)

_PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
_STOP_GRACE_SECONDS = 5.0
_CREATE_TIME_TOLERANCE = 0.05


def format_instance_id(pid: int, create_time: float) -> str:
    return f"process:{pid}:{create_time:.6f}"


def parse_instance_id(instance_id: str) -> tuple[int, float]:
    kind, _, rest = instance_id.partition(":")
    pid_text, _, created_text = rest.partition(":")
    try:
        if kind != "process":
            raise ValueError(kind)
        return int(pid_text), float(created_text)
    except ValueError as exc:
        raise BackendConfigError(f"not a process instance id: {instance_id!r}") from exc


class ProcessProvisioner:
    name = "process"

    def __init__(self, data_dir: Path, platform_id: str, nice: int = 0) -> None:
        self.root = data_dir.resolve() / "workspaces"
        self.platform_id = platform_id
        # Agents share the host with the control plane here: a positive nice keeps deadlines and
        # heartbeat handling responsive while a burst of agents boots.
        self.nice = nice

    def workspace_dir(self, workspace_id: str) -> Path:
        return self.root / workspace_id

    def log_path(self, workspace_id: str) -> Path:
        return self.workspace_dir(workspace_id) / "agent.log"

    def _environment(self, spec: InstanceSpec) -> dict[str, str]:
        env = {k: os.environ[k] for k in _PASSTHROUGH_ENV if k in os.environ}
        config_path = str(self.workspace_dir(spec.workspace_id) / "configs")
        env.update(agent_environment(spec, spec.platform_url, config_path))
        env.update(
            {
                "WORKSPACE_TOKEN": spec.token,
                "MOLECULE_MANAGED": "1",
                "MOLECULE_PLATFORM_INSTANCE": self.platform_id,
                "MOLECULE_GENERATION": str(spec.generation),
            }
        )
        return env

    def instance_file(self, workspace_id: str) -> Path:
        return self.workspace_dir(workspace_id) / "instance"

    async def start(self, spec: InstanceSpec) -> str | None:
        if spec.template is None or not spec.template.command:
            raise BackendConfigError(
                f"runtime {spec.runtime!r} has no template with a `command` for the process backend"
            )
        argv = [sys.executable if part == "{python}" else part for part in spec.template.command]
        workdir = self.workspace_dir(spec.workspace_id)
        (workdir / "configs").mkdir(parents=True, exist_ok=True)
        # One instance per workspace: a retried or repeated start replaces every earlier one,
        # including a launch whose start was killed before it could record it.
        found = await self.list_managed(spec.workspace_id)
        refuse_if_newer(found, spec.generation)
        previous = {i.instance_id for i in found}
        recorded = self._recorded_instance(spec.workspace_id)
        for instance_id in sorted(previous | ({recorded} if recorded else set())):
            await self.stop(instance_id)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "backends.detach",
            str(workdir),
            str(self.log_path(spec.workspace_id)),
            str(self.nice),
            "--",
            *argv,
            env=self._environment(spec),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise BackendError(f"could not launch {argv[0]}: {err.decode(errors='replace').strip()}")
        pid_text, created_text = out.decode().split()
        instance_id = format_instance_id(int(pid_text), float(created_text))
        self.instance_file(spec.workspace_id).write_text(instance_id)
        return instance_id

    def _recorded_instance(self, workspace_id: str) -> str | None:
        try:
            return self.instance_file(workspace_id).read_text().strip() or None
        except FileNotFoundError:
            return None

    def _leader(self, instance_id: str) -> psutil.Process | None:
        """The instance's process if it is still that process (a recycled pid is someone else)."""
        pid, created = parse_instance_id(instance_id)
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) > _CREATE_TIME_TOLERANCE:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.NoSuchProcess:
            return None

    async def stop(self, instance_id: str) -> None:
        await asyncio.to_thread(self._stop_sync, instance_id)

    def _stop_sync(self, instance_id: str) -> None:
        leader = self._leader(instance_id)
        if leader is None:
            return
        pgid = leader.pid  # the agent was started with setsid: it leads its own group
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            if self._wait_gone(instance_id, _STOP_GRACE_SECONDS):
                return
        raise BackendError(f"process group {pgid} survived SIGKILL")

    def _wait_gone(self, instance_id: str, timeout: float) -> bool:
        # Not our child (it was reparented), so there is nothing to wait() on: poll, counting a
        # zombie as gone since only its reaper can clear it.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._leader(instance_id) is None:
                return True
            time.sleep(0.02)
        return self._leader(instance_id) is None

    async def is_running(self, instance_id: str) -> bool:
        return self._leader(instance_id) is not None

    async def remove_volumes(self, workspace_id: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.workspace_dir(workspace_id), True)

    async def rescue_material(self, workspace_id: str, instance_id: str | None) -> RescueMaterial:
        sections: dict[str, str] = {}
        try:
            with self.log_path(workspace_id).open(errors="replace") as fh:
                sections["logs"] = "".join(deque(fh, maxlen=200))
        except FileNotFoundError:
            sections["logs"] = ""
        if instance_id:
            leader = self._leader(instance_id)
            sections["state"] = "running" if leader else "exited"
        return RescueMaterial(sections)

    async def list_volume_owners(self) -> list[str]:
        """Workspace ids that still have a data directory here (for reconcile)."""
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    async def list_managed(self, workspace_id: str | None = None) -> list[ManagedInstance]:
        return await asyncio.to_thread(self._list_managed_sync, workspace_id)

    def _list_managed_sync(self, workspace_id: str | None) -> list[ManagedInstance]:
        found = []
        for proc in psutil.process_iter(["pid", "create_time"]):
            try:
                if os.getsid(proc.pid) != proc.pid:
                    continue
                env = proc.environ()
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
            if (
                env.get("MOLECULE_MANAGED") == "1"
                and env.get("MOLECULE_PLATFORM_INSTANCE") == self.platform_id
                and (workspace_id is None or env.get("WORKSPACE_ID") == workspace_id)
            ):
                instance_id = format_instance_id(proc.pid, proc.info["create_time"])
                launched = datetime.fromtimestamp(proc.info["create_time"], UTC)
                found.append(
                    ManagedInstance(
                        instance_id,
                        env.get("WORKSPACE_ID", ""),
                        launched,
                        parse_generation(env.get("MOLECULE_GENERATION")),
                    )
                )
        return found
