"""structure_events rows and their LISTEN/NOTIFY fan-out."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

CHANNEL = "molecule_events"
# NOTIFY payloads are capped at 8000 bytes; bigger events travel by id and are read back.
_MAX_NOTIFY_BYTES = 7000


def event_dict(
    event_id: int | None,
    event_type: str,
    workspace_id: str | None,
    payload: dict[str, Any],
    created_at: datetime,
) -> dict[str, Any]:
    return {
        "id": event_id,
        "event_type": event_type,
        "workspace_id": workspace_id,
        "payload": payload,
        "created_at": created_at.isoformat(),
    }


async def notify(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    body = json.dumps(event, default=str)
    if len(body.encode()) > _MAX_NOTIFY_BYTES:
        body = json.dumps({k: event[k] for k in ("id", "event_type", "workspace_id")} | {"truncated": True})
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, body)


async def insert_event(
    conn: asyncpg.Connection,
    event_type: str,
    workspace_id: str | None,
    payload: dict[str, Any],
    dedupe_key: str | None = None,
) -> dict[str, Any] | None:
    """Insert and NOTIFY (delivered on commit). None when `dedupe_key` was already written."""
    row = await conn.fetchrow(
        """INSERT INTO structure_events (event_type, workspace_id, payload, dedupe_key)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (dedupe_key) DO NOTHING
           RETURNING id, created_at""",
        event_type,
        workspace_id,
        payload,
        dedupe_key,
    )
    if row is None:
        return None
    event = event_dict(row["id"], event_type, workspace_id, payload, row["created_at"])
    await notify(conn, event)
    return event


async def fetch_event(conn: asyncpg.Connection | asyncpg.Pool, event_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT id, event_type, workspace_id::text AS workspace_id, payload, created_at"
        " FROM structure_events WHERE id = $1",
        event_id,
    )
    if row is None:
        return None
    return event_dict(row["id"], row["event_type"], row["workspace_id"], row["payload"], row["created_at"])


PAGE_SIZE = 1000


async def latest_id(conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str | None) -> int:
    """The highest event id committed so far (0 when there is none), for one workspace or all."""
    value = await conn.fetchval(
        """SELECT COALESCE(max(id), 0) FROM structure_events
           WHERE ($1::uuid IS NULL OR workspace_id = $1::uuid)""",
        workspace_id,
    )
    return int(value)


async def events_after(
    conn: asyncpg.Connection | asyncpg.Pool,
    after_id: int,
    workspace_id: str | None,
    limit: int = PAGE_SIZE,
) -> list[dict[str, Any]]:
    """One page of committed events with a larger id, in id order."""
    rows = await conn.fetch(
        """SELECT id, event_type, workspace_id::text AS workspace_id, payload, created_at
           FROM structure_events
           WHERE id > $1 AND ($2::uuid IS NULL OR workspace_id = $2::uuid)
           ORDER BY id LIMIT $3""",
        after_id,
        workspace_id,
        limit,
    )
    return [
        event_dict(r["id"], r["event_type"], r["workspace_id"], r["payload"], r["created_at"]) for r in rows
    ]
