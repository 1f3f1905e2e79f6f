"""Rescue bundles: redacted evidence of a failed boot, one per workspace generation and verdict."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from domain.redaction import Redactor
from store import secrets as secret_store
from store.keyring import Keyring

log = logging.getLogger("molecule.rescue")


async def insert_bundle(
    pool: asyncpg.Pool, workspace_id: str, generation: int, reason: str, sections: dict[str, str]
) -> bool:
    """False when this generation's bundle for this verdict already exists (an activity retry)."""
    inserted = await pool.fetchval(
        """INSERT INTO rescue_bundles (workspace_id, generation, reason, sections) VALUES ($1, $2, $3, $4)
           ON CONFLICT (workspace_id, generation, reason) DO NOTHING RETURNING id""",
        workspace_id,
        generation,
        reason,
        sections,
    )
    return inserted is not None


async def latest_bundle(pool: asyncpg.Pool, workspace_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        """SELECT workspace_id::text AS workspace_id, generation, reason, sections, created_at
           FROM rescue_bundles WHERE workspace_id = $1 ORDER BY id DESC LIMIT 1""",
        workspace_id,
    )
    return dict(row) if row else None


async def secrets_of(pool: asyncpg.Pool, workspace_id: str, keyring: Keyring) -> tuple[list[str], list[str]]:
    """(secret values, token hashes) of one workspace: what its redactor must never let through. A
    value that cannot be decrypted was never given to the agent, so it cannot leak from it."""
    values, _ = await secret_store.readable_values(pool, keyring, workspace_id)
    hashes = await pool.fetch(
        "SELECT token_hash FROM workspace_auth_tokens WHERE workspace_id = $1", workspace_id
    )
    return list(values.values()), [r["token_hash"] for r in hashes]


async def redactor_for(pool: asyncpg.Pool, workspace_id: str, keyring: Keyring) -> Redactor | None:
    """This workspace's redactor (known secret shapes, its secret values, its tokens), or None when
    its secrets cannot be read: then evidence that might carry one is not kept at all."""
    try:
        values, hashes = await secrets_of(pool, workspace_id, keyring)
    except (OSError, asyncpg.PostgresError) as exc:
        log.error(
            "workspace %s: cannot load its secrets for redaction (%s)", workspace_id, type(exc).__name__
        )
        return None
    return Redactor(values, hashes)
