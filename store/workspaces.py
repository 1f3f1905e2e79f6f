"""Queries on the workspaces table. Status values are always bound as parameters."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from domain.lifecycle import launch_superseded
from domain.status import WorkspaceStatus
from store import events as event_store
from store import tokens

PUBLIC_COLUMNS = """
    id::text AS id, name, role, tier, runtime, backend, template, model, parent_id::text AS parent_id,
    status::text AS status, url, agent_card, instance_id, provision_deadline_at, provision_timeout_secs,
    registered_at, last_heartbeat_at, last_error_rate, last_sample_error, active_tasks, uptime_seconds,
    current_task, runtime_state, capabilities, idle_timeout_seconds, max_concurrent_tasks, budget_limit,
    monthly_spend, created_at, updated_at, removed_at, teardown, hibernation_idle_minutes
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
    hibernation_idle_minutes: int = 0


def create_lock_key(row_id: str) -> int:
    """A row's advisory-lock key while its create commits: its UUID's first 8 bytes as a signed bigint."""
    return int.from_bytes(uuid.UUID(row_id).bytes[:8], "big", signed=True)


async def hold_create_lock(conn: asyncpg.Connection, workspace_id: str) -> None:
    """Inside the create's transaction, before its workflow starts: held until commit or rollback."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", create_lock_key(workspace_id))


async def row_committed(pool: asyncpg.Pool, workspace_id: str) -> bool:
    """Whether the workspace's row exists, once the create that inserts it has committed or rolled
    back: a workflow that runs before its create's commit waits for it instead of polling."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL lock_timeout = '10s'")
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", create_lock_key(workspace_id))
        return bool(await conn.fetchval("SELECT 1 FROM workspaces WHERE id = $1", workspace_id))


async def lock_live_parent(conn: asyncpg.Connection, parent_id: str) -> bool:
    """Inside the create's transaction: whether the parent exists and is not removed, holding it so a
    delete cannot remove it before the child commits (then the delete's cascade sees the child)."""
    # KEY SHARE: it waits for a removal (which locks the row FOR UPDATE) and then sees it, yet never
    # blocks the parent's heartbeats (FOR NO KEY UPDATE).
    status = await conn.fetchval("SELECT status::text FROM workspaces WHERE id = $1 FOR KEY SHARE", parent_id)
    return status is not None and status != WorkspaceStatus.REMOVED


async def insert_workspace(conn: asyncpg.Connection, ws: NewWorkspace) -> datetime:
    """Insert the row; its created_at. (Its env goes in as secrets: store/secrets.py.)"""
    created_at: datetime = await conn.fetchval(
        """INSERT INTO workspaces (id, name, runtime, backend, status, template, model, role, tier,
                                   parent_id, max_concurrent_tasks, budget_limit, hibernation_idle_minutes)
           VALUES ($1, $2, $3, $4, $5::workspace_status, $6, $7, $8, $9, $10, $11, $12, $13)
           RETURNING created_at""",
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
        ws.hibernation_idle_minutes,
    )
    return created_at


async def get_workspace(db: asyncpg.Pool | asyncpg.Connection, workspace_id: str) -> dict[str, Any] | None:
    row = await db.fetchrow(f"SELECT {PUBLIC_COLUMNS} FROM workspaces WHERE id = $1", workspace_id)
    return dict(row) if row else None


async def backend_of(db: asyncpg.Pool | asyncpg.Connection, workspace_id: str) -> str | None:
    return await db.fetchval("SELECT backend FROM workspaces WHERE id = $1", workspace_id)  # type: ignore[no-any-return]


async def exists(db: asyncpg.Pool | asyncpg.Connection, workspace_id: str) -> bool:
    return bool(await db.fetchval("SELECT 1 FROM workspaces WHERE id = $1", workspace_id))


async def name_and_status(
    db: asyncpg.Pool | asyncpg.Connection, workspace_id: str
) -> tuple[str, WorkspaceStatus] | None:
    row = await db.fetchrow("SELECT name, status::text AS status FROM workspaces WHERE id = $1", workspace_id)
    return (row["name"], WorkspaceStatus(row["status"])) if row else None


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
    *,
    seq: int | None = None,
    generation: int | None = None,
) -> bool:
    """Row and event in one transaction, NOTIFY on commit. False when this change was already applied,
    when it is not newer than the row's last write (`seq`: the workflow's transition sequence; None
    only for a removal the API applies for a workflow that is gone), or when it would move a removed
    workspace: removed is final, whatever arrives late."""
    async with pool.acquire() as conn, conn.transaction():
        current = await conn.fetchrow(
            "SELECT status::text AS status, status_seq FROM workspaces WHERE id = $1 FOR UPDATE", workspace_id
        )
        if current is None:
            return False
        if current["status"] == WorkspaceStatus.REMOVED:
            return False  # removed is final (and removing it again changes nothing)
        if seq is not None and seq <= current["status_seq"]:
            return False
        event = await event_store.insert_event(conn, event_type, workspace_id, payload, dedupe_key)
        if event is None:
            return False
        removed = status == WorkspaceStatus.REMOVED
        await conn.execute(
            """UPDATE workspaces
               SET status = $2::workspace_status,
                   last_sample_error = CASE WHEN $4 THEN NULL ELSE COALESCE($3, last_sample_error) END,
                   removed_at = CASE WHEN $5 THEN COALESCE(removed_at, now()) ELSE removed_at END,
                   teardown = CASE WHEN $5 THEN COALESCE(teardown, '{"complete": false}'::jsonb)
                              ELSE teardown END,
                   status_seq = COALESCE($6, status_seq),
                   generation = GREATEST(generation, COALESCE($7, generation)),
                   updated_at = now()
               WHERE id = $1""",
            workspace_id,
            status.value,
            last_sample_error,
            clear_sample_error,
            removed,
            seq,
            generation,
        )
        if removed:
            await conn.execute(
                """UPDATE workspace_auth_tokens SET revoked_at = now()
                   WHERE workspace_id = $1 AND revoked_at IS NULL""",
                workspace_id,
            )
        elif generation is not None:
            # A new generation: the old instance's beats must not pass for the new one's.
            await tokens.revoke_instance_tokens(conn, workspace_id)
        return True


async def mint_for_generation(
    pool: asyncpg.Pool, workspace_id: str, generation: int
) -> tuple[str, int] | None:
    """The instance token for a launch of `generation`, minted under the row's lock so it cannot
    interleave with a status write that supersedes it; None (and no token) when already superseded."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT status::text AS status, generation FROM workspaces WHERE id = $1 FOR NO KEY UPDATE",
            workspace_id,
        )
        if row is None or launch_superseded(WorkspaceStatus(row["status"]), row["generation"], generation):
            return None
        return await tokens.replace_instance_token(conn, workspace_id)


async def launch_fence(db: asyncpg.Pool, workspace_id: str) -> tuple[WorkspaceStatus, int] | None:
    """(status, generation) a start checks before and after it launches; None when the row is gone."""
    row = await db.fetchrow(
        "SELECT status::text AS status, generation FROM workspaces WHERE id = $1", workspace_id
    )
    return (WorkspaceStatus(row["status"]), row["generation"]) if row else None


async def record_teardown(pool: asyncpg.Pool, workspace_id: str, teardown: dict[str, Any]) -> None:
    await pool.execute(
        "UPDATE workspaces SET teardown = $2, updated_at = now() WHERE id = $1", workspace_id, teardown
    )


async def idleness(db: asyncpg.Pool, workspace_id: str) -> tuple[datetime | None, int]:
    """(last activity: a beat with active tasks, or the register; active tasks now)."""
    row = await db.fetchrow(
        """SELECT GREATEST(last_active_at, registered_at) AS last_active, active_tasks
           FROM workspaces WHERE id = $1""",
        workspace_id,
    )
    return (row["last_active"], row["active_tasks"]) if row else (None, 0)


async def descendants(db: asyncpg.Pool | asyncpg.Connection, workspace_id: str) -> list[dict[str, Any]]:
    """Every workspace below this one (children, grandchildren …), nearest first, removed ones included."""
    rows = await db.fetch(
        """WITH RECURSIVE tree AS (
               SELECT id, status, backend, 1 AS depth FROM workspaces WHERE parent_id = $1
               UNION ALL
               SELECT w.id, w.status, w.backend, tree.depth + 1
               FROM workspaces w JOIN tree ON w.parent_id = tree.id
           )
           SELECT id::text AS id, status::text AS status, backend, depth FROM tree ORDER BY depth, id""",
        workspace_id,
    )
    return [dict(r) for r in rows]


async def register(
    pool: asyncpg.Pool,
    workspace_id: str,
    url: str | None,
    agent_card: dict[str, Any] | None,
    delivery_mode: str | None = None,
) -> str | None:
    """Record the agent's URL, card and delivery mode (kept when not sent); its
    platform_inbound_secret is the stored one, minted only when there is none yet (None: no such row)."""
    return await pool.fetchval(  # type: ignore[no-any-return]
        """UPDATE workspaces
           SET url = $2, agent_card = $3, registered_at = now(),
               platform_inbound_secret = COALESCE(platform_inbound_secret, $4),
               delivery_mode = COALESCE($5, delivery_mode),
               last_active_at = now(), updated_at = now()
           WHERE id = $1
           RETURNING platform_inbound_secret""",
        workspace_id,
        url,
        agent_card,
        secrets.token_urlsafe(32),
        delivery_mode,
    )


async def ensure_inbound_secret(pool: asyncpg.Pool, workspace_id: str) -> str | None:
    return await pool.fetchval(  # type: ignore[no-any-return]
        """UPDATE workspaces SET platform_inbound_secret = COALESCE(platform_inbound_secret, $2)
           WHERE id = $1 RETURNING platform_inbound_secret""",
        workspace_id,
        secrets.token_urlsafe(32),
    )
