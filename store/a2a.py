"""Queries of agent-to-agent traffic: who calls whom, the busy queue, and the call log."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from domain.a2a import QUEUE_MAX_ATTEMPTS
from domain.events import EventType
from domain.status import WorkspaceStatus
from store import events as event_store
from store.activity import locks_cte


@dataclass(frozen=True)
class Party:
    """A workspace at either end of a call."""

    id: str
    parent_id: str | None
    name: str
    status: WorkspaceStatus
    url: str | None
    capabilities: dict[str, Any]
    idle_timeout_seconds: int | None
    removed: bool
    backend: str = ""
    delivery_mode: str = "push"  # poll: no URL; calls wait in its inbox (a2a_receive rows)


@dataclass(frozen=True)
class CallRows:
    token_id: int | None  # None: no such token
    token_revoked: bool
    caller: Party | None  # the token's workspace
    target: Party | None


_PARTY = """{p}.id::text AS {p}_id, {p}.parent_id::text AS {p}_parent, {p}.name AS {p}_name,
    {p}.status::text AS {p}_status, {p}.url AS {p}_url, {p}.capabilities AS {p}_caps,
    {p}.idle_timeout_seconds AS {p}_idle, {p}.removed_at IS NOT NULL AS {p}_removed,
    {p}.backend AS {p}_backend, {p}.delivery_mode AS {p}_delivery"""

_CALL_ROWS = f"""
SELECT tok.id AS token_id, tok.revoked_at IS NOT NULL AS token_revoked,
       {_PARTY.format(p="c")}, {_PARTY.format(p="t")}
FROM (SELECT 1) AS one
LEFT JOIN workspace_auth_tokens tok ON tok.token_hash = $1
LEFT JOIN workspaces c ON c.id = tok.workspace_id
LEFT JOIN workspaces t ON t.id = $2
"""


def _party(row: asyncpg.Record, p: str) -> Party | None:
    if row[f"{p}_id"] is None:
        return None
    status = WorkspaceStatus(row[f"{p}_status"])
    return Party(
        row[f"{p}_id"],
        row[f"{p}_parent"],
        row[f"{p}_name"],
        status,
        row[f"{p}_url"],
        row[f"{p}_caps"] or {},
        row[f"{p}_idle"],
        bool(row[f"{p}_removed"]) or status == WorkspaceStatus.REMOVED,
        row[f"{p}_backend"],
        row[f"{p}_delivery"],
    )


async def call_rows(
    db: asyncpg.Pool | asyncpg.Connection, token_hash: str | None, target_id: str
) -> CallRows:
    """The caller's token and workspace and the target's row, in one round trip."""
    row = await db.fetchrow(_CALL_ROWS, token_hash, target_id)
    assert row is not None
    return CallRows(row["token_id"], bool(row["token_revoked"]), _party(row, "c"), _party(row, "t"))


async def party(db: asyncpg.Pool | asyncpg.Connection, workspace_id: str) -> Party | None:
    row = await db.fetchrow(f"SELECT {_PARTY.format(p='t')} FROM workspaces t WHERE t.id = $1", workspace_id)
    return _party(row, "t") if row else None


# --- the busy queue -----------------------------------------------------------------------------


_ENQUEUE = """
INSERT INTO a2a_queue (id, workspace_id, caller_id, priority, method, body, idempotency_key, delegation_id,
                       expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9))
ON CONFLICT (workspace_id, (COALESCE(caller_id::text, '')), idempotency_key)
    WHERE idempotency_key IS NOT NULL AND status IN ('queued', 'dispatched')
    DO NOTHING
RETURNING id::text
"""
_LIVE_ENTRY = """
SELECT id::text FROM a2a_queue
WHERE workspace_id = $1 AND COALESCE(caller_id::text, '') = COALESCE($2::text, '')
  AND idempotency_key = $3 AND status IN ('queued', 'dispatched')
"""


@dataclass(frozen=True)
class Enqueued:
    queue_id: str
    depth: int


async def enqueue(
    pool: asyncpg.Pool,
    *,
    workspace_id: str,
    caller_id: str | None,
    method: str,
    body: dict[str, Any],
    idempotency_key: str | None,
    priority: int,
    ttl_seconds: int,
    delegation_id: str | None = None,
) -> Enqueued:
    """One live entry per (workspace, caller, idempotency key): the same message twice is the first
    entry while it waits or is being sent."""
    async with pool.acquire() as conn, conn.transaction():
        for _ in range(2):  # the live entry it collided with may have just finished: then insert
            queue_id = await conn.fetchval(
                _ENQUEUE,
                str(uuid.uuid4()),
                workspace_id,
                caller_id,
                priority,
                method,
                body,
                idempotency_key,
                delegation_id,
                float(ttl_seconds),
            )
            if queue_id is not None:
                break
            queue_id = await conn.fetchval(_LIVE_ENTRY, workspace_id, caller_id, idempotency_key)
            if queue_id is not None:
                break
        if queue_id is None:
            raise asyncpg.UniqueViolationError("the queue entry kept changing under the enqueue")
        depth = await conn.fetchval(
            "SELECT count(*) FROM a2a_queue WHERE workspace_id = $1 AND status = 'queued'", workspace_id
        )
    return Enqueued(str(queue_id), int(depth))


@dataclass(frozen=True)
class QueueEntry:
    id: str
    caller_id: str | None
    method: str
    body: dict[str, Any]
    delegation_id: str | None
    attempts: int


async def claim(
    pool: asyncpg.Pool, workspace_id: str, limit: int, claimant: str, lease_seconds: int
) -> list[QueueEntry]:
    """Mark up to `limit` entries dispatched, highest priority then oldest first. SKIP LOCKED: two
    drains never take one entry. An entry this claimant took before (its activity was retried after
    a worker died) is taken again, and so is one whose drain vanished longer than the lease ago."""
    rows = await pool.fetch(
        """UPDATE a2a_queue q SET status = 'dispatched', attempts = q.attempts + 1, claimed_by = $3,
                                  updated_at = now()
           FROM (SELECT id FROM a2a_queue
                 WHERE workspace_id = $1 AND expires_at > now()
                   AND (status = 'queued'
                        OR (status = 'dispatched'
                            AND (claimed_by = $3 OR updated_at < now() - make_interval(secs => $4))))
                 ORDER BY priority DESC, created_at, id
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED) AS pick
           WHERE q.id = pick.id
           RETURNING q.id::text, q.caller_id::text, q.method, q.body, q.delegation_id::text, q.attempts,
                     q.priority, q.created_at""",
        workspace_id,
        limit,
        claimant,
        float(lease_seconds),
    )
    ordered = sorted(rows, key=lambda r: (-r["priority"], r["created_at"], r["id"]))
    return [
        QueueEntry(r["id"], r["caller_id"], r["method"], r["body"], r["delegation_id"], r["attempts"])
        for r in ordered
    ]


async def complete(pool: asyncpg.Pool, queue_id: str) -> None:
    await pool.execute(
        "UPDATE a2a_queue SET status = 'completed', last_error = NULL, updated_at = now() WHERE id = $1",
        queue_id,
    )


async def retry_later(pool: asyncpg.Pool, queue_id: str, error: str) -> bool:
    """Back to the queue for the next heartbeat with capacity; True when its attempts are used up
    and it failed for good instead (with an event)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """UPDATE a2a_queue
               SET status = CASE WHEN attempts >= $3 THEN 'failed' ELSE 'queued' END,
                   last_error = $2, claimed_by = NULL, updated_at = now()
               WHERE id = $1
               RETURNING status, workspace_id::text, attempts, delegation_id::text, method""",
            queue_id,
            error,
            QUEUE_MAX_ATTEMPTS,
        )
        if row is None or row["status"] != "failed":
            return False
        await event_store.insert_event(
            conn,
            EventType.A2A_QUEUE_FAILED,
            row["workspace_id"],
            {
                "queue_id": queue_id,
                "attempts": row["attempts"],
                "method": row["method"],
                "delegation_id": row["delegation_id"],
                "error": error,
            },
            f"a2a-queue-failed:{queue_id}",
        )
    return True


async def drop_stale(
    pool: asyncpg.Pool, workspace_id: str | None, max_age_minutes: int | None
) -> list[tuple[str, str | None]]:
    """Drop queued entries past their expiry (or older than `max_age_minutes`); (id, delegation id)
    of each one dropped."""
    rows = await pool.fetch(
        """UPDATE a2a_queue q SET status = 'dropped', claimed_by = NULL, updated_at = now(),
                  last_error = 'dropped as stale'
           FROM (SELECT id FROM a2a_queue
                 WHERE status = 'queued' AND ($1::uuid IS NULL OR workspace_id = $1::uuid)
                   AND (expires_at <= now()
                        OR ($2::int IS NOT NULL AND created_at < now() - make_interval(mins => $2::int)))
                 FOR UPDATE SKIP LOCKED) AS stale
           WHERE q.id = stale.id
           RETURNING q.id::text, q.delegation_id::text""",
        workspace_id,
        max_age_minutes,
    )
    return [(r["id"], r["delegation_id"]) for r in rows]


async def queue_counts(db: asyncpg.Pool | asyncpg.Connection, workspace_id: str) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT status, count(*) AS n FROM a2a_queue WHERE workspace_id = $1 GROUP BY status", workspace_id
    )
    return {r["status"]: int(r["n"]) for r in rows}


# --- the call log -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallRecord:
    """One call through the proxy, written as the caller's a2a_send and the target's a2a_receive."""

    source_id: str | None  # None: the operator
    target_id: str
    method: str
    summary: str
    request_body: Any
    response_body: Any
    duration_ms: int
    status: str  # ok | error | timeout
    error_detail: str | None
    http_status: int
    queued: bool = False
    queue_id: str | None = None
    inboxed: bool = False  # a poll-mode target: the a2a_receive row is the delivery


# The rows and the event in one statement (one round trip, atomic): the a2a_receive row, the
# a2a_send row when a workspace called another, the A2A_RESPONSE event and its NOTIFY. Both
# workspaces' activity locks come first (store.activity: ids in commit order).
_LOG_CALL = f"""
WITH {locks_cte("ARRAY[$1::uuid, $2::uuid]")},
receive AS (
    INSERT INTO activity_logs (workspace_id, activity_type, source_id, target_id, method, summary,
                               request_body, response_body, duration_ms, status, error_detail)
    SELECT $2, 'a2a_receive', $1, $2, $3, $4, $5, $6, $7, $8, $9
    WHERE (SELECT count(*) FROM locks) >= 0
    RETURNING id
),
send AS (
    INSERT INTO activity_logs (workspace_id, activity_type, source_id, target_id, method, summary,
                               request_body, response_body, duration_ms, status, error_detail)
    SELECT $1, 'a2a_send', $1, $2, $3, $4, $5, $6, $7, $8, $9
    WHERE $1::uuid IS NOT NULL AND $1::uuid <> $2::uuid AND (SELECT count(*) FROM locks) >= 0
    RETURNING id
),
event AS (
    INSERT INTO structure_events (event_type, workspace_id, payload)
    SELECT $10, $2, $11::jsonb || jsonb_build_object('activity_id', receive.id) FROM receive
    RETURNING id, event_type, workspace_id, payload, created_at
)
SELECT (SELECT id::text FROM receive) AS activity_id,
       pg_notify($12, json_build_object('id', id, 'event_type', event_type, 'workspace_id', workspace_id,
                                        'payload', payload, 'created_at', created_at)::text),
       (SELECT count(*) FROM send) AS sent
FROM event
"""


async def log_call(pool: asyncpg.Pool, call: CallRecord) -> str:
    """The log rows and the A2A_RESPONSE event, in one statement; the a2a_receive row's id."""
    activity_id: str = await pool.fetchval(
        _LOG_CALL,
        call.source_id,
        call.target_id,
        call.method,
        call.summary,
        call.request_body,
        call.response_body,
        call.duration_ms,
        call.status,
        call.error_detail,
        EventType.A2A_RESPONSE.value,
        {
            "source_id": call.source_id,
            "target_id": call.target_id,
            "method": call.method,
            "status": call.status,
            "http_status": call.http_status,
            "duration_ms": call.duration_ms,
            "queued": call.queued,
            "queue_id": call.queue_id,
            "inboxed": call.inboxed,
            "error": call.error_detail,
        },
        event_store.CHANNEL,
    )
    return activity_id


async def drop_for_delegation(pool: asyncpg.Pool, delegation_id: str) -> None:
    """A delegation that ended (timed out) takes its queued message back: never delivered late."""
    await pool.execute(
        """UPDATE a2a_queue SET status = 'dropped', last_error = 'its delegation ended', updated_at = now()
           WHERE delegation_id = $1 AND status = 'queued'""",
        delegation_id,
    )
