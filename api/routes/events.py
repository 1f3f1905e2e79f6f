"""Server-Sent Events fed by Postgres LISTEN/NOTIFY (every API replica sees every event).

A stream that resumes (`?since=`, `Last-Event-ID`) subscribes to the live hub first, then pages
through the table until it is caught up, then follows the hub: every event committed after the
resume point is sent exactly once, whatever commits while it pages and in whatever id order."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from api.deps import Operator, PlatformDep, PoolDep, existing_workspace_id
from api.errors import ApiError
from api.event_hub import Subscription
from api.openapi import AUTHENTICATED, errors
from api.schemas import INT8_MAX
from domain.event_delivery import DeliveredIds
from store import events as event_store

log = logging.getLogger("molecule.events")
router = APIRouter(tags=["events"], dependencies=[Operator], responses=AUTHENTICATED)
# The 200 reply is a stream that ends only when the client leaves (or must reconnect).
STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `id`, `event` (the event type) and `data` (the event as JSON)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
KEEPALIVE_SECONDS = 15.0
# After the hub dropped notifications, the table is read again from this far below the highest id
# sent: rows that committed late with a lower id are found there, and what was sent is skipped.
REREAD_IDS = event_store.PAGE_SIZE


def _format(event: dict[str, Any], resume_id: int | None) -> str:
    """One SSE message. Its `id:` (what the client sends back as Last-Event-ID) is the highest event
    id sent so far, which is the event's own id unless it committed late, after a higher one: a
    client that resumes from there is never sent again what it already has."""
    lines = []
    if event.get("id") is not None:
        lines.append(f"id: {max(event['id'], resume_id or 0)}")
    lines.append(f"event: {event['event_type']}")
    try:
        data = json.dumps(event, default=str)
    except (RecursionError, ValueError):  # a payload stored before the input bounds
        data = json.dumps({**event, "payload": {"unreadable": "payload cannot be serialized"}}, default=str)
    lines.append(f"data: {data}")
    return "\n".join(lines) + "\n\n"


def _last_event_id(value: str | None) -> int | None:
    """The resume point a reconnecting client sends: empty means none; anything but an event id
    (a decimal within bigint) is a 400, not a silent replay from somewhere else."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(INT8_MAX)) or int(text) > INT8_MAX:
        shown = text if len(text) <= 32 else text[:32] + "..."
        raise ApiError(
            400,
            f"invalid Last-Event-ID {shown!r}: expected an event id between 0 and {INT8_MAX}",
            "invalid_last_event_id",
        )
    return int(text)


class _Follower:
    """One client's stream: the table from a resume point, then the hub, each event id once."""

    def __init__(self, pool: asyncpg.Pool, sub: Subscription, workspace_id: str | None) -> None:
        self.pool = pool
        self.sub = sub
        self.workspace_id = workspace_id
        self.delivered = DeliveredIds()

    async def _full(self, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("truncated") and event.get("id"):
            return await event_store.fetch_event(self.pool, event["id"]) or event
        return event

    async def catch_up(self, after: int) -> AsyncIterator[dict[str, Any]]:
        """Every committed event with a larger id than `after`, page by page, until a page comes
        back short. Between pages the hub's queue is drained: a row past the cursor is the next
        page's, a lower id that committed late is sent now, and the queue never fills up."""
        cursor = after
        while True:
            page = await event_store.events_after(self.pool, cursor, self.workspace_id)
            for event in page:
                if self.delivered.first_delivery(event["id"]):
                    yield event
            if page:
                cursor = max(cursor, page[-1]["id"])
            if len(page) < event_store.PAGE_SIZE:
                return
            while not self.sub.queue.empty():
                event = self.sub.queue.get_nowait()
                if not event or self.sub.lost:
                    return  # the caller sees `lost` and ends the stream
                if event.get("id") is None:
                    yield event  # a broadcast with no row (heartbeats): live news, sent as it comes
                elif event["id"] <= cursor and self.delivered.first_delivery(event["id"]):
                    yield await self._full(event)

    async def follow(self, floor: int) -> AsyncIterator[dict[str, Any] | None]:
        """Live events; None when it is time for a keepalive. Ends when the hub lost its listener."""
        while not self.sub.lost:
            if self.sub.lagged:  # notifications were dropped: the table has every one of them
                self.sub.lagged = False
                log.info("an event stream fell behind (its queue filled up); re-reading from the table")
                top = self.delivered.top if self.delivered.top is not None else floor
                async for event in self.catch_up(max(floor, top - REREAD_IDS)):
                    yield event
                continue
            try:
                event = await asyncio.wait_for(self.sub.queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield None
                continue
            if not event:  # the hub lost events: the client reconnects with Last-Event-ID
                return
            if event.get("id") is not None and not self.delivered.first_delivery(event["id"]):
                continue
            yield await self._full(event)


async def _stream(
    platform: PlatformDep, pool: PoolDep, workspace_id: str | None, after: int | None
) -> StreamingResponse:
    # Subscribed before the table is read: whatever commits from here on is heard.
    sub = await platform.hub.subscribe(workspace_id)
    follower = _Follower(pool, sub, workspace_id)

    async def body() -> AsyncIterator[str]:
        try:
            yield ": connected\n\n"
            if after is None:  # live only; the current end of the table is where a re-read starts
                floor = await event_store.latest_id(pool, workspace_id)
            else:
                floor = after
                async for event in follower.catch_up(after):
                    yield _format(event, follower.delivered.top)
            async for live in follower.follow(floor):
                yield ": keepalive\n\n" if live is None else _format(live, follower.delivered.top)
        finally:
            platform.hub.unsubscribe(sub)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


Since = Annotated[int | None, Query(ge=0, le=INT8_MAX, description="replay events with a larger id first")]
LastEventId = Annotated[
    str | None, Header(description="resume after this event id (what EventSource sends on reconnect)")
]


@router.get("/events", response_class=StreamingResponse, responses=STREAM | errors(400))
async def all_events(
    platform: PlatformDep, pool: PoolDep, since: Since = None, last_event_id: LastEventId = None
) -> StreamingResponse:
    resume = since if since is not None else _last_event_id(last_event_id)
    return await _stream(platform, pool, None, resume)


@router.get(
    "/workspaces/{workspace_id}/events",
    response_class=StreamingResponse,
    responses=STREAM | errors(400, 404),
)
async def workspace_events(
    workspace_id: str,
    platform: PlatformDep,
    pool: PoolDep,
    since: Since = None,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    resume = since if since is not None else _last_event_id(last_event_id)
    wid = await existing_workspace_id(pool, workspace_id)
    return await _stream(platform, pool, wid, resume)
