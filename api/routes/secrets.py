"""Secrets: global ones (`/settings/secrets`, and the original's `/admin/secrets` aliases) and each
workspace's own (`/workspaces/{id}/secrets`). The operator sets, lists (names, never values) and
deletes them; a workspace's agent reads its merged values with its own token (`/secrets/values`, the
SDK's `pull_secrets`). A change takes effect at the next start; `?restart=true` restarts now."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import (
    GatewayDep,
    Operator,
    PlatformDep,
    PoolDep,
    WorkspaceOrOperator,
    check_owner,
    live_workspace,
    parse_workspace_id,
    workspace_row,
)
from api.errors import ApiError
from api.gateway import WorkflowGateway
from api.openapi import AUTHENTICATED, errors
from api.platform import Platform
from domain.contract import Update
from domain.secrets import (
    DECRYPT_GLOBAL_FAILED,
    DECRYPT_WORKSPACE_FAILED,
    MAX_KEY_CHARS,
    InvalidSecret,
    Scope,
    check_key,
    check_value,
)
from domain.status import WorkspaceStatus
from store import secrets as secret_store

log = logging.getLogger("molecule.api")

settings_router = APIRouter(tags=["secrets"], dependencies=[Operator], responses=AUTHENTICATED)
workspace_router = APIRouter(prefix="/workspaces/{workspace_id}", tags=["secrets"], responses=AUTHENTICATED)

RestartFlag = Annotated[
    bool, Query(description="restart the workspace (or, for a global secret, every one that inherits it)")
]


class SecretWrite(BaseModel):
    key: str = Field(description="an environment variable name: ^[A-Z_][A-Z0-9_]*$", max_length=1024)
    value: str = Field(description="at most 64 KiB; stored encrypted, never returned by a list")


class SecretValue(BaseModel):
    value: str


class SecretInfo(BaseModel):
    key: str
    has_value: bool = True
    scope: Literal["global", "workspace"]
    created_at: datetime
    updated_at: datetime


class Saved(BaseModel):
    status: Literal["saved", "deleted"]
    key: str
    scope: Literal["global", "workspace"]
    restarted: list[str] | None = Field(
        default=None,
        description="with ?restart=true on a workspace's secret: [its id] once its restart is accepted",
    )
    restarting: int | None = Field(
        default=None,
        description="with ?restart=true on a global secret: how many workspaces that inherit it restart",
    )


def _stored_name(key: str) -> str:
    """A name to delete: any a row may hold (plain-text env of earlier versions allowed lower case),
    within the bounds of a key."""
    if not key or len(key) > MAX_KEY_CHARS or not key.isprintable():
        raise ApiError(422, f"key must be 1 to {MAX_KEY_CHARS} printable characters", "invalid_secret")
    return key


def _checked(key: object, value: object | None = None) -> tuple[str, str]:
    try:
        return check_key(key), check_value(value) if value is not None else ""
    except InvalidSecret as exc:
        raise ApiError(422, str(exc), "invalid_secret") from None


async def _restart(gateway: WorkflowGateway, rows: list[dict[str, Any]]) -> list[str]:
    """Ask each workflow to restart; one that refuses (paused, provisioning…) keeps its next start."""
    accepted = []
    for row in rows:
        try:
            await gateway.update(row, Update.RESTART)
        except Exception as exc:  # the change is saved either way; the reply says who restarted
            reason = exc.error if isinstance(exc, ApiError) else type(exc).__name__
            log.info("workspace %s not restarted after a change: %s", row["id"], reason)
            continue
        accepted.append(row["id"])
    return accepted


async def restart_workspace_after_change(gateway: WorkflowGateway, row: dict[str, Any]) -> bool:
    """Restart a workspace whose settings changed, unless it has nothing to restart (an external
    agent) or an operator paused it; whether the restart was accepted."""
    if row["backend"] == "external" or row["status"] == WorkspaceStatus.PAUSED:
        return False
    return bool(await _restart(gateway, [row]))


async def _restart_one(gateway: WorkflowGateway, pool: asyncpg.Pool, workspace_id: str) -> list[str]:
    accepted = await restart_workspace_after_change(gateway, await workspace_row(pool, workspace_id))
    return [workspace_id] if accepted else []


async def _inheritors(pool: asyncpg.Pool, key: str) -> list[dict[str, Any]]:
    """Live, started workspaces without their own value for `key`: those a global change reaches."""
    rows = await pool.fetch(
        """SELECT id::text AS id, status::text AS status, backend FROM workspaces w
           WHERE status NOT IN ('removed', 'paused', 'hibernated', 'hibernating')
             AND backend <> 'external'
             AND NOT EXISTS (SELECT 1 FROM workspace_secrets s WHERE s.workspace_id = w.id AND s.key = $1)""",
        key,
    )
    return [dict(r) | {"status": WorkspaceStatus(r["status"])} for r in rows]


# --- global -------------------------------------------------------------------------------------


@settings_router.get("/settings/secrets", response_model=list[SecretInfo])
async def list_global(pool: PoolDep) -> list[dict[str, Any]]:
    return [n.public() for n in await secret_store.global_names(pool)]


async def _restart_inheritors(platform: Platform, pool: asyncpg.Pool, key: str) -> int:
    """Restart, in the background, every workspace a global change reaches: there may be many, and
    each waits for its own workflow's answer."""
    rows = await _inheritors(pool, key)
    if rows:

        async def restart_all() -> None:
            await _restart(platform.gateway, rows)

        platform.spawn(restart_all(), f"restarts after a change of global secret {key}")
    return len(rows)


async def _put_global(
    platform: Platform, pool: asyncpg.Pool, key: object, value: object, restart: bool
) -> Saved:
    key, value = _checked(key, value)
    await secret_store.put_global(pool, platform.keyring, key, value)
    restarting = await _restart_inheritors(platform, pool, key) if restart else None
    return Saved(status="saved", key=key, scope="global", restarting=restarting)


_SAVED: dict[str, Any] = {"response_model": Saved, "response_model_exclude_none": True}


@settings_router.put("/settings/secrets", responses=errors(413), **_SAVED)
async def put_global(
    body: SecretWrite, platform: PlatformDep, pool: PoolDep, restart: RestartFlag = False
) -> Saved:
    """Create or replace a global secret: every workspace gets it unless it has its own."""
    return await _put_global(platform, pool, body.key, body.value, restart)


# POST is the same write (the original's clients use it), here and on the alias path below.
settings_router.add_api_route(
    "/settings/secrets", put_global, methods=["POST"], name="post_global", responses=errors(413), **_SAVED
)


@settings_router.put("/settings/secrets/{key}", responses=errors(413), **_SAVED)
async def put_global_key(
    key: str,
    body: SecretValue,
    platform: PlatformDep,
    pool: PoolDep,
    restart: RestartFlag = False,
) -> Saved:
    """The same, with the key in the path."""
    return await _put_global(platform, pool, key, body.value, restart)


@settings_router.delete("/settings/secrets/{key}", responses=errors(404), **_SAVED)
async def delete_global(
    key: str, platform: PlatformDep, pool: PoolDep, restart: RestartFlag = False
) -> Saved:
    key = _stored_name(key)
    if not await secret_store.delete_global(pool, key):
        raise ApiError(404, f"no global secret {key}", "not_found")
    restarting = await _restart_inheritors(platform, pool, key) if restart else None
    return Saved(status="deleted", key=key, scope="global", restarting=restarting)


# The original server's paths for the same global secrets.
settings_router.add_api_route(
    "/admin/secrets",
    list_global,
    methods=["GET"],
    response_model=list[SecretInfo],
    summary="List Global (alias)",
)
settings_router.add_api_route(
    "/admin/secrets",
    put_global,
    methods=["POST"],
    name="post_global",
    responses=errors(413),
    summary="Post Global (alias)",
    **_SAVED,
)
settings_router.add_api_route(
    "/admin/secrets/{key}",
    delete_global,
    methods=["DELETE"],
    responses=errors(404),
    summary="Delete Global (alias)",
    **_SAVED,
)


# --- one workspace ------------------------------------------------------------------------------


@workspace_router.get(
    "/secrets", response_model=list[SecretInfo], dependencies=[Operator], responses=errors(400, 404, 410)
)
async def list_workspace(workspace_id: str, pool: PoolDep) -> list[dict[str, Any]]:
    """The workspace's own secrets, then the global ones it inherits: names and times, never values."""
    wid, _ = await live_workspace(pool, workspace_id)
    return [n.public() for n in await secret_store.workspace_names(pool, wid)]


_WRITE = _SAVED | {"dependencies": [Operator]}


@workspace_router.put("/secrets", responses=errors(400, 404, 410, 413), **_WRITE)
async def put_workspace(
    workspace_id: str,
    body: SecretWrite,
    platform: PlatformDep,
    pool: PoolDep,
    gateway: GatewayDep,
    restart: RestartFlag = False,
) -> Saved:
    """Create or replace one of the workspace's secrets (it overrides a global one of that name)."""
    wid, _ = await live_workspace(pool, workspace_id)
    key, value = _checked(body.key, body.value)
    await secret_store.put_workspace_secrets(pool, platform.keyring, wid, {key: value})
    restarted = await _restart_one(gateway, pool, wid) if restart else None
    return Saved(status="saved", key=key, scope="workspace", restarted=restarted)


workspace_router.add_api_route(
    "/secrets",
    put_workspace,
    methods=["POST"],
    name="post_workspace",
    responses=errors(400, 404, 410, 413),
    **_WRITE,
)


@workspace_router.delete("/secrets/{key}", responses=errors(400, 404, 410), **_WRITE)
async def delete_workspace_secret(
    workspace_id: str, key: str, pool: PoolDep, gateway: GatewayDep, restart: RestartFlag = False
) -> Saved:
    """Delete one of the workspace's secrets (a global one of that name applies again)."""
    wid, _ = await live_workspace(pool, workspace_id)
    key = _stored_name(key)
    if not await secret_store.delete_workspace_secret(pool, wid, key):
        raise ApiError(404, f"workspace {wid} has no secret {key}", "not_found")
    restarted = await _restart_one(gateway, pool, wid) if restart else None
    return Saved(status="deleted", key=key, scope="workspace", restarted=restarted)


@workspace_router.get(
    "/secrets/values",
    response_model=dict[str, str],
    responses=errors(400, 403, 404, 410),
)
async def secret_values(
    workspace_id: str, caller: WorkspaceOrOperator, platform: PlatformDep, pool: PoolDep
) -> dict[str, str]:
    """The merged, decrypted values (global, overridden by the workspace's): for the workspace's own
    agent (its token) only. One that cannot be decrypted: 503 `secret_undecryptable`, no partial map."""
    if caller is None:
        raise ApiError(
            403, "secret values are for the workspace's own agent: call with its token", "forbidden"
        )
    wid = parse_workspace_id(workspace_id)
    # The token's own lookup has already refused a removed workspace (410): no second round trip.
    check_owner(caller, wid)
    try:
        return await secret_store.values_for(pool, platform.keyring, wid)
    except secret_store.SecretsUndecryptable as exc:
        message = DECRYPT_GLOBAL_FAILED if exc.scope == Scope.GLOBAL else DECRYPT_WORKSPACE_FAILED
        raise ApiError(503, message, "secret_undecryptable") from None
