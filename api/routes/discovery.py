"""Discovery, the way agents find each other: a workspace's peers, the URL of one it may reach, and
whether one workspace may reach another (domain.access). Agents call these with their workspace
token; the operator may call them for any workspace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import PoolDep, WorkspaceOrOperator, check_owner, parse_workspace_id
from api.errors import ApiError
from api.gateway import removed_error
from api.openapi import AUTHENTICATED, errors
from api.schemas import Text
from domain.a2a import has_inbound_url
from domain.access import can_communicate
from domain.json_bounds import UNREADABLE, unservable_reason
from store import peers as peer_store

log = logging.getLogger("molecule.api")
router = APIRouter(prefix="/registry", tags=["discovery"], responses=AUTHENTICATED)

# Role and name are at most 2000 and 200 characters: a longer query cannot match anything.
MAX_QUERY = 2000


# --- the caller ------------------------------------------------------------------------------------


Caller = WorkspaceOrOperator


def _described(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    return {status: {**errors(status)[status], "description": description}}


_FORBIDDEN = "the token belongs to another workspace, or X-Workspace-ID is not the token's workspace"


# --- GET /registry/{workspace_id}/peers ---------------------------------------------------------


class Peer(BaseModel):
    id: str
    name: str
    role: str | None = Field(description="null when the workspace has none")
    tier: int
    status: str
    url: str = Field(description='"" when the agent has not registered one')
    parent_id: str | None
    active_tasks: int
    agent_card: dict[str, Any] | None


def _peer(row: dict[str, Any]) -> Peer:
    card = row.get("agent_card")
    reason = None if card is None else unservable_reason(card)
    if reason is not None:
        log.warning("workspace %s: agent_card not served: %s", row.get("id"), reason)
        row = {**row, "agent_card": {UNREADABLE: reason}}
    return Peer(**row)


@router.get(
    "/{workspace_id}/peers",
    response_model=list[Peer],
    responses={
        **errors(400, 410),
        **_described(403, _FORBIDDEN),
        **_described(404, "no such workspace (asked by the operator)"),
    },
)
async def list_peers(
    workspace_id: str,
    caller: Caller,
    pool: PoolDep,
    q: str | None = Query(
        default=None,
        max_length=MAX_QUERY,
        description="only peers whose name or role contains this, ignoring case (blank: all)",
    ),
) -> list[Peer]:
    """The workspace's siblings (same parent; for a root workspace every other root one), then its
    children, then its parent, removed ones left out; by name within each."""
    wid = parse_workspace_id(workspace_id)
    if caller is not None:
        check_owner(caller, wid)
    else:
        found = (await peer_store.facts(pool, wid)).get(wid)
        if found is None:
            raise ApiError(404, f"workspace {wid} not found", "not_found")
        if found.removed:
            raise removed_error({"id": found.id, "removed_at": found.removed_at})
    rows = await peer_store.list_peers(pool, wid)
    query = (q or "").strip()
    if query:
        rows = [row for row in rows if peer_store.matches(row, query)]
    return [_peer(row) for row in rows]


# --- GET /registry/discover/{workspace_id} ------------------------------------------------------


class Discovered(BaseModel):
    id: str
    url: str
    name: str


@router.get(
    "/discover/{workspace_id}",
    response_model=Discovered,
    responses={
        **errors(400, 410),
        **_described(
            403,
            "the caller may not reach that workspace (or it does not exist), or X-Workspace-ID is not "
            "the token's workspace",
        ),
        **_described(404, "no such workspace (asked by the operator)"),
        **_described(
            503,
            "the workspace has no URL the platform can reach (code `no_url`, with its `status`); or "
            "PostgreSQL or Temporal is unavailable, retry shortly",
        ),
    },
)
async def discover(workspace_id: str, caller: Caller, pool: PoolDep) -> Discovered:
    """The URL of a workspace the caller may reach: itself, its parent, its children, its siblings."""
    target_id = parse_workspace_id(workspace_id)
    ids = [target_id] if caller is None else [target_id, caller.workspace_id]
    found = await peer_store.facts(pool, *ids)
    target = found.get(target_id)
    if caller is not None:
        me = found.get(caller.workspace_id)
        # An unknown target is refused like an unreachable one: a workspace learns nothing of
        # workspaces it may not reach, not even that they exist.
        if me is None or target is None or not can_communicate(me.node(), target.node()):
            raise ApiError(
                403, f"workspace {caller.workspace_id} may not reach workspace {target_id}", "forbidden"
            )
    elif target is None:
        raise ApiError(404, f"workspace {target_id} not found", "not_found")
    assert target is not None
    if target.removed:
        raise removed_error({"id": target.id, "removed_at": target.removed_at})
    url = target.url or ""
    if not has_inbound_url(url):
        no_url = ApiError(503, f"workspace {target.id} has no URL yet", "no_url")
        no_url.extra["status"] = target.status  # the workspace's (a keyword would be the reply's)
        raise no_url
    return Discovered(id=target.id, url=url, name=target.name)


# --- POST /registry/check-access ----------------------------------------------------------------


class CheckAccessBody(BaseModel):
    caller_id: Text = Field(max_length=64)
    target_id: Text = Field(max_length=64)


class AccessReply(BaseModel):
    allowed: bool


@router.post(
    "/check-access",
    response_model=AccessReply,
    responses={
        **errors(400, 413),
        **_described(
            403, "the token's workspace is not `caller_id`, or X-Workspace-ID is not the token's workspace"
        ),
    },
)
async def check_access(body: CheckAccessBody, caller: Caller, pool: PoolDep) -> AccessReply:
    """Whether `caller_id` may reach `target_id`: false when either does not exist or was removed."""
    caller_id = parse_workspace_id(body.caller_id)
    target_id = parse_workspace_id(body.target_id)
    if caller is not None:
        check_owner(caller, caller_id)
    found = await peer_store.facts(pool, caller_id, target_id)
    source, target = found.get(caller_id), found.get(target_id)
    allowed = (
        source is not None
        and target is not None
        and not source.removed
        and not target.removed
        and can_communicate(source.node(), target.node())
    )
    return AccessReply(allowed=allowed)
