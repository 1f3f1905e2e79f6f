"""Request and reply bodies."""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from domain.json_bounds import bound_violation
from domain.secrets import KEY_PATTERN, MAX_KEY_CHARS, MAX_VALUE_BYTES

# How a new workspace's first token reaches its agent (names, not secrets).
TOKEN_AT_CREATE: Final = "create"  # noqa: S105
TOKEN_AT_REGISTER: Final = "register"  # noqa: S105


def _check_env(env: dict[str, str]) -> dict[str, str]:
    """Create's env becomes the workspace's secrets: the same names, and the same bound on values."""
    bad = [k for k in env if len(k) > MAX_KEY_CHARS or not KEY_PATTERN.fullmatch(k)]
    if bad:
        raise ValueError(
            f"invalid env variable names (upper-case letters, digits and _): {', '.join(sorted(bad)[:20])}"
        )
    large = sorted(k for k, v in env.items() if len(v.encode(errors="replace")) > MAX_VALUE_BYTES)
    if large:
        raise ValueError(f"env values over {MAX_VALUE_BYTES} bytes: {', '.join(large[:20])}")
    return env


# What PostgreSQL cannot store, refused up front so that it is a 422 naming the field, never a 500
# (and, for heartbeats, never a failure shared by the other beats of its batch).
INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1


_SURROGATE = re.compile("[\ud800-\udfff]")


def unstorable(value: str) -> bool:
    """Text PostgreSQL refuses: NUL characters or lone UTF-16 surrogates."""
    return "\x00" in value or _SURROGATE.search(value) is not None


def _storable_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (\\u0000)")
    if _SURROGATE.search(value):
        raise ValueError("must not contain lone UTF-16 surrogates (\\ud800-\\udfff)")
    return value


def _replace_unstorable(value: str) -> str:
    return _SURROGATE.sub("\ufffd", value.replace("\x00", "\ufffd"))


def _storable_json(value: Any) -> Any:
    """jsonb refuses NaN, Infinity and NUL characters in strings (keys included)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must not contain NaN or Infinity")
    if isinstance(value, str):
        _storable_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable_json(key)
            _storable_json(item)
    elif isinstance(value, list):
        for item in value:
            _storable_json(item)
    return value


def _bounded(value: Any) -> Any:
    """Depth and serialized size, checked before anything walks the value recursively."""
    problem = bound_violation(value)
    if problem:
        raise ValueError(f"must not be {problem}")
    return value


def _at_least_one(value: int) -> int:
    return value or 1


Text = Annotated[str, AfterValidator(_storable_text)]
# Any JSON value an agent reports: bounded, and storable as jsonb.
JsonValue = Annotated[Any, AfterValidator(_bounded), AfterValidator(_storable_json)]
# Evidence is kept, NULs shown as U+FFFD.
LogText = Annotated[str, AfterValidator(_bounded), AfterValidator(_replace_unstorable)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_bounded), AfterValidator(_storable_json)]
EnvMap = Annotated[
    dict[str, Annotated[Text, Field(max_length=65536)]],
    AfterValidator(_check_env),
    AfterValidator(_bounded),
]


class CreateWorkspace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=200)
    runtime: Text | None = Field(default=None, max_length=64)
    template: Text | None = Field(default=None, max_length=200)
    model: Text | None = Field(default=None, max_length=200)
    role: Text | None = Field(default=None, max_length=2000)
    tier: int = Field(default=2, ge=1, le=4)
    parent_id: uuid.UUID | None = None
    env: EnvMap = Field(default_factory=dict, max_length=200)
    # 0 (or omitted) means 1, as in the seed.
    max_concurrent_tasks: Annotated[int, Field(ge=0, le=1000), AfterValidator(_at_least_one)] = 1
    budget_limit: int | None = Field(default=None, ge=0, le=INT8_MAX)
    external: bool = False
    backend: Literal["process", "external", "docker", "ec2"] | None = None
    # > 0: the workspace hibernates after this many minutes without an active task.
    hibernation_idle_minutes: int = Field(default=0, ge=0, le=60 * 24 * 30)
    token_delivery: Literal["create", "register"] = Field(
        default=TOKEN_AT_CREATE,
        description="register (external workspaces): no token in this reply; the agent's first "
        "register without a bearer mints it, within REGISTER_CLAIM_WINDOW_SECONDS",
    )


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

    log_tail: LogText = Field(default="", description="Kept to its last 8192 bytes.")


class RescueBundle(BaseModel):
    workspace_id: str
    generation: int
    reason: str
    created_at: datetime
    sections: dict[str, str]


class CreatedWorkspace(BaseModel):
    id: str = Field(description="the workspace's id (also in `workspace`), as the original reply had it")
    status: str
    workspace: Workspace
    auth_token: str | None = Field(
        description="Shown once: only its hash is stored. Null with token_delivery=register: the "
        "agent's first register mints it."
    )


class RegisterBody(BaseModel):
    id: Text = Field(max_length=64)
    url: Text | None = Field(default=None, max_length=2048)
    agent_card: JsonObject | None = None
    delivery_mode: Literal["push", "poll"] | None = Field(
        default=None, description="poll: no inbound URL; messages wait in the inbox (GET .../activity)"
    )


class Registered(BaseModel):
    status: Literal["registered"] = "registered"
    platform_inbound_secret: str
    auth_token: str | None = Field(
        default=None, description="only on a first register that claimed the workspace"
    )


class RuntimeMetadata(BaseModel):
    capabilities: JsonObject | None = None
    idle_timeout_seconds: int | None = Field(default=None, ge=-INT4_MAX, le=INT4_MAX)


class HeartbeatBody(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    workspace_id: Text = Field(max_length=64)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    sample_error: Text | None = Field(default=None, max_length=8192)
    active_tasks: int = Field(default=0, ge=0, le=INT4_MAX)
    uptime_seconds: int = Field(default=0, ge=0, le=INT8_MAX)
    current_task: Text | None = Field(default=None, max_length=8192)
    runtime_state: Text = Field(default="", max_length=64)
    monthly_spend: int = 0
    runtime_metadata: RuntimeMetadata | None = None


class HeartbeatReply(BaseModel):
    status: str
    platform_inbound_secret: str | None = None


class ErrorBody(BaseModel):
    """Every error reply: a message for people and a stable code for programs. Some codes add fields
    (a removed workspace's `id`, `removed_at` and `hint`; `current_status`; `retry_after`; ...)."""

    model_config = ConfigDict(extra="allow")

    error: str
    code: str


class FieldError(BaseModel):
    field: str
    location: str
    message: str


class ValidationErrorBody(ErrorBody):
    """422: `fields` names each invalid field (code `validation_error`); some checks that need the
    platform's state (an unknown template or parent) answer 422 without it."""

    fields: list[FieldError] = Field(default_factory=list)


class BootstrapAccepted(BaseModel):
    accepted: bool
    log_tail_bytes: int
    log_tail_status: str = Field(description="redacted | empty | dropped: why (it could not be redacted)")


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    version: str
    database: Literal["ok", "unavailable"]
    checks: dict[str, Literal["ok", "unavailable"]]
    code: str | None = None


class ActivityReport(BaseModel):
    """What an agent reports about its own work (the runtime's `report_activity`)."""

    activity_type: str = Field(
        max_length=64, description="a2a_send | a2a_receive | task_update | agent_log | error"
    )
    method: Text | None = Field(default=None, max_length=1000)
    summary: Text | None = Field(
        default=None, max_length=65536, description="kept to its first 1000 characters"
    )
    source_id: str | None = Field(default=None, max_length=64, description="this workspace, when sent")
    target_id: str | None = Field(default=None, max_length=64, description="defaults to this workspace")
    status: Literal["ok", "error", "timeout"] = "ok"
    error_detail: Text | None = Field(default=None, max_length=65536, description="kept to 4000 characters")
    duration_ms: int | None = Field(default=None, ge=0, le=INT4_MAX)
    request_body: JsonValue = None
    response_body: JsonValue = None
    metadata: JsonValue = Field(default=None, description="stored as the request body when there is none")
    tool_trace: JsonValue = None
    idempotency_key: Text | None = Field(
        default=None, max_length=200, description="a repeated key is one row"
    )


class ActivityLogged(BaseModel):
    status: Literal["logged"] = "logged"
    id: str
    duplicate: bool = False


class ActivityRow(BaseModel):
    id: str = Field(description="the cursor: pass it as since_id to read the rows after it")
    workspace_id: str
    activity_type: str
    source_id: str | None
    target_id: str | None
    method: str | None
    summary: str | None
    request_body: Any = None
    response_body: Any = None
    duration_ms: int | None
    status: str
    error_detail: str | None
    tool_trace: Any = None
    created_at: datetime
    data: dict[str, Any] | None = Field(
        default=None, description="a2a_receive rows: who sent it (source) and the message's text"
    )


class NotifyBody(BaseModel):
    message: Text = Field(max_length=65536)
    attachments: list[dict[str, Any]] = Field(
        default_factory=list, max_length=50, description="[{uri, name, mimeType?, size?}]"
    )


class Notified(BaseModel):
    status: Literal["sent"] = "sent"
    activity_id: str


class WorkspaceState(BaseModel):
    workspace_id: str
    status: str
    paused: bool
    deleted: bool
