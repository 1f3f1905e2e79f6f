"""chat_files rows: what was uploaded where (the bytes are in the object store under `key`)."""

from __future__ import annotations

from typing import Any

import asyncpg

from domain.status import WorkspaceStatus


async def insert(
    pool: asyncpg.Pool, file_id: str, workspace_id: str, key: str, name: str, mime_type: str, size: int
) -> bool:
    """False when the workspace was removed meanwhile (its teardown may have deleted its files)."""
    inserted = await pool.fetchval(
        """INSERT INTO chat_files (id, workspace_id, key, name, mime_type, size)
           SELECT $1, $2, $3, $4, $5, $6 FROM workspaces
           WHERE id = $2 AND status <> $7::workspace_status AND removed_at IS NULL
           RETURNING id""",
        file_id,
        workspace_id,
        key,
        name,
        mime_type,
        size,
        WorkspaceStatus.REMOVED.value,
    )
    return inserted is not None


async def find(pool: asyncpg.Pool, workspace_id: str, key: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        "SELECT name, mime_type, size FROM chat_files WHERE workspace_id = $1 AND key = $2", workspace_id, key
    )
    return dict(row) if row else None


async def forget_all(pool: asyncpg.Pool, workspace_id: str) -> int:
    deleted = await pool.fetch("DELETE FROM chat_files WHERE workspace_id = $1 RETURNING id", workspace_id)
    return len(deleted)
