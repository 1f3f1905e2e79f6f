"""Request and reply bodies."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _check_env(env: dict[str, str]) -> dict[str, str]:
    bad = [k for k in env if not _ENV_NAME.match(k)]
    if bad:
        raise ValueError(f"invalid env variable names: {', '.join(sorted(bad))}")
    return env


EnvMap = Annotated[dict[str, Annotated[str, Field(max_length=65536)]], AfterValidator(_check_env)]


class CreateWorkspace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    runtime: str | None = Field(default=None, max_length=64)
    template: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, max_length=200)
    role: str | None = Field(default=None, max_length=2000)
    tier: int = Field(default=2, ge=1, le=4)
    parent_id: uuid.UUID | None = None
    env: EnvMap = Field(default_factory=dict, max_length=200)
    max_concurrent_tasks: int = Field(default=1, ge=1, le=1000)
    budget_limit: int | None = Field(default=None, ge=0)
    external: bool = False
    backend: Literal["process", "external", "docker", "ec2"] | None = None
    # > 0: the workspace hibernates after this many minutes without an active task.
    hibernation_idle_minutes: int = Field(default=0, ge=0, le=60 * 24 * 30)


class Workspace(BaseModel):
    id: str
    name: str
    role: str | None
    tier: int
    runtime: str
    backend: str
    template: str | None
    model: str | None
    parent_id: str | None
    status: str
    url: str | None
    agent_card: dict[str, Any] | None
    instance_id: str | None
    provision_deadline_at: datetime | None
    provision_timeout_ms: int | None = None
    registered_at: datetime | None
    last_heartbeat_at: datetime | None
    last_error_rate: float
    last_sample_error: str | None
    active_tasks: int
    uptime_seconds: int
    current_task: str | None
    runtime_state: str
    capabilities: dict[str, Any]
    idle_timeout_seconds: int | None
    max_concurrent_tasks: int
    budget_limit: int | None
    monthly_spend: int
    created_at: datetime
    updated_at: datetime
    removed_at: datetime | None
    hibernation_idle_minutes: int = 0
    # Deletion progress, shown with ?include_removed=true: instance_stopped, volumes_removed,
    # leak_suspect, attempts, last_error, complete.
    teardown: dict[str, Any] | None = None


class ActionReply(BaseModel):
    status: str
    coalesced: bool = False
    message: str | None = None
    cascade_paused: int | None = None


class DeleteReply(BaseModel):
    status: Literal["removed"] = "removed"
    cascade_deleted: int
    teardown: Literal["pending", "complete"]


class BootstrapFailedBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log_tail: str = Field(default="", description="Kept to its last 8192 bytes.")


class RescueBundle(BaseModel):
    workspace_id: str
    generation: int
    reason: str
    created_at: datetime
    sections: dict[str, str]


class CreatedWorkspace(BaseModel):
    workspace: Workspace
    auth_token: str = Field(description="Shown once: only its hash is stored.")


class RegisterBody(BaseModel):
    id: str = Field(max_length=64)
    url: str | None = Field(default=None, max_length=2048)
    agent_card: dict[str, Any] | None = None


class Registered(BaseModel):
    status: Literal["registered"] = "registered"
    platform_inbound_secret: str


class RuntimeMetadata(BaseModel):
    capabilities: dict[str, Any] | None = None
    idle_timeout_seconds: int | None = None


class HeartbeatBody(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    workspace_id: str = Field(max_length=64)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    sample_error: str | None = Field(default=None, max_length=8192)
    active_tasks: int = Field(default=0, ge=0)
    uptime_seconds: int = Field(default=0, ge=0)
    current_task: str | None = Field(default=None, max_length=8192)
    runtime_state: str = Field(default="", max_length=64)
    monthly_spend: int = 0
    runtime_metadata: RuntimeMetadata | None = None


class HeartbeatReply(BaseModel):
    status: str
    platform_inbound_secret: str | None = None
