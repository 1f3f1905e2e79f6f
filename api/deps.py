"""Annotated dependencies: settings, connections, and the two kinds of caller."""

from __future__ import annotations

import hmac
import uuid
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError, TooManyAuthFailures
from api.gateway import WorkflowGateway
from api.platform import Platform
from config.settings import Settings
from domain.status import WorkspaceStatus
from store import tokens
from store import workspaces as ws_store
from store.tokens import TokenOwner, hash_token


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


def client_address(request: Request) -> str:
    """The peer address uvicorn reports (X-Forwarded-For only from its `forwarded_allow_ips`)."""
    return request.client.host if request.client else ""


def check_auth_limit(platform: Platform, address: str, credential: str | None = None) -> None:
    """429 for an address with too many failed authentications in the current window (O(1)), unless
    `credential` (a token digest) already authenticated from it."""
    retry_after = platform.auth_failures.retry_after(address, credential)
    if retry_after is not None:
        raise TooManyAuthFailures(retry_after)


# Security schemes, so the OpenAPI document says which token each route takes. Parsing matches
# `bearer()`: no header, another scheme or an empty token is "missing".
_admin_bearer = HTTPBearer(
    scheme_name="AdminToken", description="Authorization: Bearer <ADMIN_TOKEN>", auto_error=False
)
_workspace_bearer = HTTPBearer(
    scheme_name="WorkspaceToken",
    description="Authorization: Bearer <workspace token> (returned once by POST /workspaces)",
    auto_error=False,
)
AdminBearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)]
WorkspaceBearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_workspace_bearer)]


async def require_operator(request: Request, platform: PlatformDep, credentials: AdminBearer) -> None:
    settings = platform.settings
    if not settings.admin_token:
        if settings.molecule_env == "development":
            return
        raise ApiError(
            401,
            "operator routes need ADMIN_TOKEN, which is not configured (set it, or MOLECULE_ENV=development)",
            "admin_token_unset",
        )
    address = client_address(request)
    digest = hash_token(credentials.credentials) if credentials is not None else None
    check_auth_limit(platform, address, digest)
    if credentials is None or digest is None:
        raise ApiError(401, "missing bearer token (Authorization: Bearer <ADMIN_TOKEN>)", "unauthorized")
    if not hmac.compare_digest(credentials.credentials.encode(), settings.admin_token.encode()):
        platform.auth_failures.failed(address)
        raise ApiError(401, "invalid admin token", "unauthorized")
    platform.auth_failures.succeeded(address, digest)


Operator = Depends(require_operator)


async def require_workspace_token(
    request: Request, platform: PlatformDep, credentials: WorkspaceBearer
) -> TokenOwner:
    address = client_address(request)
    digest = hash_token(credentials.credentials) if credentials is not None else None
    check_auth_limit(platform, address, digest)
    if credentials is None or digest is None:
        raise ApiError(401, "missing bearer token (Authorization: Bearer <workspace token>)", "unauthorized")
    owner = await tokens.authenticate(await platform.pool(), credentials.credentials)
    if owner is None:
        if not await tokens.was_issued(await platform.pool(), credentials.credentials):
            platform.auth_failures.failed(address)
        raise ApiError(401, "invalid or revoked workspace token", "unauthorized")
    platform.auth_failures.succeeded(address, digest)
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


async def require_workspace_or_operator(
    request: Request,
    platform: PlatformDep,
    admin: AdminBearer,
    workspace: WorkspaceBearer,
    x_workspace_id: Annotated[
        str | None,
        Header(
            alias="X-Workspace-ID",
            description="the calling workspace; when sent by a workspace it must be its token's one",
        ),
    ] = None,
) -> TokenOwner | None:
    """The workspace whose token this is, or None for the operator (the admin token).

    The same checks, in the same order, as `require_operator` and `require_workspace_token`: the
    address's limit on failed authentication before the token is looked at, a wrong token counted
    once, a revoked one (a stale agent) not counted, a removed workspace's token 410."""
    credentials = admin or workspace
    settings = platform.settings
    if not settings.admin_token and settings.molecule_env == "development":
        # Operator routes are open here (require_operator): a workspace token still says who calls.
        pool = await platform.pool()
        owner = await tokens.authenticate(pool, credentials.credentials) if credentials else None
        if owner is None:
            return None
        if owner.workspace_removed:
            raise ApiError(
                410, f"workspace {owner.workspace_id} was removed", "workspace_removed", id=owner.workspace_id
            )
    else:
        address = client_address(request)
        digest = hash_token(credentials.credentials) if credentials is not None else None
        check_auth_limit(platform, address, digest)
        if (
            credentials is not None
            and digest is not None
            and settings.admin_token
            and hmac.compare_digest(credentials.credentials.encode(), settings.admin_token.encode())
        ):
            platform.auth_failures.succeeded(address, digest)
            return None
        owner = await require_workspace_token(request, platform, credentials)
    check_claimed_workspace(x_workspace_id, owner.workspace_id)
    return owner


def check_claimed_workspace(header: str | None, workspace_id: str) -> None:
    """403 when the caller's `X-Workspace-ID` (any UUID spelling; empty means absent) names a
    workspace other than its token's."""
    claimed = (header or "").strip()
    if not claimed:
        return
    try:
        same = str(uuid.UUID(claimed)) == workspace_id
    except ValueError:
        same = False
    if not same:
        raise ApiError(403, "X-Workspace-ID is not the workspace of this token", "forbidden")


WorkspaceOrOperator = Annotated[TokenOwner | None, Depends(require_workspace_or_operator)]


def check_owner_or_operator(caller: TokenOwner | None, workspace_id: str) -> None:
    if caller is not None:
        check_owner(caller, workspace_id)


async def live_workspace(pool: asyncpg.Pool, workspace_id: str) -> tuple[str, str]:
    """(canonical id, name) of a workspace that exists and is not removed: 400, 404 or 410 otherwise."""
    wid = parse_workspace_id(workspace_id)
    found = await ws_store.name_and_status(pool, wid)
    if found is None:
        raise ApiError(404, f"workspace {wid} not found", "not_found")
    name, status = found
    if status == WorkspaceStatus.REMOVED:
        raise ApiError(410, f"workspace {wid} was removed", "workspace_removed", id=wid)
    return wid, name
