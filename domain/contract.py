"""The workflows' public face: workflow, signal, update and query names, the error and rejection
types, and one typed stub per activity.

Everything that talks to a workflow (the API, the worker, the activities, the test fakes, the
benches) takes its names from here, so nothing imports `workflows/` to learn them. The stubs have no
body: the temporalio SDK reads only the activity name and the type hints of the callable it is
given, so a workflow can call `workflow.execute_activity(contract.start_instance, req, ...)` and stay
deterministic, with the argument and result types checked by mypy. Implementations register under
the stub's name with `@implements(stub)`.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

from temporalio import activity

from domain.models import (
    CascadeRequest,
    CascadeTarget,
    DelegationFinish,
    DelegationInput,
    DelegationOutcome,
    DrainReport,
    DrainRequest,
    EventRecord,
    FilesRequest,
    IdleReport,
    LivenessReport,
    LivenessRequest,
    ProvisionPlan,
    ProvisionRequest,
    ReconcileReport,
    RescueRequest,
    StartRequest,
    StartResult,
    StatusChange,
    StopReport,
    StopRequest,
    TeardownRecord,
    VolumesRequest,
)

# --- workflows ----------------------------------------------------------------------------------

WORKSPACE_WORKFLOW = "WorkspaceWorkflow"
REAPER_WORKFLOW = "ReaperWorkflow"
RECONCILE_WORKFLOW = "ReconcileWorkflow"
CASCADE_WORKFLOW = "CascadeWorkflow"
DELEGATION_WORKFLOW = "DelegationWorkflow"


class Signal(StrEnum):
    REGISTER = "register"
    HEARTBEAT = "heartbeat"
    BOOTSTRAP_FAILED = "bootstrap_failed"
    INSTANCE_REAPED = "instance_reaped"
    RETRY_NOW = "retry_now"  # to a reaper: its workspace confirmed every instance gone, try at once
    DRAIN_QUEUE = "drain_queue"  # a heartbeat showed capacity while messages wait in the queue
    DELEGATION_DELIVERED = "delegation_delivered"  # to a delegation: its queued message was answered


class Update(StrEnum):
    RESTART = "restart"
    RESUME = "resume"
    PAUSE = "pause"
    HIBERNATE = "hibernate"
    DELETE = "delete"


STATE_QUERY = "state"


def reconcile_schedule_id(task_queue: str) -> str:
    return f"molecule-reconcile-{task_queue}"


def reconcile_workflow_id(task_queue: str) -> str:
    return f"reconcile-{task_queue}"


def cascade_workflow_id(kind: str, root_id: str) -> str:
    return f"cascade-{kind}-{root_id}"


def delegation_workflow_id(delegation_id: str) -> str:
    return f"delegation-{delegation_id}"


# --- errors -------------------------------------------------------------------------------------


class ActivityErrorType(StrEnum):
    """`ApplicationError.type` of the failures activities raise on purpose."""

    WORKSPACE_NOT_FOUND = "WorkspaceNotFound"
    BACKEND_CONFIG = "BackendConfigError"  # can never succeed as configured: not retried
    BACKEND = "BackendError"  # transient: retried
    FOREIGN_RESOURCE = "ForeignResource"  # owned by another platform: never touched, not retried
    SUPERSEDED = "Superseded"  # the workspace moved on (removed, or a newer generation)
    # A secret the start needs cannot be decrypted (unknown key version, wrong key): not retried.
    GLOBAL_SECRET_UNDECRYPTABLE = "GlobalSecretUndecryptable"  # noqa: S105 - a name, not a secret
    WORKSPACE_SECRET_UNDECRYPTABLE = "WorkspaceSecretUndecryptable"  # noqa: S105


class Rejection(StrEnum):
    """`ApplicationError.type` of update validator rejections; the API maps each to a status."""

    REMOVED = "WorkspaceRemoved"
    EXTERNAL = "ExternalRuntime"
    INVALID_STATE = "InvalidState"


# --- activity stubs -----------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def _stub(fn: F) -> F:
    """An activity's name and types, no body: registered under the function's own name."""
    return activity.defn(name=fn.__name__)(fn)


def implements(stub: Callable[..., Any]) -> Callable[[F], F]:
    """Register an implementation under `stub`'s activity name."""
    return activity.defn(name=stub.__name__)


@_stub
async def prepare_provision(req: ProvisionRequest) -> ProvisionPlan:
    """Resolve the deadline, required env and liveness settings (WorkspaceNotFound: no row yet)."""
    raise NotImplementedError


@_stub
async def start_instance(req: StartRequest) -> StartResult:
    """Mint the instance token and start the instance for this generation."""
    raise NotImplementedError


@_stub
async def stop_instances(req: StopRequest) -> StopReport:
    """Stop every instance the backend holds for the workspace and confirm none is left."""
    raise NotImplementedError


@_stub
async def remove_volumes(req: VolumesRequest) -> None:
    """Delete the workspace's persistent data (only after a confirmed stop)."""
    raise NotImplementedError


@_stub
async def remove_files(req: FilesRequest) -> None:
    """Delete the workspace's chat files (objects and rows), once its teardown completed."""
    raise NotImplementedError


@_stub
async def record_status(change: StatusChange) -> bool:
    """Write the status and its event in one transaction; False when refused (stale or final)."""
    raise NotImplementedError


@_stub
async def record_event(record: EventRecord) -> None:
    """Write an event that is not a status change, once per key."""
    raise NotImplementedError


@_stub
async def record_teardown(record: TeardownRecord) -> None:
    """Write the teardown progress to the row."""
    raise NotImplementedError


@_stub
async def check_liveness(req: LivenessRequest) -> LivenessReport:
    """The last heartbeat from Postgres and, when asked, whether the instance runs."""
    raise NotImplementedError


@_stub
async def check_idle(workspace_id: str) -> IdleReport:
    """When the workspace was last active and how many tasks it runs."""
    raise NotImplementedError


@_stub
async def capture_rescue(req: RescueRequest) -> bool:
    """Collect, redact and store the rescue bundle; False (nothing stored) without a redactor."""
    raise NotImplementedError


@_stub
async def cascade_targets(req: CascadeRequest) -> list[CascadeTarget]:
    """The live descendants a cascade still has to reach."""
    raise NotImplementedError


@_stub
async def cascade_one(target: CascadeTarget) -> str:
    """Apply the cascade's action to one workspace through its own workflow; its teardown or status."""
    raise NotImplementedError


@_stub
async def reconcile() -> ReconcileReport:
    """Reap managed instances that no workspace owns any more."""
    raise NotImplementedError


@_stub
async def drain_queue(req: DrainRequest) -> DrainReport:
    """Dispatch the workspace's queued messages in priority order, up to its free capacity."""
    raise NotImplementedError


@_stub
async def dispatch_delegation(inp: DelegationInput) -> DelegationOutcome:
    """Send the delegation's task to its target (queued when the target is busy)."""
    raise NotImplementedError


@_stub
async def finish_delegation(finish: DelegationFinish) -> None:
    """Write the delegation's status (queued, completed, failed) and its event, once."""
    raise NotImplementedError


ACTIVITY_STUBS: tuple[Callable[..., Any], ...] = (
    prepare_provision,
    start_instance,
    stop_instances,
    remove_volumes,
    remove_files,
    record_status,
    record_event,
    record_teardown,
    check_liveness,
    check_idle,
    capture_rescue,
    cascade_targets,
    cascade_one,
    reconcile,
    drain_queue,
    dispatch_delegation,
    finish_delegation,
)
