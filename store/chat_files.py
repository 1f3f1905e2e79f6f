"""chat_files rows: what was uploaded where (the bytes are in the object store under `key`)."""

from __future__ import annotations

from typing import Any

import asyncpg


async def insert(
    pool: asyncpg.Pool, file_id: str, workspace_id: str, key: str, name: str, mime_type: str, size: int
) -> None:
    await pool.execute(
        """INSERT INTO chat_files (id, workspace_id, key, name, mime_type, size)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        file_id,
        workspace_id,
        key,
        name,
        mime_type,
        size,
    )


async def find(pool: asyncpg.Pool, workspace_id: str, key: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        "SELECT name, mime_type, size FROM chat_files WHERE workspace_id = $1 AND key = $2", workspace_id, key
    )
    return dict(row) if row else None


async def forget_all(pool: asyncpg.Pool, workspace_id: str) -> int:
    deleted = await pool.fetch("DELETE FROM chat_files WHERE workspace_id = $1 RETURNING id", workspace_id)
    return len(deleted)
