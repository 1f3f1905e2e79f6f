"""Status rules applied by the workflow on register and heartbeat news. Pure functions."""

from dataclasses import dataclass, field
from typing import Any

from domain.events import EventType
from domain.status import RECOVERABLE_BY_AGENT, WorkspaceStatus

DEGRADE_ERROR_RATE = 0.5
RECOVER_ERROR_RATE = 0.1
WEDGED = "wedged"

# Never flipped by agent news: the operator (or a teardown) owns these.
FROZEN = frozenset(
    {
        WorkspaceStatus.REMOVED,
        WorkspaceStatus.PAUSED,
        WorkspaceStatus.HIBERNATING,
        WorkspaceStatus.HIBERNATED,
    }
)


@dataclass(frozen=True)
class Transition:
    status: WorkspaceStatus
    event_type: EventType
    payload: dict[str, Any] = field(default_factory=dict)
    clear_sample_error: bool = False


def on_register(status: str, url: str | None, agent_card: dict[str, Any] | None) -> Transition | None:
    current = WorkspaceStatus(status)
    if current in FROZEN or current == WorkspaceStatus.ONLINE:
        return None
    payload: dict[str, Any] = {"url": url, "agent_card": agent_card or {}}
    if current != WorkspaceStatus.PROVISIONING:
        payload["recovered_from"] = current.value
    return Transition(WorkspaceStatus.ONLINE, EventType.WORKSPACE_ONLINE, payload, clear_sample_error=True)


def on_heartbeat(
    status: str,
    *,
    error_rate: float,
    sample_error: str | None,
    runtime_state: str,
    status_mgmt: bool,
) -> Transition | None:
    current = WorkspaceStatus(status)
    if current in FROZEN:
        return None
    if current in RECOVERABLE_BY_AGENT:
        return Transition(
            WorkspaceStatus.ONLINE,
            EventType.WORKSPACE_ONLINE,
            {"recovered_from": current.value},
            clear_sample_error=True,
        )
    if current == WorkspaceStatus.ONLINE and runtime_state == WEDGED:
        return Transition(
            WorkspaceStatus.DEGRADED,
            EventType.WORKSPACE_DEGRADED,
            {"runtime_state": WEDGED, "sample_error": sample_error},
        )
    if status_mgmt:
        return None
    if current == WorkspaceStatus.ONLINE and error_rate >= DEGRADE_ERROR_RATE:
        return Transition(
            WorkspaceStatus.DEGRADED,
            EventType.WORKSPACE_DEGRADED,
            {"error_rate": error_rate, "sample_error": sample_error},
        )
    if current == WorkspaceStatus.DEGRADED and error_rate < RECOVER_ERROR_RATE and not runtime_state:
        return Transition(
            WorkspaceStatus.ONLINE,
            EventType.WORKSPACE_ONLINE,
            {"recovered_from": current.value, "error_rate": error_rate},
            clear_sample_error=True,
        )
    return None


def error_band(error_rate: float) -> int:
    if error_rate >= DEGRADE_ERROR_RATE:
        return 2
    if error_rate >= RECOVER_ERROR_RATE:
        return 1
    return 0


def heartbeat_is_news(
    *,
    status: str,
    first_since_register: bool,
    prev_runtime_state: str,
    runtime_state: str,
    prev_error_rate: float,
    error_rate: float,
    capabilities_changed: bool,
    status_mgmt: bool = False,
) -> bool:
    """Whether a beat carries something the workflow must act on; steady beats stay in Postgres."""
    if status not in (WorkspaceStatus.ONLINE, WorkspaceStatus.DEGRADED):
        return status not in FROZEN
    would_transition = (
        on_heartbeat(
            status,
            error_rate=error_rate,
            sample_error=None,
            runtime_state=runtime_state,
            status_mgmt=status_mgmt,
        )
        is not None
    )
    return (
        would_transition
        or first_since_register
        or prev_runtime_state != runtime_state
        or error_band(prev_error_rate) != error_band(error_rate)
        or capabilities_changed
    )


HEARTBEAT_STALE = "heartbeat stale"


def liveness_slack(stale_after_secs: int) -> int:
    """Extra wait before re-checking a workspace whose beats were fresh at the last check.

    Each check costs ~6 history events; checking every stale window + a third keeps a healthy
    workspace under ~100 events an hour (180 s window: a check every ~4 min) while a silent one is
    still caught between 1x and 1.33x the window after its last beat."""
    return max(1, stale_after_secs // 3)


LIVENESS_STATUSES = frozenset({WorkspaceStatus.ONLINE, WorkspaceStatus.DEGRADED})


def on_stale(status: str, *, external: bool, instance_running: bool | None) -> Transition | None:
    """No beat for the stale window (confirmed from Postgres). Never flips paused/hibernated/removed."""
    current = WorkspaceStatus(status)
    if current not in LIVENESS_STATUSES:
        return None
    if external:
        return Transition(
            WorkspaceStatus.AWAITING_AGENT, EventType.WORKSPACE_AWAITING_AGENT, {"reason": HEARTBEAT_STALE}
        )
    if instance_running:
        if current == WorkspaceStatus.DEGRADED:
            return None
        return Transition(
            WorkspaceStatus.DEGRADED, EventType.WORKSPACE_DEGRADED, {"sample_error": HEARTBEAT_STALE}
        )
    return Transition(
        WorkspaceStatus.OFFLINE,
        EventType.WORKSPACE_OFFLINE,
        {"reason": f"{HEARTBEAT_STALE} and the instance is not running"},
    )


# Operator actions: which statuses accept them (the update validators and the API use these).
RESUMABLE = frozenset({WorkspaceStatus.PAUSED, WorkspaceStatus.HIBERNATED})
# A restart (operator or automatic) applies to any status but the operator's pause and hibernation.
RESTARTABLE = frozenset(WorkspaceStatus) - FROZEN
HIBERNATABLE = frozenset({WorkspaceStatus.ONLINE, WorkspaceStatus.DEGRADED})


def update_rejection(
    update: str, status: WorkspaceStatus, *, removed: bool, external: bool, restart_pending: bool
) -> tuple[str, str] | None:
    """Why a workspace's workflow refuses an operator update, as (rejection type, message); None when
    it accepts it. The types are domain.contract.Rejection values; the API maps each to a status."""
    if removed:
        return "WorkspaceRemoved", "workspace removed"
    if update == "restart" and external:
        return "ExternalRuntime", "external agent: restart it on your side"
    if update == "resume" and status not in RESUMABLE and not restart_pending:
        return "InvalidState", f"cannot resume a workspace that is {status}"
    if update == "hibernate" and status not in HIBERNATABLE:
        return "InvalidState", f"cannot hibernate a workspace that is {status}"
    return None


def can_resume(status: str) -> bool:
    return WorkspaceStatus(status) in RESUMABLE


def can_hibernate(status: str, active_tasks: int) -> bool:
    return WorkspaceStatus(status) in HIBERNATABLE and active_tasks == 0
