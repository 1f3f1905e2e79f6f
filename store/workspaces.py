"""Queries on the workspaces table. Status values are always bound as parameters."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from domain.status import WorkspaceStatus
from store import events as event_store

PUBLIC_COLUMNS = """
    id::text AS id, name, role, tier, runtime, backend, template, model, parent_id::text AS parent_id,
    status::text AS status, url, agent_card, instance_id, provision_deadline_at, provision_timeout_secs,
    registered_at, last_heartbeat_at, last_error_rate, last_sample_error, active_tasks, uptime_seconds,
    current_task, runtime_state, capabilities, idle_timeout_seconds, max_concurrent_tasks, budget_limit,
    monthly_spend, created_at, updated_at, removed_at
"""


@dataclass(frozen=True)
class NewWorkspace:
    id: str
    name: str
    runtime: str
    backend: str
    status: WorkspaceStatus
    template: str | None = None
    model: str | None = None
    role: str | None = None
    tier: int = 2
    parent_id: str | None = None
    max_concurrent_tasks: int = 1
    budget_limit: int | None = None


async def insert_workspace(conn: asyncpg.Connection, ws: NewWorkspace, env: dict[str, str]) -> None:
    await conn.execute(
        """INSERT INTO workspaces (id, name, runtime, backend, status, template, model, role, tier,
                                   parent_id, max_concurrent_tasks, budget_limit)
           VALUES ($1, $2, $3, $4, $5::workspace_status, $6, $7, $8, $9, $10, $11, $12)""",
        ws.id,
        ws.name,
        ws.runtime,
        ws.backend,
        ws.status.value,
        ws.template,
        ws.model,
        ws.role,
        ws.tier,
        ws.parent_id,
        ws.max_concurrent_tasks,
        ws.budget_limit,
    )
    if env:
        await conn.executemany(
            "INSERT INTO workspace_env (workspace_id, name, value) VALUES ($1, $2, $3)",
            [(ws.id, k, v) for k, v in env.items()],
        )


async def get_workspace(db: asyncpg.Pool | asyncpg.Connection, workspace_id: str) -> dict[str, Any] | None:
    row = await db.fetchrow(f"SELECT {PUBLIC_COLUMNS} FROM workspaces WHERE id = $1", workspace_id)
    return dict(row) if row else None


async def exists(db: asyncpg.Pool | asyncpg.Connection, workspace_id: str) -> bool:
    return bool(await db.fetchval("SELECT 1 FROM workspaces WHERE id = $1", workspace_id))


async def list_workspaces(
    db: asyncpg.Pool, status: WorkspaceStatus | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    rows = await db.fetch(
        f"""SELECT {PUBLIC_COLUMNS} FROM workspaces
            WHERE ($1::workspace_status IS NULL OR status = $1::workspace_status)
            ORDER BY created_at, id LIMIT $2 OFFSET $3""",
        status.value if status else None,
        limit,
        offset,
    )
    return [dict(r) for r in rows]


async def get_env(db: asyncpg.Pool | asyncpg.Connection, workspace_id: str) -> dict[str, str]:
    rows = await db.fetch("SELECT name, value FROM workspace_env WHERE workspace_id = $1", workspace_id)
    return {r["name"]: r["value"] for r in rows}


async def get_env_names(db: asyncpg.Pool | asyncpg.Connection, workspace_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT name FROM workspace_env WHERE workspace_id = $1 ORDER BY name", workspace_id
    )
    return [r["name"] for r in rows]


async def last_heartbeat_at(db: asyncpg.Pool | asyncpg.Connection, workspace_id: str) -> datetime | None:
    return await db.fetchval(  # type: ignore[no-any-return]
        "SELECT last_heartbeat_at FROM workspaces WHERE id = $1", workspace_id
    )


async def set_provisioning_facts(
    db: asyncpg.Pool, workspace_id: str, deadline_at: datetime, timeout_secs: int
) -> None:
    await db.execute(
        """UPDATE workspaces SET provision_deadline_at = $2, provision_timeout_secs = $3, updated_at = now()
           WHERE id = $1""",
        workspace_id,
        deadline_at,
        timeout_secs,
    )


async def set_instance(
    db: asyncpg.Pool | asyncpg.Connection, workspace_id: str, instance_id: str | None
) -> None:
    await db.execute(
        "UPDATE workspaces SET instance_id = $2, updated_at = now() WHERE id = $1", workspace_id, instance_id
    )


async def apply_status_change(
    pool: asyncpg.Pool,
    workspace_id: str,
    status: WorkspaceStatus,
    event_type: str,
    payload: dict[str, Any],
    dedupe_key: str,
    last_sample_error: str | None,
    clear_sample_error: bool,
) -> bool:
    """Row and event in one transaction, NOTIFY on commit. False when this change was already applied."""
    async with pool.acquire() as conn, conn.transaction():
        event = await event_store.insert_event(conn, event_type, workspace_id, payload, dedupe_key)
        if event is None:
            return False
        await conn.execute(
            """UPDATE workspaces
               SET status = $2::workspace_status,
                   last_sample_error = CASE WHEN $4 THEN NULL ELSE COALESCE($3, last_sample_error) END,
                   updated_at = now()
               WHERE id = $1""",
            workspace_id,
            status.value,
            last_sample_error,
            clear_sample_error,
        )
        return True


@dataclass(frozen=True)
class Registration:
    status: WorkspaceStatus
    platform_inbound_secret: str


async def register(
    pool: asyncpg.Pool, workspace_id: str, url: str | None, agent_card: dict[str, Any] | None
) -> Registration | None:
    row = await pool.fetchrow(
        """UPDATE workspaces
           SET url = $2, agent_card = $3, registered_at = now(), platform_inbound_secret = $4,
               updated_at = now()
           WHERE id = $1
           RETURNING status::text AS status, platform_inbound_secret""",
        workspace_id,
        url,
        agent_card,
        secrets.token_urlsafe(32),
    )
    if row is None:
        return None
    return Registration(WorkspaceStatus(row["status"]), row["platform_inbound_secret"])


@dataclass(frozen=True)
class HeartbeatWrite:
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
class HeartbeatOutcome:
    status: WorkspaceStatus
    removed: bool
    first_since_register: bool
    prev_runtime_state: str
    prev_error_rate: float
    prev_current_task: str | None
    prev_active_tasks: int
    capabilities_changed: bool
    capabilities: dict[str, Any]
    platform_inbound_secret: str | None


async def record_heartbeat(
    pool: asyncpg.Pool, workspace_id: str, hb: HeartbeatWrite
) -> HeartbeatOutcome | None:
    """One statement: persist the beat and return what it replaced, so the caller can tell news."""
    row = await pool.fetchrow(
        """WITH prev AS (
               SELECT id, last_heartbeat_at, registered_at, runtime_state, last_error_rate, current_task,
                      active_tasks, capabilities, idle_timeout_seconds
               FROM workspaces WHERE id = $1 FOR UPDATE
           )
           UPDATE workspaces w SET
               last_heartbeat_at = now(),
               last_error_rate = $2,
               last_sample_error = COALESCE($3, w.last_sample_error),
               active_tasks = $4,
               uptime_seconds = $5,
               current_task = $6,
               runtime_state = $7,
               monthly_spend = CASE WHEN $8 > 0 THEN $8 ELSE w.monthly_spend END,
               capabilities = CASE WHEN $11 THEN COALESCE($9, '{}'::jsonb) ELSE w.capabilities END,
               idle_timeout_seconds = CASE WHEN $12 THEN $10 ELSE w.idle_timeout_seconds END,
               updated_at = now()
           FROM prev WHERE w.id = prev.id
           RETURNING w.status::text AS status, w.removed_at,
               prev.last_heartbeat_at IS NULL OR prev.last_heartbeat_at < prev.registered_at AS first_beat,
               prev.runtime_state AS prev_runtime_state, prev.last_error_rate AS prev_error_rate,
               prev.current_task AS prev_current_task, prev.active_tasks AS prev_active_tasks,
               prev.capabilities IS DISTINCT FROM w.capabilities
                 OR prev.idle_timeout_seconds IS DISTINCT FROM w.idle_timeout_seconds AS caps_changed,
               w.capabilities, w.platform_inbound_secret""",
        workspace_id,
        hb.error_rate,
        hb.sample_error,
        hb.active_tasks,
        hb.uptime_seconds,
        hb.current_task,
        hb.runtime_state,
        hb.monthly_spend,
        hb.capabilities,
        hb.idle_timeout_seconds,
        hb.set_capabilities,
        hb.set_idle_timeout,
    )
    if row is None:
        return None
    return HeartbeatOutcome(
        status=WorkspaceStatus(row["status"]),
        removed=row["removed_at"] is not None or row["status"] == WorkspaceStatus.REMOVED,
        first_since_register=bool(row["first_beat"]),
        prev_runtime_state=row["prev_runtime_state"],
        prev_error_rate=row["prev_error_rate"],
        prev_current_task=row["prev_current_task"],
        prev_active_tasks=row["prev_active_tasks"],
        capabilities_changed=bool(row["caps_changed"]),
        capabilities=row["capabilities"] or {},
        platform_inbound_secret=row["platform_inbound_secret"],
    )


async def ensure_inbound_secret(pool: asyncpg.Pool, workspace_id: str) -> str | None:
    return await pool.fetchval(  # type: ignore[no-any-return]
        """UPDATE workspaces SET platform_inbound_secret = COALESCE(platform_inbound_secret, $2)
           WHERE id = $1 RETURNING platform_inbound_secret""",
        workspace_id,
        secrets.token_urlsafe(32),
    )
