"""Annotated dependencies: settings, connections, and the two kinds of caller."""

from __future__ import annotations

import hmac
import uuid
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Header, Request

from api.errors import ApiError
from api.gateway import WorkflowGateway
from api.platform import Platform
from config.settings import Settings
from store import tokens
from store import workspaces as ws_store
from store.tokens import TokenOwner


# Dependencies are `async def` even when they do not await: FastAPI runs plain `def` ones in a
# threadpool, a thread hop per request on the heartbeat hot path.
async def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


async def get_settings(platform: PlatformDep) -> Settings:
    return platform.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_pool(platform: PlatformDep) -> asyncpg.Pool:
    return await platform.pool()


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]


async def get_gateway(platform: PlatformDep) -> WorkflowGateway:
    return platform.gateway


GatewayDep = Annotated[WorkflowGateway, Depends(get_gateway)]


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def require_operator(
    settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    if not settings.admin_token:
        if settings.molecule_env == "development":
            return
        raise ApiError(
            401,
            "operator routes need ADMIN_TOKEN, which is not configured (set it, or MOLECULE_ENV=development)",
            "admin_token_unset",
        )
    token = bearer(authorization)
    if token is None:
        raise ApiError(401, "missing bearer token (Authorization: Bearer <ADMIN_TOKEN>)", "unauthorized")
    if not hmac.compare_digest(token.encode(), settings.admin_token.encode()):
        raise ApiError(401, "invalid admin token", "unauthorized")


Operator = Depends(require_operator)


async def require_workspace_token(
    platform: PlatformDep, authorization: Annotated[str | None, Header()] = None
) -> TokenOwner:
    token = bearer(authorization)
    if token is None:
        raise ApiError(401, "missing bearer token (Authorization: Bearer <workspace token>)", "unauthorized")
    owner = await tokens.authenticate(await platform.pool(), token)
    if owner is None:
        raise ApiError(401, "invalid or revoked workspace token", "unauthorized")
    if owner.workspace_removed:
        raise ApiError(
            410, f"workspace {owner.workspace_id} was removed", "workspace_removed", id=owner.workspace_id
        )
    return owner


WorkspaceCaller = Annotated[TokenOwner, Depends(require_workspace_token)]


def parse_workspace_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError):
        raise ApiError(400, f"invalid workspace id {value!r}: expected a UUID", "invalid_id") from None


async def workspace_row(pool: asyncpg.Pool, workspace_id: str) -> dict[str, Any]:
    """The workspace's row: 400 for a non-UUID id, 404 for an unknown one."""
    wid = parse_workspace_id(workspace_id)
    row = await ws_store.get_workspace(pool, wid)
    if row is None:
        raise ApiError(404, f"workspace {wid} not found", "not_found")
    return row


async def existing_workspace_id(pool: asyncpg.Pool, workspace_id: str) -> str:
    """The canonical id of a workspace that exists: 400 for a non-UUID id, 404 for an unknown one."""
    wid = parse_workspace_id(workspace_id)
    if not await ws_store.exists(pool, wid):
        raise ApiError(404, f"workspace {wid} not found", "not_found")
    return wid


def check_owner(owner: TokenOwner, workspace_id: str) -> None:
    if owner.workspace_id != workspace_id:
        raise ApiError(403, f"this token does not belong to workspace {workspace_id}", "forbidden")
