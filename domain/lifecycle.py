"""The lifecycle as one table: which timers each status arms, and which statuses mean no instance may
run. The workflow consults these; nothing else encodes them."""

from __future__ import annotations

from enum import StrEnum

from domain.status import WorkspaceStatus


class Timer(StrEnum):
    DEADLINE = "deadline"  # provisioning: fail if the agent has not registered by then
    LIVENESS = "liveness"  # live: confirm the beats from Postgres, act when they are stale
    IDLE = "idle"  # live: hibernate after hibernation_idle_minutes without activity
    RESCUE_GRACE = "rescue_grace"  # failed: reap the instance kept for debugging


# status -> the timers that may be armed in it. Entering a status drops every timer it does not list.
ARMED: dict[WorkspaceStatus, frozenset[Timer]] = {
    WorkspaceStatus.PROVISIONING: frozenset({Timer.DEADLINE}),
    WorkspaceStatus.ONLINE: frozenset({Timer.LIVENESS, Timer.IDLE}),
    WorkspaceStatus.DEGRADED: frozenset({Timer.LIVENESS, Timer.IDLE}),
    WorkspaceStatus.FAILED: frozenset({Timer.RESCUE_GRACE}),
}

# When two timers are due at once, the first listed fires first.
TIMER_ORDER: tuple[Timer, ...] = (Timer.DEADLINE, Timer.LIVENESS, Timer.IDLE, Timer.RESCUE_GRACE)


def armed(status: WorkspaceStatus) -> frozenset[Timer]:
    return ARMED.get(status, frozenset())


def arms_on_entry(previous: WorkspaceStatus, new: WorkspaceStatus) -> frozenset[Timer]:
    """Timers that start counting when the workspace enters `new` from `previous`: liveness and idle
    on becoming live, the rescue grace on failing. The deadline is set by provisioning itself."""
    entering = armed(new) - armed(previous)
    return entering - {Timer.DEADLINE}


def rearm(
    due: dict[str, float],
    previous: WorkspaceStatus,
    new: WorkspaceStatus,
    now: float,
    *,
    stale_after: float,
    idle_after: float | None,
    rescue_grace: float,
) -> dict[str, float]:
    """The timers after moving from `previous` to `new`: those `new` does not arm are dropped, those
    it starts are set from `now` (idle only when automatic hibernation is on), the rest keep their time."""
    kept = {t: at for t, at in due.items() if Timer(t) in armed(new)}
    starts = {Timer.LIVENESS: stale_after, Timer.IDLE: idle_after, Timer.RESCUE_GRACE: rescue_grace}
    for timer in arms_on_entry(previous, new):
        after = starts.get(timer)
        if after:
            kept[timer.value] = now + after
    return kept


def next_due(due: dict[str, float], status: WorkspaceStatus) -> tuple[Timer, float] | None:
    """The earliest armed timer and its time; None when nothing is armed."""
    candidates = [(due[t.value], TIMER_ORDER.index(t), t) for t in armed(status) if t.value in due]
    if not candidates:
        return None
    at, _, timer = min(candidates)
    return timer, at


# No instance may run in these: a launch that completes while the row says one of them (or a newer
# generation) stops what it launched.
NO_INSTANCE = frozenset(
    {
        WorkspaceStatus.REMOVED,
        WorkspaceStatus.PAUSED,
        WorkspaceStatus.HIBERNATING,
        WorkspaceStatus.HIBERNATED,
    }
)


def launch_superseded(row_status: WorkspaceStatus, row_generation: int, generation: int) -> bool:
    """Whether a start of `generation` must not keep (or make) its instance, given the row."""
    return row_status in NO_INSTANCE or row_generation > generation
