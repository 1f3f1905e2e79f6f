"""Workspace bearer tokens: 32 random bytes, base64url; only the sha256 and an 8-char prefix are stored."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass

import asyncpg

from domain.status import WorkspaceStatus


@dataclass(frozen=True)
class MintedToken:
    token: str
    token_hash: str
    prefix: str


def mint_token() -> MintedToken:
    token = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return MintedToken(token, hash_token(token), token[:8])


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def insert_token(conn: asyncpg.Connection, workspace_id: str, minted: MintedToken, kind: str) -> int:
    """The new token's id."""
    token_id: int = await conn.fetchval(
        """INSERT INTO workspace_auth_tokens (workspace_id, token_hash, prefix, kind)
           VALUES ($1, $2, $3, $4) RETURNING id""",
        workspace_id,
        minted.token_hash,
        minted.prefix,
        kind,
    )
    return token_id


async def revoke_instance_tokens(conn: asyncpg.Connection, workspace_id: str) -> None:
    await conn.execute(
        """UPDATE workspace_auth_tokens SET revoked_at = now()
           WHERE workspace_id = $1 AND kind = 'instance' AND revoked_at IS NULL""",
        workspace_id,
    )


async def replace_instance_token(conn: asyncpg.Connection, workspace_id: str) -> tuple[str, int]:
    """Revoke the previous instance token and mint the one handed to a new instance: (token, its id)."""
    minted = mint_token()
    async with conn.transaction():
        await revoke_instance_tokens(conn, workspace_id)
        token_id = await insert_token(conn, workspace_id, minted, "instance")
    return minted.token, token_id


@dataclass(frozen=True)
class TokenOwner:
    token_id: int
    workspace_id: str
    workspace_removed: bool = False


async def authenticate(pool: asyncpg.Pool, token: str) -> TokenOwner | None:
    """The token's workspace; None for an unknown or revoked token, unless its workspace was
    removed (delete revokes tokens): that agent is told its workspace is gone rather than 401."""
    row = await pool.fetchrow(
        """SELECT t.id, t.workspace_id::text AS workspace_id, t.revoked_at IS NOT NULL AS revoked,
                  w.removed_at IS NOT NULL OR w.status = $2::workspace_status AS removed,
                  t.last_used_at < now() - interval '1 minute' OR t.last_used_at IS NULL AS stale
           FROM workspace_auth_tokens t JOIN workspaces w ON w.id = t.workspace_id
           WHERE t.token_hash = $1""",
        hash_token(token),
        WorkspaceStatus.REMOVED.value,
    )
    if row is None:
        return None
    if row["removed"]:
        return TokenOwner(row["id"], row["workspace_id"], workspace_removed=True)
    if row["revoked"]:
        return None
    if row["stale"]:
        # At most one write a minute per token: heartbeats arrive every 30 s from every agent.
        await pool.execute("UPDATE workspace_auth_tokens SET last_used_at = now() WHERE id = $1", row["id"])
    return TokenOwner(row["id"], row["workspace_id"])


async def was_issued(pool: asyncpg.Pool, token: str) -> bool:
    """Whether this token was ever issued (revoked since, or not): a stale token is not a guess."""
    found: bool = await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM workspace_auth_tokens WHERE token_hash = $1)", hash_token(token)
    )
    return found


MAX_LIVE_TOKENS = 50


async def list_tokens(pool: asyncpg.Pool, workspace_id: str) -> list[dict[str, object]]:
    """Every token of the workspace, newest first: never the token nor its hash."""
    rows = await pool.fetch(
        """SELECT id, prefix, kind, created_at, last_used_at, revoked_at FROM workspace_auth_tokens
           WHERE workspace_id = $1 ORDER BY created_at DESC, id DESC""",
        workspace_id,
    )
    return [dict(r) for r in rows]


async def mint_extra(pool: asyncpg.Pool, workspace_id: str) -> tuple[MintedToken, int] | None:
    """A token the operator hands out (kind 'minted'); None when the workspace has MAX_LIVE_TOKENS."""
    minted = mint_token()
    async with pool.acquire() as conn, conn.transaction():
        # One minting at a time per workspace, so the cap holds under concurrent requests.
        await conn.execute("SELECT id FROM workspaces WHERE id = $1 FOR UPDATE", workspace_id)
        live = await conn.fetchval(
            "SELECT count(*) FROM workspace_auth_tokens WHERE workspace_id = $1 AND revoked_at IS NULL",
            workspace_id,
        )
        if live >= MAX_LIVE_TOKENS:
            return None
        await close_register_claim(conn, workspace_id)
        token_id = await insert_token(conn, workspace_id, minted, "minted")
    return minted, token_id


async def revoke(pool: asyncpg.Pool, workspace_id: str, token_id: int) -> bool:
    """False when the workspace has no such live token."""
    revoked = await pool.fetchval(
        """UPDATE workspace_auth_tokens SET revoked_at = now()
           WHERE id = $1 AND workspace_id = $2 AND revoked_at IS NULL RETURNING id""",
        token_id,
        workspace_id,
    )
    return revoked is not None


_CLAIMABLE = """
    register_claim_until > now() AND status <> $2::workspace_status
    AND NOT EXISTS (SELECT 1 FROM workspace_auth_tokens WHERE workspace_id = $1 AND revoked_at IS NULL)
"""


async def claimable(pool: asyncpg.Pool, workspace_id: str) -> bool:
    """Whether a bearer-less register may claim the workspace now (read only: the claim decides)."""
    found: bool = await pool.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM workspaces WHERE id = $1 AND {_CLAIMABLE})",
        workspace_id,
        WorkspaceStatus.REMOVED.value,
    )
    return found


@dataclass(frozen=True)
class Claim:
    token: str
    token_id: int
    window_until: object  # the claim window it closed, reopened by `unclaim`


async def claim_by_register(pool: asyncpg.Pool, workspace_id: str) -> Claim | None:
    """The first register of a workspace created with token_delivery=register, inside its claim
    window and before any live token: mints its token, once (a concurrent second claim gets None)."""
    minted = mint_token()
    async with pool.acquire() as conn, conn.transaction():
        until = await conn.fetchval(
            f"""UPDATE workspaces w SET register_claim_until = NULL
                FROM (SELECT register_claim_until AS until FROM workspaces WHERE id = $1 FOR UPDATE) old
                WHERE w.id = $1 AND {_CLAIMABLE.replace("register_claim_until", "w.register_claim_until")}
                RETURNING old.until""",
            workspace_id,
            WorkspaceStatus.REMOVED.value,
        )
        if until is None:
            return None
        token_id = await insert_token(conn, workspace_id, minted, "register")
    return Claim(minted.token, token_id, until)


async def unclaim(pool: asyncpg.Pool, workspace_id: str, claim: Claim) -> None:
    """A claim whose register failed after it: its token never reached the agent. Drop the token
    and reopen the window, so the agent's retry can claim again."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM workspace_auth_tokens WHERE id = $1", claim.token_id)
        await conn.execute(
            "UPDATE workspaces SET register_claim_until = $2 WHERE id = $1", workspace_id, claim.window_until
        )


async def close_register_claim(conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str) -> None:
    """The operator handed out a token: the bearer-less claim is over."""
    await conn.execute("UPDATE workspaces SET register_claim_until = NULL WHERE id = $1", workspace_id)


async def open_register_claim(conn: asyncpg.Connection, workspace_id: str, seconds: int) -> None:
    await conn.execute(
        "UPDATE workspaces SET register_claim_until = now() + make_interval(secs => $2) WHERE id = $1",
        workspace_id,
        seconds,
    )
