"""Who a workspace sees: its peers (siblings, children, parent) and the facts access checks need.
Status values are always bound as parameters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from domain import access
from domain.status import WorkspaceStatus

# One branch per kind of peer, each able to use an index (the primary key or parent_id); `me` is the
# caller, live or not (its own state is the route's business). Root-level workspaces are siblings of
# each other, so "same parent" for a root is "no parent".
_PEERS = """
WITH me AS (SELECT id, parent_id FROM workspaces WHERE id = $1),
peers AS (
    SELECT w.*, 0 AS kind FROM workspaces w, me
    WHERE me.parent_id IS NOT NULL AND w.parent_id = me.parent_id AND w.id <> me.id
    UNION ALL
    SELECT w.*, 0 AS kind FROM workspaces w, me
    WHERE me.parent_id IS NULL AND w.parent_id IS NULL AND w.id <> me.id
    UNION ALL
    SELECT w.*, 1 AS kind FROM workspaces w, me WHERE w.parent_id = me.id
    UNION ALL
    SELECT w.*, 2 AS kind FROM workspaces w, me WHERE w.id = me.parent_id
)
SELECT id::text AS id, name, NULLIF(role, '') AS role, tier, status::text AS status,
       COALESCE(url, '') AS url, parent_id::text AS parent_id, active_tasks, agent_card
FROM peers
WHERE status <> $2::workspace_status AND removed_at IS NULL
ORDER BY kind, name, id
"""


async def list_peers(db: asyncpg.Pool | asyncpg.Connection, workspace_id: str) -> list[dict[str, Any]]:
    """The workspace's live siblings, then its live children, then its parent if live; by name, id
    within each. Empty for an unknown workspace."""
    rows = await db.fetch(_PEERS, workspace_id, WorkspaceStatus.REMOVED.value)
    return [dict(r) for r in rows]


def matches(peer: dict[str, Any], query: str) -> bool:
    """Whether `query` is a case-insensitive substring of the peer's name or role (a peer without a
    role is matched on its name). Done here rather than in SQL: the database may run with the C
    locale, where lower() folds ASCII letters only."""
    needle = query.casefold()
    return needle in (peer.get("name") or "").casefold() or needle in (peer.get("role") or "").casefold()


@dataclass(frozen=True)
class WorkspaceFacts:
    """What discovery needs of a workspace."""

    id: str
    name: str
    parent_id: str | None
    status: str
    url: str | None
    removed_at: datetime | None

    @property
    def removed(self) -> bool:
        return self.status == WorkspaceStatus.REMOVED or self.removed_at is not None

    def node(self) -> access.Node:
        return access.Node(self.id, self.parent_id)


async def facts(db: asyncpg.Pool | asyncpg.Connection, *workspace_ids: str) -> dict[str, WorkspaceFacts]:
    """The workspaces among `workspace_ids` that exist (removed ones included), by id."""
    rows = await db.fetch(
        """SELECT id::text AS id, name, parent_id::text AS parent_id, status::text AS status, url,
                  removed_at
           FROM workspaces WHERE id = ANY($1::uuid[])""",
        list(workspace_ids),
    )
    return {r["id"]: WorkspaceFacts(**dict(r)) for r in rows}
