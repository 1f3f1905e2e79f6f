"""What reconcile reads about the workspaces that own the instances it found."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from domain.status import WorkspaceStatus


@dataclass(frozen=True)
class OwnerRow:
    status: WorkspaceStatus
    instance_id: str | None


async def owner_rows(pool: asyncpg.Pool, workspace_ids: list[str]) -> dict[str, OwnerRow]:
    """Status and recorded instance of each workspace id that has a row (ids must be UUIDs)."""
    rows = await pool.fetch(
        """SELECT id::text AS id, status::text AS status, instance_id
           FROM workspaces WHERE id = ANY($1::uuid[])""",
        workspace_ids,
    )
    return {r["id"]: OwnerRow(WorkspaceStatus(r["status"]), r["instance_id"]) for r in rows}
