"""A workspace's model and provider, kept as its secrets `MODEL_PROVIDER` and `LLM_PROVIDER` so a
restart keeps them; a change restarts the workspace through its workflow. And `GET /templates`."""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

import asyncpg
from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import (
    GatewayDep,
    Operator,
    PlatformDep,
    PoolDep,
    WorkspaceOrOperator,
    check_owner_or_operator,
    live_workspace,
    parse_workspace_id,
    workspace_row,
)
from api.errors import ApiError
from api.openapi import AUTHENTICATED, errors
from api.platform import Platform
from api.routes.secrets import restart_workspace_after_change
from domain.providers import MODEL_SECRET, PROVIDER_SECRET, derive_provider
from store import secrets as secret_store

log = logging.getLogger("molecule.api")
router = APIRouter(prefix="/workspaces/{workspace_id}", tags=["model"], responses=AUTHENTICATED)
templates_router = APIRouter(tags=["templates"], dependencies=[Operator], responses=AUTHENTICATED)

_PROVIDER = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class ModelWrite(BaseModel):
    model: str = Field(
        max_length=200, description="a model slug such as anthropic/claude-sonnet-4; empty clears"
    )


class ProviderWrite(BaseModel):
    provider: str = Field(max_length=64, description="a provider slug such as openrouter; empty: derive it")


class ModelChoice(BaseModel):
    model: str
    provider: str
    source: Literal["workspace_secrets", "unresolved"]


class ProviderChoice(BaseModel):
    provider: str
    source: Literal["workspace_secrets", "derived", "unresolved"]


class Changed(BaseModel):
    status: Literal["saved", "cleared", "unchanged"]
    model: str | None = None
    provider: str | None = None
    restarted: bool = Field(description="whether the workspace's restart was accepted")


async def _choices(platform: Platform, pool: asyncpg.Pool, workspace_id: str) -> dict[str, str]:
    return await secret_store.workspace_values(
        pool, platform.keyring, workspace_id, (MODEL_SECRET, PROVIDER_SECRET)
    )


async def _readable_choices(
    caller: WorkspaceOrOperator, platform: Platform, pool: asyncpg.Pool, workspace_id: str
) -> dict[str, str]:
    """The stored choices, for the operator or the workspace's own agent."""
    wid = parse_workspace_id(workspace_id)
    check_owner_or_operator(caller, wid)
    await live_workspace(pool, wid)
    return await _choices(platform, pool, wid)


def _text(value: str, what: str) -> str:
    value = value.strip()
    if "\x00" in value or any(c.isspace() for c in value):
        raise ApiError(422, f"{what} must be a slug without spaces or NUL", "invalid_" + what)
    return value


@router.get("/model", response_model=ModelChoice, responses=errors(400, 403, 404, 410))
async def get_model(
    workspace_id: str, caller: WorkspaceOrOperator, platform: PlatformDep, pool: PoolDep
) -> ModelChoice:
    stored = await _readable_choices(caller, platform, pool, workspace_id)
    model = stored.get(MODEL_SECRET, "")
    provider = stored.get(PROVIDER_SECRET) or derive_provider(model) or ""
    return ModelChoice(model=model, provider=provider, source="workspace_secrets" if model else "unresolved")


@router.put("/model", response_model=Changed, dependencies=[Operator], responses=errors(400, 404, 410, 413))
async def put_model(
    workspace_id: str, body: ModelWrite, platform: PlatformDep, pool: PoolDep, gateway: GatewayDep
) -> Changed:
    """Store the model and re-derive its provider (an unknown prefix: none, the runtime decides)."""
    wid, _ = await live_workspace(pool, workspace_id)
    model = _text(body.model, "model")
    provider = derive_provider(model)
    before = await _choices(platform, pool, wid)
    after = {MODEL_SECRET: model, PROVIDER_SECRET: provider}
    if all(before.get(k) == (v or None) for k, v in after.items()):
        return Changed(status="unchanged", model=model or None, provider=provider, restarted=False)
    async with pool.acquire() as conn, conn.transaction():
        await secret_store.set_or_delete(conn, platform.keyring, wid, after)
        # The row's model is what the next start gives the agent as MODEL.
        await conn.execute(
            "UPDATE workspaces SET model = $2, updated_at = now() WHERE id = $1", wid, model or None
        )
    restarted = await restart_workspace_after_change(gateway, await workspace_row(pool, wid))
    return Changed(
        status="saved" if model else "cleared", model=model or None, provider=provider, restarted=restarted
    )


@router.get("/provider", response_model=ProviderChoice, responses=errors(400, 403, 404, 410))
async def get_provider(
    workspace_id: str, caller: WorkspaceOrOperator, platform: PlatformDep, pool: PoolDep
) -> ProviderChoice:
    stored = await _readable_choices(caller, platform, pool, workspace_id)
    if stored.get(PROVIDER_SECRET):
        return ProviderChoice(provider=stored[PROVIDER_SECRET], source="workspace_secrets")
    derived = derive_provider(stored.get(MODEL_SECRET))
    return ProviderChoice(provider=derived or "", source="derived" if derived else "unresolved")


@router.put(
    "/provider", response_model=Changed, dependencies=[Operator], responses=errors(400, 404, 410, 413)
)
async def put_provider(
    workspace_id: str, body: ProviderWrite, platform: PlatformDep, pool: PoolDep, gateway: GatewayDep
) -> Changed:
    """Store the provider; an empty one clears it, and the model's derived provider applies again."""
    wid, _ = await live_workspace(pool, workspace_id)
    provider = _text(body.provider, "provider").lower()
    if provider and not _PROVIDER.fullmatch(provider):
        raise ApiError(
            422, f"provider {provider!r} is not a provider slug (a-z, 0-9, '.', '_', '-')", "invalid_provider"
        )
    before = await _choices(platform, pool, wid)
    chosen = provider or derive_provider(before.get(MODEL_SECRET))
    if before.get(PROVIDER_SECRET) == chosen:
        return Changed(status="unchanged", provider=chosen, restarted=False)
    async with pool.acquire() as conn:
        await secret_store.set_or_delete(conn, platform.keyring, wid, {PROVIDER_SECRET: chosen})
    restarted = await restart_workspace_after_change(gateway, await workspace_row(pool, wid))
    return Changed(status="saved" if provider else "cleared", provider=chosen, restarted=restarted)


@templates_router.get("/templates", response_model=list[dict[str, Any]])
async def list_templates(platform: PlatformDep) -> list[dict[str, Any]]:
    """Every template that loads: `id, name, runtime, backend, model, required_env,
    provision_timeout_seconds, providers, provider_registry` (a field it does not declare is left
    out). A `config.yaml` that does not parse is logged and left out."""
    platform.templates.reload()
    return [platform.templates.get(name).summary(name) for name in platform.templates.names()]  # type: ignore[union-attr]
