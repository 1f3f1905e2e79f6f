from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from domain.templates import Template


class BackendError(Exception):
    """A backend failure worth retrying (daemon hiccup, cloud throttling)."""


class BackendConfigError(BackendError):
    """The instance can never start as configured (missing command, unknown image): do not retry."""


class BackendNotConfigured(BackendConfigError):
    pass


class NewerGenerationRunning(BackendConfigError):
    """A start of an older generation found the workspace's newer one running: it must not replace it."""


def refuse_if_newer(instances: list[ManagedInstance], generation: int) -> None:
    newer = [i.instance_id for i in instances if i.generation is not None and i.generation > generation]
    if newer:
        raise NewerGenerationRunning(f"generation {generation} superseded: {newer} run a newer one")


class ForeignResourceError(BackendError):
    """The resource exists but belongs to another platform: never touched, and retrying cannot help."""


@dataclass(frozen=True)
class InstanceSpec:
    workspace_id: str
    runtime: str
    generation: int
    template: Template | None
    env: dict[str, str]  # workspace env (secrets included): never logged
    token: str  # the instance's bearer token: never logged
    platform_url: str
    tier: int = 2
    model: str | None = None


def spec_model(spec: InstanceSpec) -> str | None:
    """The workspace's MODEL_PROVIDER secret (create stores its model there; PUT /model and the
    secrets routes change it), else the row's model (a workspace created before secrets)."""
    return spec.env.get("MODEL_PROVIDER") or spec.model or None


def agent_environment(spec: InstanceSpec, platform_url: str, config_path: str) -> dict[str, str]:
    """What every backend gives the agent: template defaults, then the workspace env, then the
    model, then the identity variables, which the workspace env cannot override."""
    env: dict[str, str] = dict(spec.template.env) if spec.template else {}
    env.update(spec.env)
    model = spec_model(spec)
    if model:
        env["MODEL"] = model
        if spec.runtime == "hermes":
            env["HERMES_DEFAULT_MODEL"] = model
    env.update(
        {
            "WORKSPACE_ID": spec.workspace_id,
            "PLATFORM_URL": platform_url,
            "WORKSPACE_CONFIG_PATH": config_path,
            "TIER": str(spec.tier),
        }
    )
    return env


@dataclass(frozen=True)
class ManagedInstance:
    instance_id: str
    workspace_id: str
    launched_at: datetime | None = None  # None: unknown, so never judged by its age
    generation: int | None = None  # None: unknown (treated as older than any generation)


def parse_generation(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@dataclass
class RescueMaterial:
    sections: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Provisioner(Protocol):
    """Every call is idempotent: activities retry them and workers die mid-way."""

    name: str

    async def start(self, spec: InstanceSpec) -> str | None:
        """Start the instance; return its id (None when there is no instance, e.g. external).

        One instance per workspace: a start replaces every instance the backend holds for the
        workspace (an activity retry after a worker died mid-start, whose launch nobody recorded)
        rather than adding a second."""

    async def stop(self, instance_id: str) -> None:
        """Stop it for good. Already gone is success; any doubt raises."""

    async def is_running(self, instance_id: str) -> bool:
        """True/False when known; raises on a transient error rather than guessing."""

    async def remove_volumes(self, workspace_id: str) -> None:
        """Delete the workspace's persistent data. Only called after a confirmed stop.
        ForeignResourceError when a volume of that name belongs to another platform."""

    async def rescue_material(self, workspace_id: str, instance_id: str | None) -> RescueMaterial:
        """Evidence for a failed boot (logs tail, state). Unredacted: the caller redacts."""

    async def list_managed(self, workspace_id: str | None = None) -> list[ManagedInstance]:
        """Instances this platform started that still exist, all of them (reconcile) or one
        workspace's (every stop confirms against it)."""

    async def list_volume_owners(self) -> list[str]:
        """Workspace ids that still have persistent data here (for reconcile)."""
