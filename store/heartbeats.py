"""The heartbeat hot path: one round trip authenticates the token, persists the beat, touches the
token's last_used_at (at most once a minute), and fans the beat out with NOTIFY."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from domain.events import EventType
from domain.status import WorkspaceStatus
from store.events import CHANNEL
from store.tokens import hash_token

_SQL = """
WITH tok AS (
    SELECT t.id AS token_id, t.workspace_id, t.revoked_at IS NOT NULL AS revoked,
           t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute' AS touch_due
    FROM workspace_auth_tokens t WHERE t.token_hash = $1
),
touch AS (
    UPDATE workspace_auth_tokens SET last_used_at = now()
    WHERE id = (SELECT token_id FROM tok WHERE touch_due AND NOT revoked)
    RETURNING 1
),
prev AS (
    SELECT w.id, w.last_heartbeat_at, w.registered_at, w.runtime_state, w.last_error_rate, w.current_task,
           w.active_tasks, w.capabilities, w.idle_timeout_seconds
    FROM workspaces w
    WHERE w.id = $2 AND w.id = (SELECT workspace_id FROM tok WHERE NOT revoked)
      AND w.removed_at IS NULL AND w.status <> $15::workspace_status
    FOR UPDATE
),
upd AS (
    UPDATE workspaces w SET
        last_heartbeat_at = now(),
        last_error_rate = $3,
        last_sample_error = COALESCE($4, w.last_sample_error),
        active_tasks = $5,
        last_active_at = CASE WHEN $5 > 0 THEN now() ELSE w.last_active_at END,
        uptime_seconds = $6,
        current_task = $7,
        runtime_state = $8,
        monthly_spend = CASE WHEN $9 > 0 THEN $9 ELSE w.monthly_spend END,
        capabilities = CASE WHEN $11 THEN COALESCE($10, '{}'::jsonb) ELSE w.capabilities END,
        idle_timeout_seconds = CASE WHEN $13 THEN $12 ELSE w.idle_timeout_seconds END,
        updated_at = now()
    FROM prev WHERE w.id = prev.id
    RETURNING w.id, w.status::text AS status, w.capabilities, w.idle_timeout_seconds,
        w.platform_inbound_secret,
        prev.last_heartbeat_at IS NULL OR prev.last_heartbeat_at < prev.registered_at AS first_beat,
        prev.runtime_state AS prev_runtime_state, prev.last_error_rate AS prev_error_rate,
        prev.capabilities IS DISTINCT FROM w.capabilities
          OR prev.idle_timeout_seconds IS DISTINCT FROM w.idle_timeout_seconds AS caps_changed,
        prev.current_task IS DISTINCT FROM w.current_task
          OR prev.active_tasks <> w.active_tasks AS task_changed
),
notes AS (
    SELECT pg_notify($14, json_build_object(
               'id', NULL, 'event_type', $16::text, 'workspace_id', upd.id,
               'payload', json_build_object('active_tasks', $5::int, 'uptime_seconds', $6::bigint))::text)
    FROM upd
    UNION ALL
    SELECT pg_notify($14, json_build_object(
               'id', NULL, 'event_type', $17::text, 'workspace_id', upd.id,
               'payload', json_build_object('current_task', $7::text, 'active_tasks', $5::int))::text)
    FROM upd WHERE upd.task_changed
)
SELECT tok.workspace_id::text AS token_workspace, tok.revoked,
       (SELECT count(*) FROM notes) AS notified, (SELECT count(*) FROM touch) AS touched,
       upd.status, upd.capabilities, upd.platform_inbound_secret, upd.first_beat, upd.prev_runtime_state,
       upd.prev_error_rate, upd.caps_changed,
       (SELECT w.removed_at IS NOT NULL OR w.status = $15::workspace_status
          FROM workspaces w WHERE w.id = tok.workspace_id) AS workspace_removed
FROM tok LEFT JOIN upd ON true
"""


@dataclass(frozen=True)
class Beat:
    error_rate: float
    sample_error: str | None
    active_tasks: int
    uptime_seconds: int
    current_task: str | None
    runtime_state: str
    monthly_spend: int  # cents; 0 means no update
    set_capabilities: bool = False  # False: keep what is stored
    capabilities: dict[str, Any] | None = None
    set_idle_timeout: bool = False
    idle_timeout_seconds: int | None = None  # None with set_idle_timeout clears the override


@dataclass(frozen=True)
class BeatResult:
    """`verdict`: "ok", "unknown_token" (401), "revoked" (401), "wrong_workspace" (403), "removed" (410)."""

    verdict: str
    token_workspace: str | None = None
    status: WorkspaceStatus | None = None
    first_since_register: bool = False
    prev_runtime_state: str = ""
    prev_error_rate: float = 0.0
    capabilities_changed: bool = False
    capabilities: dict[str, Any] | None = None
    platform_inbound_secret: str | None = None


async def record_beat(pool: asyncpg.Pool, token: str, workspace_id: str, beat: Beat) -> BeatResult:
    row = await pool.fetchrow(
        _SQL,
        hash_token(token),
        workspace_id,
        beat.error_rate,
        beat.sample_error,
        beat.active_tasks,
        beat.uptime_seconds,
        beat.current_task,
        beat.runtime_state,
        beat.monthly_spend,
        beat.capabilities,
        beat.set_capabilities,
        beat.idle_timeout_seconds,
        beat.set_idle_timeout,
        CHANNEL,
        WorkspaceStatus.REMOVED.value,
        EventType.WORKSPACE_HEARTBEAT.value,
        EventType.TASK_UPDATED.value,
    )
    if row is None:
        return BeatResult("unknown_token")
    owner = row["token_workspace"]
    if row["workspace_removed"]:
        return BeatResult("removed", owner)
    if row["revoked"]:
        return BeatResult("revoked", owner)
    if owner != workspace_id:
        return BeatResult("wrong_workspace", owner)
    if row["status"] is None:
        return BeatResult("removed", owner)
    return BeatResult(
        "ok",
        owner,
        WorkspaceStatus(row["status"]),
        bool(row["first_beat"]),
        row["prev_runtime_state"],
        row["prev_error_rate"],
        bool(row["caps_changed"]),
        row["capabilities"] or {},
        row["platform_inbound_secret"],
    )
