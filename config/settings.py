"""The one configuration class. Every env name here is the one the issues and README give.

A malformed value never stops the platform: it is logged (variable, bad value, default applied)
and the default is used instead.
"""

from __future__ import annotations

import logging
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, ValidatorFunctionWrapHandler, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from domain.ssrf import Policy

log = logging.getLogger("molecule.settings")

REPO_ROOT = Path(__file__).resolve().parent.parent
TASK_QUEUE = "workspaces"

PositiveInt = Annotated[int, Field(gt=0)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    molecule_env: Literal["development", "production", "test"] = "production"
    admin_token: str | None = None

    database_url: str | None = None
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = TASK_QUEUE

    data_dir: Path = Field(default=Path(".molecule"), validation_alias="MOLECULE_DATA_DIR")
    templates_dir: Path = REPO_ROOT / "templates"
    platform_url: str = "http://127.0.0.1:8080"
    # Distinguishes this platform's instances from another platform sharing a host or daemon.
    platform_instance_id: str = Field(default="", validation_alias="MOLECULE_PLATFORM_INSTANCE")
    default_backend: Literal["process", "external", "docker", "ec2"] = Field(
        default="process", validation_alias="MOLECULE_DEFAULT_BACKEND"
    )

    # Backends this worker drives; a workspace asking for another one fails with a clear error.
    molecule_backends: Annotated[list[Literal["process", "external", "docker", "ec2"]], NoDecode] = Field(
        default=["process", "external", "docker", "ec2"], validation_alias="MOLECULE_BACKENDS"
    )

    # Docker backend. "host" lets agents reach an API bound to 127.0.0.1 (development); compose
    # puts them on its named network and gives them the API's service URL instead.
    docker_network: str = "host"
    docker_platform_url: str | None = None
    # Privileged mode and the Docker socket for tier-4 containers: off unless the operator opts in.
    docker_allow_privileged: bool = False
    tier1_memory_mb: PositiveInt | None = None
    tier1_cpu_shares: PositiveInt | None = None
    tier2_memory_mb: PositiveInt | None = None
    tier2_cpu_shares: PositiveInt | None = None
    tier3_memory_mb: PositiveInt | None = None
    tier3_cpu_shares: PositiveInt | None = None
    tier4_memory_mb: PositiveInt | None = None
    tier4_cpu_shares: PositiveInt | None = None

    # EC2 backend (boto3; the endpoint is configurable for moto or another EC2-compatible API).
    ec2_region: str | None = None
    ec2_endpoint_url: str | None = None
    ec2_ami_id: str | None = None
    ec2_instance_type: str = "t3.small"
    ec2_subnet_id: str | None = None
    ec2_security_group_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ec2_platform_url: str | None = None

    # Local agents yield the CPU to the control plane so deadlines hold while many agents boot.
    process_agent_nice: Annotated[int, Field(ge=0, le=19)] = 19
    provision_timeout_seconds: PositiveInt | None = None
    # A failed workspace keeps its instance and volumes this long for debugging, then is reaped.
    rescue_grace_seconds: PositiveInt = 86400
    # How often the reconcile schedule looks for leaked instances (the last line of defence; the
    # sweeper it replaces ran every 60 s). It also runs once whenever a worker starts.
    reconcile_interval_seconds: PositiveInt = 60
    reconcile_enabled: bool = True
    # An instance of a live workspace that is not its current instance (a launch that finished after
    # its attempt was retried) is reaped once it is this old, far longer than any start takes.
    reconcile_stray_after_seconds: PositiveInt = 900
    remote_liveness_stale_after: PositiveInt = 180
    # How long an operator action (delete, restart, pause, resume, hibernate) waits for the workspace's
    # workflow to answer before the API replies 503 orchestrator_timeout.
    update_reply_timeout_seconds: PositiveInt = 30
    continue_as_new_after_events: PositiveInt = 2000
    # Test-only fault: a start writes this file once its instance exists, then holds (heartbeating)
    # before it records or returns anything, so a test can kill the worker at the worst moment.
    fault_hold_start: Path | None = Field(default=None, validation_alias="MOLECULE_FAULT_HOLD_START")
    max_body_bytes: PositiveInt = 1024 * 1024
    # Wrong tokens (admin or workspace) per client address and minute before that address gets 429
    # on every authenticated route until the minute is over; 0 disables the limit. Counted in
    # memory by each API replica.
    auth_failure_limit_per_minute: Annotated[int, Field(ge=0)] = 20
    # The HTTP server under the API: request head size and header count, and how long a client has
    # to send its request head and then its body.
    http_max_header_bytes: PositiveInt = 64 * 1024
    http_max_headers: PositiveInt = 100
    http_header_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    http_body_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0

    # A2A proxy. A dispatch is cancelled after this long without any event for the target (each
    # heartbeat is one); an agent's own `runtime_metadata.idle_timeout_seconds` overrides it.
    a2a_idle_timeout_seconds: PositiveInt = 300
    # A2A calls end after this long whatever the events (at most 30 minutes: the drain's and the
    # delegations' own timeouts are sized for that).
    a2a_call_ceiling_seconds: Annotated[int, Field(gt=0, le=1800)] = 1800
    # RFC 1918 agent URLs outside development (agents on a private network beside the platform).
    a2a_allow_private_networks: bool = False
    # A queued message not delivered by then is dropped by POST /admin/a2a-queue/drop-stale.
    a2a_queue_ttl_seconds: PositiveInt = 24 * 3600
    # A delegation that has no answer by then fails with a reason.
    delegation_timeout_seconds: PositiveInt = 1800
    # A workspace created with token_delivery=register takes a bearer-less first register this long.
    register_claim_window_seconds: PositiveInt = 3600
    # Chat files: "dir" (under DATA_DIR/files) or "s3" (FILES_S3_BUCKET, optionally FILES_S3_ENDPOINT_URL).
    files_store: Literal["dir", "s3"] = "dir"
    files_s3_bucket: str = ""
    files_s3_endpoint_url: str = ""
    files_s3_region: str = "us-east-1"

    # Base64 of 32 bytes (version 1), or `N:base64,…` to keep older versions readable; unset, the key
    # is generated in the data dir. Never logged: a malformed one stops the process (store/keyring).
    secrets_encryption_key: str | None = Field(default=None, repr=False)

    @field_validator("*", mode="wrap")
    @classmethod
    def _lenient(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        try:
            return handler(value)
        except ValidationError:
            name = info.field_name or "?"
            field = cls.model_fields[name]
            default = field.get_default(call_default_factory=True)
            env_name = field.validation_alias if isinstance(field.validation_alias, str) else name.upper()
            log.warning("ignoring malformed %s=%r; using default %r", env_name, value, default)
            return default

    @field_validator("molecule_backends", "ec2_security_group_ids", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def tier_overrides(self) -> dict[int, tuple[int | None, int | None]]:
        """TIER<n>_MEMORY_MB / TIER<n>_CPU_SHARES as {tier: (memory_mb, cpu_shares)}."""
        return {
            n: (getattr(self, f"tier{n}_memory_mb"), getattr(self, f"tier{n}_cpu_shares"))
            for n in range(1, 5)
        }

    def ssrf_policy(self) -> Policy:
        return Policy(
            development=self.molecule_env == "development", allow_private=self.a2a_allow_private_networks
        )

    def platform_id(self) -> str:
        """Stable id of this platform install: configured, else persisted in the data dir."""
        if self.platform_instance_id:
            return self.platform_instance_id
        path = self.data_dir / "platform-id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            new_id = uuid.uuid4().hex[:12]
            path.write_text(new_id)
            return new_id


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
