"""activity_logs: rows written one workspace at a time, so that ids are in commit order.

A poller reads `since_id` forward and takes the last id it saw as its next cursor. With plain
bigserial ids, a row whose insert committed after a larger id was already read would be skipped for
good; so every writer first takes the workspace's transaction-scoped advisory lock (two-key space 1,
apart from the single-key locks elsewhere), and a workspace's ids are handed out one commit at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from domain.activity import ActivityFilter
from domain.events import EventType
from store import events as event_store

LOCK_SPACE = 1
# Locks for one or two workspaces (a call logs on both ends), always taken in key order, for the
# proxy's one-statement log: each INSERT's `WHERE (SELECT count(*) FROM locks) >= 0` is an
# uncorrelated subquery, which PostgreSQL runs once (an InitPlan) before the first row is formed,
# so before the row's id is drawn. tests/integration/test_agent_side.py checks that plan.
LOCKS_CTE = """locks AS (
    SELECT pg_advisory_xact_lock({space}, k) FROM (
        SELECT DISTINCT hashtext(w::text) AS k FROM unnest({ids}) AS w WHERE w IS NOT NULL ORDER BY 1
    ) ordered
)"""


def locks_cte(ids_sql: str) -> str:
    return LOCKS_CTE.format(space=LOCK_SPACE, ids=ids_sql)


_COLUMNS = (
    "id::text AS id, workspace_id::text AS workspace_id, activity_type, source_id::text AS source_id, "
    "target_id::text AS target_id, method, summary, request_body, response_body, duration_ms, status, "
    "error_detail, tool_trace, created_at"
)


@dataclass(frozen=True)
class NewActivity:
    workspace_id: str
    activity_type: str
    source_id: str | None
    target_id: str | None
    method: str | None
    summary: str | None
    request_body: Any
    response_body: Any
    duration_ms: int | None
    status: str
    error_detail: str | None
    tool_trace: Any
    idempotency_key: str | None


_LOCK = f"SELECT pg_advisory_xact_lock({LOCK_SPACE}, hashtext($1::uuid::text))"
_INSERT = """
INSERT INTO activity_logs (workspace_id, activity_type, source_id, target_id, method, summary,
                           request_body, response_body, duration_ms, status, error_detail, tool_trace,
                           idempotency_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (workspace_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id::text
"""


async def insert(
    pool: asyncpg.Pool, row: NewActivity, event_type: EventType, event: dict[str, Any]
) -> tuple[str, bool]:
    """(the row's id, whether it is new): a repeated idempotency key returns the first row's id. The
    event is written with a new row, in its transaction, and carries the row's id."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_LOCK, row.workspace_id)
        new_id = await conn.fetchval(
            _INSERT,
            row.workspace_id,
            row.activity_type,
            row.source_id,
            row.target_id,
            row.method,
            row.summary,
            row.request_body,
            row.response_body,
            row.duration_ms,
            row.status,
            row.error_detail,
            row.tool_trace,
            row.idempotency_key,
        )
        if new_id is None:
            existing: str = await conn.fetchval(
                "SELECT id::text FROM activity_logs WHERE workspace_id = $1 AND idempotency_key = $2",
                row.workspace_id,
                row.idempotency_key,
            )
            return existing, False
        await event_store.insert_event(conn, event_type, row.workspace_id, event | {"activity_id": new_id})
        return str(new_id), True


async def cursor_exists(pool: asyncpg.Pool, workspace_id: str, since_id: int) -> bool:
    found: bool = await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM activity_logs WHERE workspace_id = $1 AND id = $2)",
        workspace_id,
        since_id,
    )
    return found


async def list_rows(pool: asyncpg.Pool, workspace_id: str, f: ActivityFilter) -> list[dict[str, Any]]:
    """One page of a workspace's rows. With a cursor: the rows after it by id (commit order);
    otherwise the latest ones by time, the id breaking ties, so pages never overlap or skip."""
    where = ["workspace_id = $1"]
    args: list[Any] = [workspace_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if f.activity_type is not None:
        where.append(f"activity_type = {arg(f.activity_type)}")
    if f.source == "canvas":
        where.append("source_id IS NULL")
    elif f.source == "agent":
        where.append("source_id IS NOT NULL")
    if f.since_secs is not None:
        where.append(f"created_at >= now() - make_interval(secs => {arg(f.since_secs)})")
    if f.since_id is not None:
        where.append(f"id > {arg(f.since_id)}")
    if f.peer_id is not None:
        peer = arg(f.peer_id)
        where.append(f"(source_id = {peer}::uuid OR target_id = {peer}::uuid)")
    if f.before is not None:
        where.append(f"created_at < {arg(f.before)}")
    if f.hide_own_notify:
        where.append("method IS DISTINCT FROM 'notify'")
    if f.since_id is not None:
        # The first rows after the cursor (or, descending, the newest ones after it).
        order, latest = ("a.id ASC", False) if f.oldest_first else ("a.id DESC", True)
    elif f.before is None:
        # The latest rows, by id: commit order (created_at is the transaction's start, taken before
        # the lock wait), so the last row served is the poller's right next cursor.
        order, latest = "a.id DESC", True
    else:
        # A page back in time, served in the order asked.
        order, latest = "a.created_at DESC, a.id DESC", True
    # ORDER BY names the table's columns (a.id): a bare `id` would be the output column, the text
    # form, which sorts '10' before '9'.
    sql = (
        f"SELECT {_COLUMNS} FROM activity_logs a WHERE {' AND '.join(where)} "
        f"ORDER BY {order} LIMIT {arg(f.limit)}"
    )
    rows = [dict(r) for r in await pool.fetch(sql, *args)]
    return rows[::-1] if latest and f.oldest_first else rows
