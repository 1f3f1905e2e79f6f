"""The heartbeat hot path: one statement authenticates each token, persists its beat, touches the
token's last_used_at (at most once a minute), and fans the beat out with NOTIFY, for a batch of beats."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from domain.events import EventType
from domain.status import WorkspaceStatus
from store.events import CHANNEL

_SQL = """
WITH beat AS (
    SELECT * FROM unnest($1::text[], $2::uuid[], $3::float8[], $4::text[], $5::int[], $6::bigint[],
                         $7::text[], $8::text[], $9::bigint[], $10::text[], $11::bool[], $12::int[],
                         $13::bool[])
        WITH ORDINALITY AS b(token_hash, workspace_id, error_rate, sample_error, active_tasks,
                             uptime_seconds, current_task, runtime_state, monthly_spend, capabilities,
                             set_capabilities, idle_timeout_seconds, set_idle_timeout, n)
),
tok AS (
    SELECT b.n, t.id AS token_id, t.workspace_id, t.revoked_at IS NOT NULL AS revoked,
           t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute' AS touch_due
    FROM beat b JOIN workspace_auth_tokens t ON t.token_hash = b.token_hash
),
touch AS (
    -- best effort: a token another batch is touching right now is skipped, never waited for
    UPDATE workspace_auth_tokens SET last_used_at = now()
    WHERE id IN (SELECT t.id FROM workspace_auth_tokens t
                 WHERE t.id IN (SELECT token_id FROM tok WHERE touch_due AND NOT revoked)
                 FOR UPDATE SKIP LOCKED)
    RETURNING 1
),
prev AS (
    -- locked in id order, so concurrent batches never deadlock on each other's rows; NO KEY UPDATE
    -- (no key changes) so a foreign-key check on the row, such as creating a child, does not block it
    SELECT w.id, b.n, w.last_heartbeat_at, w.registered_at, w.runtime_state, w.last_error_rate,
           w.current_task, w.active_tasks, w.capabilities, w.idle_timeout_seconds
    FROM beat b
    JOIN tok ON tok.n = b.n AND NOT tok.revoked AND tok.workspace_id = b.workspace_id
    JOIN workspaces w ON w.id = b.workspace_id
    WHERE w.removed_at IS NULL AND w.status <> $15::workspace_status
    ORDER BY w.id
    FOR NO KEY UPDATE OF w
),
upd AS (
    UPDATE workspaces w SET
        last_heartbeat_at = now(),
        last_error_rate = b.error_rate,
        last_sample_error = COALESCE(b.sample_error, w.last_sample_error),
        active_tasks = b.active_tasks,
        last_active_at = CASE WHEN b.active_tasks > 0 THEN now() ELSE w.last_active_at END,
        uptime_seconds = b.uptime_seconds,
        current_task = b.current_task,
        runtime_state = b.runtime_state,
        monthly_spend = CASE WHEN b.monthly_spend > 0 THEN b.monthly_spend ELSE w.monthly_spend END,
        capabilities = CASE WHEN b.set_capabilities THEN COALESCE(b.capabilities::jsonb, '{}'::jsonb)
                            ELSE w.capabilities END,
        idle_timeout_seconds = CASE WHEN b.set_idle_timeout THEN b.idle_timeout_seconds
                                    ELSE w.idle_timeout_seconds END,
        updated_at = now()
    FROM prev JOIN beat b ON b.n = prev.n
    WHERE w.id = prev.id
    RETURNING prev.n, w.id, w.status::text AS status, w.capabilities, w.platform_inbound_secret,
        prev.last_heartbeat_at IS NULL OR prev.last_heartbeat_at < prev.registered_at AS first_beat,
        prev.runtime_state AS prev_runtime_state, prev.last_error_rate AS prev_error_rate,
        prev.capabilities IS DISTINCT FROM w.capabilities
          OR prev.idle_timeout_seconds IS DISTINCT FROM w.idle_timeout_seconds AS caps_changed,
        prev.current_task IS DISTINCT FROM w.current_task
          OR prev.active_tasks <> w.active_tasks AS task_changed,
        w.current_task, w.active_tasks, w.uptime_seconds, w.max_concurrent_tasks,
        -- spare capacity while messages wait: news for the workflow, which drains the queue
        w.active_tasks < w.max_concurrent_tasks
          AND EXISTS (SELECT 1 FROM a2a_queue q
                      WHERE q.workspace_id = w.id AND q.status = 'queued' AND q.expires_at > now())
          AS drain_possible
),
notes AS (
    SELECT pg_notify($14, json_build_object(
               'id', NULL, 'event_type', $16::text, 'workspace_id', upd.id,
               'payload', json_build_object('active_tasks', upd.active_tasks,
                                            'uptime_seconds', upd.uptime_seconds))::text)
    FROM upd
    UNION ALL
    SELECT pg_notify($14, json_build_object(
               'id', NULL, 'event_type', $17::text, 'workspace_id', upd.id,
               -- NOTIFY payloads are capped at 8000 bytes; the row keeps the whole task
               'payload', json_build_object('current_task', left(upd.current_task, 1000),
                                            'active_tasks', upd.active_tasks))::text)
    FROM upd WHERE upd.task_changed
)
SELECT b.n, tok.workspace_id::text AS token_workspace, tok.revoked, tok.token_id,
       upd.status, upd.capabilities, upd.platform_inbound_secret, upd.first_beat, upd.prev_runtime_state,
       upd.prev_error_rate, upd.caps_changed, upd.max_concurrent_tasks, upd.drain_possible,
       (SELECT w.removed_at IS NOT NULL OR w.status = $15::workspace_status
          FROM workspaces w WHERE w.id = tok.workspace_id) AS workspace_removed,
       (SELECT count(*) FROM notes) AS notified, (SELECT count(*) FROM touch) AS touched
FROM beat b LEFT JOIN tok ON tok.n = b.n LEFT JOIN upd ON upd.n = b.n
ORDER BY b.n
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
    token_id: int | None = None  # which token the beat came with (the workflow fences old instances by it)
    drain_capacity: int = 0  # > 0: messages wait in the queue and the agent has this much room


@dataclass(frozen=True)
class PendingBeat:
    token_hash: str
    workspace_id: str
    beat: Beat


async def record_beats(conn: asyncpg.Connection, pending: Sequence[PendingBeat]) -> list[BeatResult]:
    """Persist a batch of beats in one statement; one result per beat, in order.

    Each workspace may appear at most once in a batch: an UPDATE writes a row once per statement.
    """
    beats = [p.beat for p in pending]
    rows = await conn.fetch(
        _SQL,
        [p.token_hash for p in pending],
        [p.workspace_id for p in pending],
        [b.error_rate for b in beats],
        [b.sample_error for b in beats],
        [b.active_tasks for b in beats],
        [b.uptime_seconds for b in beats],
        [b.current_task for b in beats],
        [b.runtime_state for b in beats],
        [b.monthly_spend for b in beats],
        [None if b.capabilities is None else json.dumps(b.capabilities) for b in beats],
        [b.set_capabilities for b in beats],
        [b.idle_timeout_seconds for b in beats],
        [b.set_idle_timeout for b in beats],
        CHANNEL,
        WorkspaceStatus.REMOVED.value,
        EventType.WORKSPACE_HEARTBEAT.value,
        EventType.TASK_UPDATED.value,
    )
    return [_verdict(row, p.workspace_id, p.beat.active_tasks) for row, p in zip(rows, pending, strict=True)]


def _verdict(row: asyncpg.Record, workspace_id: str, beat_active: int) -> BeatResult:
    owner = row["token_workspace"]
    if owner is None:
        return BeatResult("unknown_token")
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
        row["token_id"],
        max(0, row["max_concurrent_tasks"] - beat_active) if row["drain_possible"] else 0,
    )
