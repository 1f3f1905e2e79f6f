"""Server-Sent Events fed by Postgres LISTEN/NOTIFY (every API replica sees every event)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from api.deps import Operator, PlatformDep, PoolDep, existing_workspace_id
from api.openapi import AUTHENTICATED, errors
from store import events as event_store

router = APIRouter(tags=["events"], dependencies=[Operator], responses=AUTHENTICATED)
# The 200 reply is a stream that ends only when the client leaves (or must reconnect).
STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `id`, `event` (the event type) and `data` (the event as JSON)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
KEEPALIVE_SECONDS = 15.0


def _format(event: dict[str, Any]) -> str:
    lines = []
    if event.get("id") is not None:
        lines.append(f"id: {event['id']}")
    lines.append(f"event: {event['event_type']}")
    lines.append(f"data: {json.dumps(event, default=str)}")
    return "\n".join(lines) + "\n\n"


def _resume_point(since: int | None, last_event_id: str | None) -> int | None:
    if since is not None:
        return since
    if last_event_id and last_event_id.strip().isdigit():
        return int(last_event_id)
    return None


async def _stream(
    platform: PlatformDep, pool: PoolDep, workspace_id: str | None, after: int | None
) -> StreamingResponse:
    sub = await platform.hub.subscribe(workspace_id)

    async def body() -> AsyncIterator[str]:
        try:
            last_id = after if after is not None else 0
            yield ": connected\n\n"
            if after is not None:
                for event in await event_store.events_after(pool, after, workspace_id):
                    last_id = event["id"]
                    yield _format(event)
            while True:
                try:
                    event = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if not event:  # the hub lost events: the client reconnects with Last-Event-ID
                    return
                if event.get("truncated") and event.get("id"):
                    event = await event_store.fetch_event(pool, event["id"]) or event
                if event.get("id") is not None:
                    if event["id"] <= last_id:
                        continue
                    last_id = event["id"]
                yield _format(event)
        finally:
            platform.hub.unsubscribe(sub)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/events", response_class=StreamingResponse, responses=STREAM)
async def all_events(
    platform: PlatformDep,
    pool: PoolDep,
    since: Annotated[int | None, Query(ge=0, description="replay events with a larger id first")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    return await _stream(platform, pool, None, _resume_point(since, last_event_id))


@router.get(
    "/workspaces/{workspace_id}/events",
    response_class=StreamingResponse,
    responses=STREAM | errors(400, 404),
)
async def workspace_events(
    workspace_id: str,
    platform: PlatformDep,
    pool: PoolDep,
    since: Annotated[int | None, Query(ge=0)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    wid = await existing_workspace_id(pool, workspace_id)
    return await _stream(platform, pool, wid, _resume_point(since, last_event_id))
