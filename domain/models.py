"""Workflow inputs, state and activity payloads (dataclasses, so Temporal serialises them)."""

from dataclasses import dataclass, field
from typing import Any

WORKFLOW_ID_PREFIX = "workspace-"


def workflow_id_for(workspace_id: str) -> str:
    return f"{WORKFLOW_ID_PREFIX}{workspace_id}"


@dataclass
class TeardownState:
    """What deletion has achieved so far (also written to the row for GET ?include_removed=true)."""

    instance_stopped: bool = False
    volumes_removed: bool = False
    leak_suspect: bool = False
    attempts: int = 0
    last_error: str | None = None
    complete: bool = False


@dataclass
class WorkspaceState:
    """Everything a WorkspaceWorkflow run needs to carry across continue-as-new."""

    status: str
    deadline_at: float | None = None  # epoch seconds, absolute so continue-as-new keeps it
    timeout_secs: int | None = None
    provisioned: bool = False  # preflight + start done for the current generation
    generation: int = 0
    instance_id: str | None = None
    status_mgmt: bool = False
    transition_seq: int = 0
    stale_after_secs: int = 180
    last_beat_at: float | None = None  # last agent news the workflow saw (epoch seconds)
    liveness_due_at: float | None = None  # when the liveness timer fires next
    rescue_grace_secs: int = 86400
    rescue_until: float | None = None  # a failed workspace's instance is reaped at this time
    idle_due_at: float | None = None  # when to check for automatic hibernation
    restart_pending: bool = False  # a restart is queued or running: another one is coalesced
    teardown: TeardownState | None = None  # set once the workspace is deleted


@dataclass
class WorkspaceInput:
    workspace_id: str
    runtime: str
    backend: str
    template: str | None = None
    continue_as_new_after_events: int = 2000
    hibernation_idle_minutes: int = 0  # > 0: hibernate after this long without activity
    state: WorkspaceState | None = None


@dataclass
class RegisterSignal:
    url: str | None = None
    agent_card: dict[str, Any] | None = None


@dataclass
class HeartbeatSignal:
    error_rate: float = 0.0
    sample_error: str | None = None
    runtime_state: str = ""
    active_tasks: int = 0
    status_mgmt: bool | None = None  # None: capabilities not reported in this beat


@dataclass
class ProvisionRequest:
    workspace_id: str
    runtime: str
    template: str | None


@dataclass
class ProvisionPlan:
    timeout_secs: int = 0
    timeout_source: str = "default"
    missing_env: list[str] = field(default_factory=list)
    stale_after_secs: int = 180
    rescue_grace_secs: int = 86400


@dataclass
class LivenessRequest:
    workspace_id: str
    backend: str
    instance_id: str | None
    stale_after_secs: int
    check_instance: bool  # ask the backend only once the beats look stale


@dataclass
class LivenessReport:
    last_heartbeat_at: float | None  # epoch seconds, from Postgres
    instance_running: bool | None = None  # None: not asked


@dataclass
class StopRequest:
    workspace_id: str
    backend: str
    instance_id: str


@dataclass
class StartRequest:
    workspace_id: str
    runtime: str
    backend: str
    template: str | None
    generation: int
    deadline_at: float
    timeout_secs: int


@dataclass
class StartResult:
    instance_id: str | None


@dataclass
class StatusChange:
    workspace_id: str
    status: str
    event_type: str
    payload: dict[str, Any]
    # Idempotency key: the same transition replayed by an activity retry writes one event.
    key: str
    last_sample_error: str | None = None
    clear_sample_error: bool = False


@dataclass
class EventRecord:
    """An event that is not a status change (evidence for operators), written once per key."""

    workspace_id: str
    event_type: str
    payload: dict[str, Any]
    key: str


@dataclass
class BootstrapFailedSignal:
    """An external boot watcher saw the instance fail to boot."""

    log_tail: str = ""


@dataclass
class Command:
    """An operator action accepted by an update handler, carried out by the main loop."""

    kind: str  # restart | pause | resume | hibernate
    reason: str = ""


@dataclass
class DeleteRequest:
    cascade_deleted: int = 0  # descendants removed along with this workspace
    cascade_of: str | None = None  # set on descendants: the workspace whose delete reached them


@dataclass
class ActionResult:
    status: str
    coalesced: bool = False
    teardown: str | None = None  # delete: pending | complete


@dataclass
class TeardownRecord:
    workspace_id: str
    teardown: TeardownState


@dataclass
class VolumesRequest:
    workspace_id: str
    backend: str


@dataclass
class RescueRequest:
    workspace_id: str
    backend: str
    instance_id: str | None
    runtime: str
    template: str | None
    generation: int
    reason: str  # provision_timeout | bootstrap_watcher
    log_tail: str = ""


@dataclass
class ReapRequest:
    workspace_id: str
    backend: str
    instance_id: str
    parent_workflow_id: str


@dataclass
class InstanceReaped:
    instance_id: str


@dataclass
class IdleReport:
    last_active_at: float | None  # epoch seconds
    active_tasks: int = 0
