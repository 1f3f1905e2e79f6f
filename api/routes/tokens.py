"""The operator's view of a workspace's bearer tokens: list (never the token nor its hash), mint
(shown once), revoke (its next call is 401)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import Operator, PoolDep, live_workspace
from api.errors import ApiError
from api.openapi import AUTHENTICATED, errors
from store import tokens as token_store

router = APIRouter(
    prefix="/workspaces/{workspace_id}/tokens",
    tags=["tokens"],
    dependencies=[Operator],
    responses=AUTHENTICATED,
)


class TokenInfo(BaseModel):
    id: int
    prefix: str = Field(description="the token's first 8 characters, to tell tokens apart")
    kind: str = Field(description="api (create) | instance (a started instance) | minted | register")
    created_at: datetime
    last_used_at: datetime | None = Field(description="to the minute")
    revoked_at: datetime | None


class TokenList(BaseModel):
    tokens: list[TokenInfo]
    count: int


class MintedToken(BaseModel):
    id: int
    workspace_id: str
    prefix: str
    auth_token: str = Field(description="Shown once: only its hash is stored.")


class Revoked(BaseModel):
    status: str = "revoked"
    id: int


@router.get("", response_model=TokenList, responses=errors(400, 404, 410))
async def list_tokens(workspace_id: str, pool: PoolDep) -> TokenList:
    wid, _ = await live_workspace(pool, workspace_id)
    rows = await token_store.list_tokens(pool, wid)
    return TokenList(tokens=[TokenInfo.model_validate(r) for r in rows], count=len(rows))


@router.post("", status_code=201, response_model=MintedToken, responses=errors(400, 404, 409, 410))
async def mint(workspace_id: str, pool: PoolDep) -> JSONResponse:
    wid, _ = await live_workspace(pool, workspace_id)
    minted = await token_store.mint_extra(pool, wid)
    if minted is None:
        raise ApiError(
            409,
            f"workspace {wid} already has {token_store.MAX_LIVE_TOKENS} live tokens: revoke one first",
            "too_many_tokens",
        )
    token, token_id = minted
    reply = MintedToken(id=token_id, workspace_id=wid, prefix=token.prefix, auth_token=token.token)
    return JSONResponse(reply.model_dump(), status_code=201)


@router.delete("/{token_id}", response_model=Revoked, responses=errors(400, 404, 410))
async def revoke(workspace_id: str, token_id: str, pool: PoolDep) -> Revoked:
    wid, _ = await live_workspace(pool, workspace_id)
    if not token_id.isdigit() or len(token_id) > 18:
        raise ApiError(400, f"invalid token id {token_id!r}: expected an integer", "invalid_id")
    if not await token_store.revoke(pool, wid, int(token_id)):
        raise ApiError(404, f"workspace {wid} has no live token {token_id}", "not_found")
    return Revoked(id=int(token_id))
