"""Workflow inputs, state and activity payloads (dataclasses, so Temporal serialises them)."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from domain.lifecycle import Timer
from domain.status import WorkspaceStatus

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

    status: WorkspaceStatus
    # Timer -> when it fires (epoch seconds, absolute so continue-as-new keeps them). Only timers the
    # status arms (domain.lifecycle.ARMED) are ever present.
    due: dict[str, float] = field(default_factory=dict)
    timeout_secs: int | None = None
    provisioned: bool = False  # preflight + start done for the current generation
    generation: int = 0
    instance_id: str | None = None
    status_mgmt: bool = False
    transition_seq: int = 0  # every status write and event carries the next one
    status_seq: int = 0  # the sequence number of the last status write (the row's status_seq once it lands)
    stale_after_secs: int = 180
    last_beat_at: float | None = None  # last agent news the workflow saw (epoch seconds)
    rescue_grace_secs: int = 86400
    restart_pending: bool = False  # a restart is queued or running: another one is coalesced
    instance_token_id: int | None = None  # the current instance's token
    reapers: list[str] = field(default_factory=list)  # reaper workflows started for old instances
    # Agent news that came with this token or an older one is from an instance the workspace moved on
    # from (it may still beat while it is being stopped): ignored.
    stale_through_token: int = 0
    teardown: TeardownState | None = None  # set once the workspace is deleted

    @property
    def deadline_at(self) -> float | None:
        return self.due.get(Timer.DEADLINE.value)


@dataclass
class WorkspaceInput:
    workspace_id: str
    runtime: str
    backend: str
    template: str | None = None
    continue_as_new_after_events: int = 2000
    hibernation_idle_minutes: int = 0  # > 0: hibernate after this long without activity
    state: WorkspaceState | None = None
    # The row's created_at (epoch seconds): the first deadline counts from the operator's create.
    created_at: float | None = None


@dataclass
class RegisterSignal:
    url: str | None = None
    agent_card: dict[str, Any] | None = None
    token_id: int | None = None  # the token it came with: an older generation's is ignored


@dataclass
class HeartbeatSignal:
    error_rate: float = 0.0
    sample_error: str | None = None
    runtime_state: str = ""
    active_tasks: int = 0
    status_mgmt: bool | None = None  # None: capabilities not reported in this beat
    token_id: int | None = None  # the token it came with: an older generation's is ignored


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
    instance_id: str | None  # the one the workflow recorded; every other one of the workspace goes too
    below_generation: int | None = None  # spare instances of this generation and newer (None: all)


@dataclass
class StopReport:
    stopped: list[str] = field(default_factory=list)  # instance ids stopped (or found gone)


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
    token_id: int | None = None  # the instance token it was given


@dataclass
class StatusChange:
    workspace_id: str
    status: str
    event_type: str
    payload: dict[str, Any]
    # Idempotency key: the same transition replayed by an activity retry writes one event.
    key: str
    # The workflow's transition sequence: the store refuses a write not newer than the row's.
    seq: int = 0
    last_sample_error: str | None = None
    clear_sample_error: bool = False
    generation: int | None = None  # set on a restart: a launch of an older generation stops itself


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


class CommandKind(StrEnum):
    RESTART = "restart"
    RESUME = "resume"
    PAUSE = "pause"
    HIBERNATE = "hibernate"


@dataclass
class Command:
    """An operator action accepted by an update handler, carried out by the main loop."""

    kind: CommandKind
    reason: str = ""
    requested_at: float | None = None  # epoch seconds: a restart's deadline counts from here


@dataclass
class DeleteRequest:
    cascade_deleted: int = 0  # descendants removed along with this workspace
    cascade_of: str | None = None  # set on descendants: the workspace whose delete reached them


@dataclass
class PauseRequest:
    cascade_of: str | None = None  # set on descendants: the workspace whose pause reached them


class CascadeKind(StrEnum):
    DELETE = "delete"
    PAUSE = "pause"


@dataclass
class CascadeRequest:
    kind: CascadeKind
    root_id: str
    descendants: int = 0  # how many the operator confirmed (reported on the root's event)


@dataclass
class CascadeTarget:
    kind: CascadeKind
    workspace_id: str
    root_id: str
    descendants: int = 0  # the root only: its DeleteRequest.cascade_deleted


@dataclass
class CascadeReport:
    root: str = ""  # delete: the root's teardown (pending | complete); pause: its status
    reached: dict[str, str] = field(default_factory=dict)  # descendant id -> the same


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
class FilesRequest:
    workspace_id: str


@dataclass
class RescueRequest:
    workspace_id: str
    backend: str
    instance_id: str | None
    runtime: str
    template: str | None
    generation: int
    reason: str  # provision_timeout | bootstrap_watcher | start_failed
    log_tail: str = ""
    detail: str = ""  # start_failed: the backend's own (redacted) words, kept out of events


@dataclass
class ReapRequest:
    workspace_id: str
    backend: str
    instance_id: str | None
    parent_workflow_id: str
    below_generation: int | None = None  # instances of this generation and newer are not the reaper's


@dataclass
class InstanceReaped:
    instance_id: str | None


@dataclass
class IdleReport:
    last_active_at: float | None  # epoch seconds
    active_tasks: int = 0


@dataclass
class ReconcileReport:
    examined: int = 0
    reaped: list[str] = field(default_factory=list)  # "<backend>:<instance id>"
    volumes_removed: list[str] = field(default_factory=list)  # workspace ids
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    errors: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


# --- agent-to-agent -----------------------------------------------------------------------------


@dataclass
class DrainSignal:
    """A heartbeat showed spare capacity while messages wait in the workspace's queue."""

    capacity: int


@dataclass
class DrainRequest:
    workspace_id: str
    capacity: int


@dataclass
class QueuedDelivery:
    """What became of a queued message that carried a delegation (told to its workflow)."""

    delegation_id: str
    delivered: bool  # False: the entry failed for good (its attempts are used up, or it was dropped)
    error: str | None = None


@dataclass
class DrainReport:
    dispatched: int = 0
    completed: int = 0
    requeued: int = 0
    failed: int = 0
    remaining: int = 0  # still queued after this drain
    deliveries: list[QueuedDelivery] = field(default_factory=list)


class DelegationStatus(StrEnum):
    PENDING = "pending"
    DISPATCHED = "dispatched"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass
class DelegationInput:
    """Only ids and numbers: the task and the answer live in Postgres, never in workflow history."""

    delegation_id: str
    source_id: str
    target_id: str
    timeout_secs: int


@dataclass
class DelegationOutcome:
    status: DelegationStatus  # completed, failed, queued, or pending (try again after retry_after)
    error: str | None = None
    retry_after: int | None = None


@dataclass
class DelegationFinish:
    delegation_id: str
    status: DelegationStatus
    error: str | None = None
