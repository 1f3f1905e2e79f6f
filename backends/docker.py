"""Workspaces as Docker containers (docker SDK; every call runs off the event loop)."""

from __future__ import annotations

import asyncio
import io
import logging
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import docker
import requests
import yaml
from docker.errors import DockerException, ImageNotFound, NotFound
from docker.models.containers import Container

from backends.base import (
    BackendConfigError,
    BackendError,
    ForeignResourceError,
    InstanceSpec,
    ManagedInstance,
    RescueMaterial,
    agent_environment,
    parse_generation,
    refuse_if_newer,
)
from domain.images import is_moving
from domain.tiers import TierLimits, tier_limits

log = logging.getLogger("molecule.backends.docker")

T = TypeVar("T")

LABEL_MANAGED = "molecule.platform.managed"
LABEL_WORKSPACE = "molecule.workspace.id"
LABEL_PLATFORM = "molecule.platform.instance"
LABEL_GENERATION = "molecule.workspace.generation"
CONFIG_PATH = "/configs"
WORKSPACE_PATH = "/workspace"
TOKEN_FILE = ".auth_token"  # noqa: S105 - a file name
DOCKER_SOCKET = "/var/run/docker.sock"
_LOG_TAIL = 200


def container_name(workspace_id: str) -> str:
    return f"ws-{workspace_id[:12]}"


def volume_names(workspace_id: str) -> tuple[str, str]:
    """(configs, workspace) volumes: the configs one is short like the container name."""
    return f"ws-{workspace_id[:12]}-configs", f"ws-{workspace_id}-workspace"


@dataclass
class DockerOptions:
    platform_url: str
    network: str = "host"
    allow_privileged: bool = False
    tier_overrides: dict[int, tuple[int | None, int | None]] = field(default_factory=dict)
    client_factory: Callable[[], docker.DockerClient] | None = None


def _tar_of(files: dict[str, tuple[bytes, int]], owner: tuple[int, int] = (0, 0)) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.uid, info.gid = owner
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def numeric_owner(user: str | None) -> tuple[int, int]:
    """Who the container runs as, from an image's or container's `User` ("uid[:gid]"), so the token
    file is readable by the agent alone. A user given by name cannot be resolved from outside the
    image: root then owns the file (the image must run as root to read it)."""
    uid, _, gid = (user or "").partition(":")
    if not uid.isdigit():
        return (0, 0)
    return (int(uid), int(gid) if gid.isdigit() else int(uid))


def _untar_one(chunks: Any) -> str:
    buf = io.BytesIO(b"".join(chunks))
    with tarfile.open(fileobj=buf) as tar:
        for member in tar.getmembers():
            extracted = tar.extractfile(member)
            if extracted is not None:
                return extracted.read().decode(errors="replace")
    return ""


class DockerProvisioner:
    name = "docker"

    def __init__(self, platform_id: str, options: DockerOptions) -> None:
        self.platform_id = platform_id
        self.options = options
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self._ncpu: int | None = None

    # --- plumbing -------------------------------------------------------------------------------

    def client(self) -> docker.DockerClient:
        with self._client_lock:
            if self._client is None:
                try:
                    factory = self.options.client_factory or docker.from_env
                    self._client = factory()
                except DockerException as exc:
                    raise BackendError(f"docker daemon not reachable: {exc}") from exc
            return self._client

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except BackendError:
            raise
        except (DockerException, requests.RequestException) as exc:  # an error, or no answer at all
            raise BackendError(f"docker: {exc}") from exc

    def _labels(self, workspace_id: str) -> dict[str, str]:
        return {
            LABEL_MANAGED: "true",
            LABEL_WORKSPACE: workspace_id,
            LABEL_PLATFORM: self.platform_id,
        }

    def _owned(self, labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        return labels.get(LABEL_MANAGED) == "true" and labels.get(LABEL_PLATFORM) == self.platform_id

    # --- images ---------------------------------------------------------------------------------

    def ensure_image(self, ref: str) -> None:
        """Pull when missing or moving; a failed pull is fine when a cached copy exists."""
        client = self.client()
        try:
            client.images.get(ref)
            cached = True
        except ImageNotFound:
            cached = False
        if cached and not is_moving(ref):
            return
        try:
            client.images.pull(ref)
        except DockerException as exc:
            if not cached:
                raise BackendConfigError(f"image not found: {ref}") from exc
            log.warning("could not refresh moving image %s (%s); using the cached copy", ref, exc)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, spec: InstanceSpec) -> str | None:
        image = spec.template.image if spec.template else None
        if not image:
            raise BackendConfigError(
                f"runtime {spec.runtime!r} has no template with an `image` for the docker backend"
            )
        return await self._run(lambda: self._start_sync(spec, image))

    def _start_sync(self, spec: InstanceSpec, image: str) -> str:
        client = self.client()
        name = container_name(spec.workspace_id)
        # One instance per workspace: a repeated start (an activity retry) replaces the container,
        # since the token minted for this attempt revoked the one the earlier container was given.
        try:
            existing = client.containers.get(name)
        except NotFound:
            existing = None
        if existing is not None:
            if not self._owned(existing.labels):
                raise BackendConfigError(f"container {name} exists and is not managed by this platform")
            generation = parse_generation(existing.labels.get(LABEL_GENERATION))
            refuse_if_newer(
                [ManagedInstance(str(existing.id), spec.workspace_id, None, generation)], spec.generation
            )
            existing.remove(force=True)

        self.ensure_image(image)
        limits = tier_limits(spec.tier, self.options.tier_overrides)
        privileged = limits.tier == 4 and self.options.allow_privileged
        # The image's own user (ours is unprivileged), except where the operator opted into a tier-4
        # container that drives the Docker socket: that one needs root.
        user = "0:0" if privileged else (client.images.get(image).attrs.get("Config") or {}).get("User")
        configs, workspace = volume_names(spec.workspace_id)
        for volume in (configs, workspace):
            try:
                client.volumes.get(volume)
            except NotFound:
                client.volumes.create(volume, labels=self._labels(spec.workspace_id))

        container = client.containers.create(
            image,
            name=name,
            labels={**self._labels(spec.workspace_id), LABEL_GENERATION: str(spec.generation)},
            environment=agent_environment(spec, self.options.platform_url, CONFIG_PATH),
            volumes=self._mounts(configs, workspace, privileged),
            user=user or None,
            **self._limits(limits, privileged),
        )
        try:
            # The token goes in before the agent can look for it, readable by nobody else.
            files = {TOKEN_FILE: (spec.token.encode(), 0o600)}
            if spec.template is not None:
                config = spec.template.model_dump(exclude={"env"}, mode="json")
                files["config.yaml"] = (yaml.safe_dump(config, sort_keys=False).encode(), 0o644)
            container.put_archive(CONFIG_PATH, _tar_of(files, numeric_owner(user)))
            container.start()
        except DockerException:
            container.remove(force=True)
            raise
        return str(container.id)

    def _mounts(self, configs: str, workspace: str, privileged: bool) -> dict[str, dict[str, str]]:
        mounts = {
            configs: {"bind": CONFIG_PATH, "mode": "rw"},
            workspace: {"bind": WORKSPACE_PATH, "mode": "rw"},
        }
        if privileged:
            mounts[DOCKER_SOCKET] = {"bind": DOCKER_SOCKET, "mode": "rw"}
        return mounts

    def _limits(self, limits: TierLimits, privileged: bool) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "mem_limit": f"{limits.memory_mb}m",
            "cpu_shares": limits.cpu_shares,
            # A hard cap too, but never above what the daemon has (it rejects that outright).
            "nano_cpus": int(min(limits.cpus, self._daemon_cpus()) * 1e9),
            "network_mode": "host" if limits.host_network else self.options.network,
            "read_only": limits.read_only_root,
            "privileged": privileged,
        }
        if limits.tmpfs_mb:
            kwargs["tmpfs"] = {"/tmp": f"size={limits.tmpfs_mb}m"}  # noqa: S108 - a container path
        return kwargs

    def _daemon_cpus(self) -> int:
        if self._ncpu is None:
            self._ncpu = int(self.client().info().get("NCPU") or 1)
        return self._ncpu

    async def stop(self, instance_id: str) -> None:
        def stop() -> None:
            try:
                self.client().api.remove_container(instance_id, force=True)
            except NotFound:
                return  # already gone; any other daemon error raises, so volumes stay put

        await self._run(stop)

    async def is_running(self, instance_id: str) -> bool:
        def running() -> bool:
            try:
                state = self.client().api.inspect_container(instance_id)["State"]
            except NotFound:
                return False
            return bool(state.get("Running"))

        return await self._run(running)

    async def remove_volumes(self, workspace_id: str) -> None:
        def remove() -> None:
            client = self.client()
            for name in volume_names(workspace_id):
                try:
                    volume = client.volumes.get(name)
                except NotFound:
                    continue
                if not self._owned(volume.attrs.get("Labels")):
                    raise ForeignResourceError(f"volume {name} is not managed by this platform")
                try:
                    volume.remove()
                except NotFound:
                    continue

        await self._run(remove)

    async def rescue_material(self, workspace_id: str, instance_id: str | None) -> RescueMaterial:
        def collect() -> RescueMaterial:
            sections: dict[str, str] = {}
            try:
                container: Container = self.client().containers.get(
                    instance_id or container_name(workspace_id)
                )
            except NotFound:
                return RescueMaterial({"state": "container not found"})
            state = container.attrs.get("State", {})
            sections["state"] = f"{state.get('Status')} (exit code {state.get('ExitCode')})"
            if state.get("Error"):
                sections["state"] += f": {state['Error']}"
            sections["logs"] = container.logs(tail=_LOG_TAIL).decode(errors="replace")
            try:
                chunks, _ = container.get_archive(f"{CONFIG_PATH}/config.yaml")
                sections["config.yaml"] = _untar_one(chunks)
            except NotFound:
                sections["config.yaml"] = ""
            return RescueMaterial(sections)

        return await self._run(collect)

    def _owned_filter(self, workspace_id: str | None = None) -> dict[str, list[str]]:
        labels = [f"{LABEL_MANAGED}=true", f"{LABEL_PLATFORM}={self.platform_id}"]
        if workspace_id:
            labels.append(f"{LABEL_WORKSPACE}={workspace_id}")
        return {"label": labels}

    async def list_managed(self, workspace_id: str | None = None) -> list[ManagedInstance]:
        def listing() -> list[ManagedInstance]:
            # One call: the high-level list inspects each container afterwards, and one removed in
            # between would fail the whole listing.
            containers = self.client().api.containers(all=True, filters=self._owned_filter(workspace_id))
            return [
                ManagedInstance(
                    str(c["Id"]),
                    (c.get("Labels") or {}).get(LABEL_WORKSPACE, ""),
                    datetime.fromtimestamp(c["Created"], UTC) if c.get("Created") else None,
                    parse_generation((c.get("Labels") or {}).get(LABEL_GENERATION)),
                )
                for c in containers
            ]

        return await self._run(listing)

    async def list_volume_owners(self) -> list[str]:

        def listing() -> list[str]:
            volumes = self.client().volumes.list(filters=self._owned_filter())
            return sorted({(v.attrs.get("Labels") or {}).get(LABEL_WORKSPACE, "") for v in volumes})

        return await self._run(listing)
