"""Fans Postgres NOTIFY events out to SSE subscribers of this API replica."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from store import events as event_store

log = logging.getLogger("molecule.events")
_QUEUE_SIZE = 1000


@dataclass(eq=False)
class Subscription:
    workspace_id: str | None
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(_QUEUE_SIZE))
    # The queue was full and notifications were dropped; the table still has their rows.
    lagged: bool = False
    # The listener lost its connection: what commits until it is back is never heard.
    lost: bool = False


class EventHub:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def subscribe(self, workspace_id: str | None) -> Subscription:
        if self._task is None or self._task.done():
            self._ready.clear()
            self._task = asyncio.create_task(self._listen())
        # Events committed before LISTEN took effect are replayed from the table by the caller.
        await asyncio.wait_for(self._ready.wait(), 10)
        sub = Subscription(workspace_id)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    async def _listen(self) -> None:
        backoff = 0.5
        while True:
            try:
                conn = await asyncpg.connect(self.dsn)
                try:
                    await conn.add_listener(event_store.CHANNEL, self._on_notify)
                    self._ready.set()
                    backoff = 0.5
                    while not conn.is_closed():
                        await asyncio.sleep(5)
                        await conn.execute("SELECT 1")
                finally:
                    with contextlib.suppress(Exception):
                        await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event listener lost its connection (%s); reconnecting", type(exc).__name__)
            self._ready.clear()
            for sub in list(self._subs):  # a gap in the stream: tell clients to resume with Last-Event-ID
                sub.lost = True
                with contextlib.suppress(asyncio.QueueFull):
                    sub.queue.put_nowait({})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            event = json.loads(payload)
        except ValueError:
            return
        for sub in list(self._subs):
            if sub.workspace_id and event.get("workspace_id") != sub.workspace_id:
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.lagged = True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
