"""Delegation rows: one per task a workspace gave another, whichever side reports it."""

from __future__ import annotations

from typing import Any

import asyncpg

from domain.a2a import preview
from domain.events import EventType
from domain.models import DelegationStatus
from store import events as event_store
from store.workspaces import create_lock_key

_COLUMNS = """id::text AS id, source_id::text AS source_id, target_id::text AS target_id, task, status,
    summary, response, error, idempotency_key, queue_id::text AS queue_id, self_reported, created_at,
    updated_at, completed_at"""
TERMINAL = (DelegationStatus.COMPLETED.value, DelegationStatus.FAILED.value)


async def insert(
    conn: asyncpg.Connection,
    delegation_id: str,
    source_id: str,
    target_id: str,
    task: str,
    status: DelegationStatus,
    idempotency_key: str | None,
    *,
    self_reported: bool = False,
) -> dict[str, Any] | None:
    """The new row and its DELEGATION_SENT event; None when (source, key) or the id exists already.
    Holds the row's create lock until the transaction ends (see get_committed)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", create_lock_key(delegation_id))
    row = await conn.fetchrow(
        f"""INSERT INTO delegations (id, source_id, target_id, task, status, summary, idempotency_key,
                                     self_reported)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT DO NOTHING
            RETURNING {_COLUMNS}""",
        delegation_id,
        source_id,
        target_id,
        task,
        status.value,
        preview(f"Delegating to {target_id}"),
        idempotency_key,
        self_reported,
    )
    if row is None:
        return None
    await event_store.insert_event(
        conn,
        EventType.DELEGATION_SENT,
        source_id,
        {"delegation_id": delegation_id, "target_id": target_id, "task_preview": preview(task, 100)},
        f"delegation-sent:{delegation_id}",
    )
    return dict(row)


async def by_key(db: asyncpg.Pool | asyncpg.Connection, source_id: str, key: str) -> dict[str, Any] | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM delegations WHERE source_id = $1 AND idempotency_key = $2", source_id, key
    )
    return dict(row) if row else None


async def release_key(conn: asyncpg.Connection, delegation_id: str) -> None:
    """A failed delegation gives up its idempotency key, so the same request can be tried again (the
    failed row stays, for the record)."""
    await conn.execute("UPDATE delegations SET idempotency_key = NULL WHERE id = $1", delegation_id)


async def get_committed(pool: asyncpg.Pool, delegation_id: str) -> dict[str, Any] | None:
    """The row once the request that inserts it has committed or rolled back: the workflow starts
    inside that transaction (so a failed start leaves no row) and may run before the commit."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL lock_timeout = '10s'")
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", create_lock_key(delegation_id))
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM delegations WHERE id = $1", delegation_id)
    return dict(row) if row else None


async def get(db: asyncpg.Pool | asyncpg.Connection, delegation_id: str) -> dict[str, Any] | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM delegations WHERE id = $1", delegation_id)
    return dict(row) if row else None


async def list_for(db: asyncpg.Pool, workspace_id: str, limit: int) -> list[dict[str, Any]]:
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM delegations WHERE source_id = $1
            ORDER BY created_at DESC, id DESC LIMIT $2""",
        workspace_id,
        limit,
    )
    return [dict(r) for r in rows]


async def set_answer(
    db: asyncpg.Pool | asyncpg.Connection, delegation_id: str, text: str, response: Any
) -> None:
    """Keep the target's answer (its text, and the bounded JSON) for the workflow to finish with."""
    await db.execute(
        "UPDATE delegations SET response = $2, summary = $3, updated_at = now() WHERE id = $1",
        delegation_id,
        {"text": text, "answer": response},
        preview(f"Delegation completed ({text})"),
    )


async def has_answer(db: asyncpg.Pool | asyncpg.Connection, delegation_id: str) -> bool:
    return bool(
        await db.fetchval("SELECT response IS NOT NULL FROM delegations WHERE id = $1", delegation_id)
    )


_EVENTS = {
    DelegationStatus.COMPLETED: EventType.DELEGATION_COMPLETE,
    DelegationStatus.FAILED: EventType.DELEGATION_FAILED,
}
_SUMMARIES = {
    DelegationStatus.QUEUED: "Delegation queued: the target is at capacity",
    DelegationStatus.DISPATCHED: "Delegation dispatched",
    DelegationStatus.IN_PROGRESS: "Delegation in progress",
    DelegationStatus.FAILED: "Delegation failed",
}


async def set_status(
    pool: asyncpg.Pool,
    delegation_id: str,
    status: DelegationStatus,
    error: str | None = None,
    response_preview: str | None = None,
) -> bool:
    """Move the delegation to `status` with its event, once: a finished delegation never changes
    again, and a repeated write (an activity retry) writes no second event. False when nothing moved."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """SELECT source_id::text, target_id::text, status, response FROM delegations
               WHERE id = $1 FOR UPDATE""",
            delegation_id,
        )
        if row is None or row["status"] in TERMINAL or row["status"] == status.value:
            return False
        text = response_preview
        if text is None and isinstance(row["response"], dict):
            text = row["response"].get("text")
        summary = _SUMMARIES.get(status)
        if status == DelegationStatus.COMPLETED:
            summary = preview(f"Delegation completed ({text or ''})")
        if status == DelegationStatus.COMPLETED and response_preview is not None and row["response"] is None:
            await conn.execute(
                "UPDATE delegations SET response = $2 WHERE id = $1",
                delegation_id,
                {"text": response_preview},
            )
        await conn.execute(
            """UPDATE delegations SET status = $2, error = COALESCE($3, error),
                      summary = COALESCE($4, summary), updated_at = now(),
                      completed_at = CASE WHEN $2 IN ('completed', 'failed') THEN now() ELSE completed_at END
               WHERE id = $1""",
            delegation_id,
            status.value,
            error,
            summary,
        )
        payload: dict[str, Any] = {
            "delegation_id": delegation_id,
            "target_id": row["target_id"],
            "status": status.value,
        }
        if status == DelegationStatus.COMPLETED:
            payload["response_preview"] = preview(text or "", 200)
        if error:
            payload["error"] = error
        await event_store.insert_event(
            conn,
            _EVENTS.get(status, EventType.DELEGATION_STATUS),
            row["source_id"],
            payload,
            f"delegation:{delegation_id}:{status.value}",
        )
    return True


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A delegation as the runtime and the SDK read it."""
    response = row.get("response")
    text = response.get("text") if isinstance(response, dict) else None
    item: dict[str, Any] = {
        "delegation_id": row["id"],
        "id": row["id"],
        "type": "delegation",
        "source_id": row["source_id"],
        "target_id": row["target_id"],
        "status": row["status"],
        "summary": row["summary"],
        "task_preview": preview(row["task"], 100),
        "self_reported": row["self_reported"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "completed_at": row["completed_at"].isoformat() if row["completed_at"] else None,
    }
    if text:
        item["response_preview"] = preview(text, 300)
    if row.get("error"):
        item["error"] = row["error"]
    return item
