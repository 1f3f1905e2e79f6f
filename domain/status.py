from enum import StrEnum


class WorkspaceStatus(StrEnum):
    """The one source of workspace statuses; the Postgres enum `workspace_status` mirrors it."""

    PROVISIONING = "provisioning"
    ONLINE = "online"
    OFFLINE = "offline"
    DEGRADED = "degraded"
    FAILED = "failed"
    REMOVED = "removed"
    PAUSED = "paused"
    HIBERNATING = "hibernating"
    HIBERNATED = "hibernated"
    AWAITING_AGENT = "awaiting_agent"


# A heartbeat or register from the agent brings these back online.
RECOVERABLE_BY_AGENT = frozenset(
    {
        WorkspaceStatus.PROVISIONING,
        WorkspaceStatus.FAILED,
        WorkspaceStatus.AWAITING_AGENT,
        WorkspaceStatus.OFFLINE,
    }
)
