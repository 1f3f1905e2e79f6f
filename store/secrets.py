"""Global and workspace secrets, encrypted at rest. Values are sealed and opened here, so plain text
only ever exists in the process that asked for it; rows hold ciphertext and a key version."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg

from domain.secrets import Scope, associated_data, merged
from store.keyring import Keyring, Sealed, UndecryptableSecret

log = logging.getLogger("molecule.secrets")
Db: TypeAlias = asyncpg.Pool | asyncpg.Connection
_MOVE_LOCK = 0x7365637265747301  # "secrets" + 1: serialises move_plain_env between processes


class SecretsUndecryptable(Exception):
    """A secret of this scope cannot be opened (the caller reports the fixed words for it)."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope.value)
        self.scope = scope


@dataclass(frozen=True)
class SecretName:
    key: str
    scope: Scope
    created_at: Any
    updated_at: Any

    def public(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "has_value": True,
            "scope": self.scope.value,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _seal(keyring: Keyring, scope: Scope, workspace_id: str | None, key: str, value: str) -> Sealed:
    return keyring.seal(value, associated_data(scope, workspace_id, key))


async def put_workspace_secrets(
    conn: Db, keyring: Keyring, workspace_id: str, values: dict[str, str]
) -> None:
    """Upsert several of one workspace's secrets (create's env, the model choice…)."""
    if not values:
        return
    rows = []
    for key, value in values.items():
        sealed = _seal(keyring, Scope.WORKSPACE, workspace_id, key, value)
        rows.append((workspace_id, key, sealed.blob, sealed.version))
    await conn.executemany(
        """INSERT INTO workspace_secrets (workspace_id, key, encrypted_value, encryption_version)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (workspace_id, key) DO UPDATE
           SET encrypted_value = EXCLUDED.encrypted_value,
               encryption_version = EXCLUDED.encryption_version, updated_at = now()""",
        rows,
    )


async def put_global(db: Db, keyring: Keyring, key: str, value: str) -> None:
    sealed = _seal(keyring, Scope.GLOBAL, None, key, value)
    await db.execute(
        """INSERT INTO global_secrets (key, encrypted_value, encryption_version) VALUES ($1, $2, $3)
           ON CONFLICT (key) DO UPDATE
           SET encrypted_value = EXCLUDED.encrypted_value,
               encryption_version = EXCLUDED.encryption_version, updated_at = now()""",
        key,
        sealed.blob,
        sealed.version,
    )


async def delete_workspace_secret(db: Db, workspace_id: str, key: str) -> bool:
    done = await db.execute(
        "DELETE FROM workspace_secrets WHERE workspace_id = $1 AND key = $2", workspace_id, key
    )
    return str(done) != "DELETE 0"


async def delete_global(db: Db, key: str) -> bool:
    done = await db.execute("DELETE FROM global_secrets WHERE key = $1", key)
    return str(done) != "DELETE 0"


async def delete_all_of(db: Db, workspace_id: str) -> int:
    """A removed workspace's secrets: nothing will start with them again."""
    done = await db.execute("DELETE FROM workspace_secrets WHERE workspace_id = $1", workspace_id)
    return int(str(done).split()[-1])


async def workspace_values(
    db: Db, keyring: Keyring, workspace_id: str, keys: tuple[str, ...]
) -> dict[str, str]:
    """These keys of the workspace's own layer that are set and readable (one that cannot be
    decrypted is logged and left out: it is replaced by the caller's write)."""
    rows = await db.fetch(
        """SELECT 'workspace' AS scope, key, encrypted_value, encryption_version FROM workspace_secrets
           WHERE workspace_id = $1 AND key = ANY($2::text[])""",
        workspace_id,
        list(keys),
    )
    out = {}
    for row in rows:
        try:
            out[row["key"]] = _open(keyring, row, workspace_id)
        except UndecryptableSecret:
            log.error("workspace %s: secret %s cannot be decrypted", workspace_id, row["key"])
    return out


async def set_or_delete(
    conn: asyncpg.Connection, keyring: Keyring, workspace_id: str, values: dict[str, str | None]
) -> None:
    """Write each key that has a value, delete each that has None or ''."""
    await put_workspace_secrets(conn, keyring, workspace_id, {k: v for k, v in values.items() if v})
    gone = [k for k, v in values.items() if not v]
    if gone:
        await conn.execute(
            "DELETE FROM workspace_secrets WHERE workspace_id = $1 AND key = ANY($2::text[])",
            workspace_id,
            gone,
        )


async def global_names(db: Db) -> list[SecretName]:
    rows = await db.fetch("SELECT key, created_at, updated_at FROM global_secrets ORDER BY key")
    return [SecretName(r["key"], Scope.GLOBAL, r["created_at"], r["updated_at"]) for r in rows]


async def workspace_names(db: Db, workspace_id: str) -> list[SecretName]:
    """The workspace's own secrets, then the global ones it inherits (not those it overrides)."""
    rows = await db.fetch(
        """SELECT key, created_at, updated_at, 'workspace' AS scope, 0 AS layer
             FROM workspace_secrets WHERE workspace_id = $1
           UNION ALL
           SELECT g.key, g.created_at, g.updated_at, 'global', 1 FROM global_secrets g
            WHERE NOT EXISTS (SELECT 1 FROM workspace_secrets w
                              WHERE w.workspace_id = $1 AND w.key = g.key)
           ORDER BY layer, key""",
        workspace_id,
    )
    return [SecretName(r["key"], Scope(r["scope"]), r["created_at"], r["updated_at"]) for r in rows]


async def _sealed_rows(db: Db, workspace_id: str) -> list[asyncpg.Record]:
    return await db.fetch(  # type: ignore[no-any-return]
        """SELECT 'global' AS scope, key, encrypted_value, encryption_version FROM global_secrets
           UNION ALL
           SELECT 'workspace', key, encrypted_value, encryption_version
             FROM workspace_secrets WHERE workspace_id = $1""",
        workspace_id,
    )


def _open(keyring: Keyring, row: asyncpg.Record, workspace_id: str) -> str:
    scope = Scope(row["scope"])
    aad = associated_data(scope, workspace_id if scope == Scope.WORKSPACE else None, row["key"])
    return keyring.open(Sealed(row["encryption_version"], bytes(row["encrypted_value"])), aad)


async def values_for(db: Db, keyring: Keyring, workspace_id: str) -> dict[str, str]:
    """The merged, decrypted map an instance gets (global < workspace). Any secret that cannot be
    opened fails the whole read with its scope: an agent never starts with a partial set."""
    layers: dict[Scope, dict[str, str]] = {Scope.GLOBAL: {}, Scope.WORKSPACE: {}}
    # The global layer first: its failure is reported as such even when a workspace one also fails.
    rows = sorted(await _sealed_rows(db, workspace_id), key=lambda r: r["scope"] != "global")
    for row in rows:
        scope = Scope(row["scope"])
        try:
            layers[scope][row["key"]] = _open(keyring, row, workspace_id)
        except UndecryptableSecret:
            # The key name and version go to the log only: the event and the row get fixed words.
            log.error(
                "workspace %s: %s secret %s (key version %d) cannot be decrypted",
                workspace_id,
                scope.value,
                row["key"],
                row["encryption_version"],
            )
            raise SecretsUndecryptable(scope) from None
    return merged(layers[Scope.GLOBAL], layers[Scope.WORKSPACE])


async def readable_values(db: Db, keyring: Keyring, workspace_id: str) -> tuple[dict[str, str], set[str]]:
    """(the merged values that can be opened, the names of those that cannot): for redaction and for
    the required-env check, which must not fail on the secret the start will report."""
    layers: dict[str, dict[str, str]] = {"global": {}, "workspace": {}}
    unreadable: set[str] = set()
    for row in await _sealed_rows(db, workspace_id):
        try:
            layers[row["scope"]][row["key"]] = _open(keyring, row, workspace_id)
        except UndecryptableSecret:
            unreadable.add(row["key"])
    return merged(layers["global"], layers["workspace"]), unreadable


async def rotate(pool: asyncpg.Pool, keyring: Keyring) -> tuple[int, int]:
    """Re-encrypt every value not sealed under the newest key version: (re-encrypted, unreadable).
    An unreadable value is left as it is (and logged by name), never lost."""
    rotated = unreadable = 0
    async with pool.acquire() as conn:
        async with conn.transaction():
            rows = await conn.fetch(
                """SELECT 'global' AS scope, NULL::text AS workspace_id, key, encrypted_value,
                          encryption_version FROM global_secrets WHERE encryption_version <> $1
                   UNION ALL
                   SELECT 'workspace', workspace_id::text, key, encrypted_value, encryption_version
                     FROM workspace_secrets WHERE encryption_version <> $1""",
                keyring.current,
            )
            for row in rows:
                scope = Scope(row["scope"])
                aad = associated_data(scope, row["workspace_id"], row["key"])
                try:
                    value = keyring.open(
                        Sealed(row["encryption_version"], bytes(row["encrypted_value"])), aad
                    )
                except UndecryptableSecret:
                    unreadable += 1
                    log.error(
                        "%s secret %s%s (key version %d) cannot be decrypted: left as it is",
                        scope.value,
                        row["key"],
                        f" of workspace {row['workspace_id']}" if row["workspace_id"] else "",
                        row["encryption_version"],
                    )
                    continue
                sealed = keyring.seal(value, aad)
                if scope == Scope.GLOBAL:
                    # Only the value read: one written meanwhile (already under the newest key) stays.
                    await conn.execute(
                        """UPDATE global_secrets SET encrypted_value = $2, encryption_version = $3
                           WHERE key = $1 AND encrypted_value = $4""",
                        row["key"],
                        sealed.blob,
                        sealed.version,
                        row["encrypted_value"],
                    )
                else:
                    await conn.execute(
                        """UPDATE workspace_secrets SET encrypted_value = $3, encryption_version = $4
                           WHERE workspace_id = $1 AND key = $2 AND encrypted_value = $5""",
                        row["workspace_id"],
                        row["key"],
                        sealed.blob,
                        sealed.version,
                        row["encrypted_value"],
                    )
                rotated += 1
    return rotated, unreadable


async def move_plain_env(pool: asyncpg.Pool, keyring: Keyring) -> int:
    """Move the plain-text `workspace_env` rows of earlier versions into encrypted workspace secrets
    and drop that table, in one transaction; the number of values moved (0 once done)."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            # One mover at a time; the second finds the table gone.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MOVE_LOCK)
            if await conn.fetchval("SELECT to_regclass('workspace_env')") is None:
                return 0
            await conn.execute("LOCK TABLE workspace_env IN ACCESS EXCLUSIVE MODE")
            rows = await conn.fetch("SELECT workspace_id::text AS id, name, value FROM workspace_env")
            by_workspace: dict[str, dict[str, str]] = {}
            for row in rows:
                by_workspace.setdefault(row["id"], {})[row["name"]] = row["value"]
            for workspace_id, values in by_workspace.items():
                # A secret written since (through the API) is newer than the plain copy: kept.
                existing = {
                    r["key"]
                    for r in await conn.fetch(
                        "SELECT key FROM workspace_secrets WHERE workspace_id = $1", workspace_id
                    )
                }
                fresh = {k: v for k, v in values.items() if k not in existing}
                await put_workspace_secrets(conn, keyring, workspace_id, fresh)
            await conn.execute("DROP TABLE workspace_env")
    if rows:
        log.info("moved %d plain-text env values into encrypted secrets", len(rows))
    return len(rows)
