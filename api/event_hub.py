"""Fans Postgres NOTIFY events out to SSE subscribers of this API replica."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from store.listener import Listener

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
        self.listener = Listener(dsn, on_lost=self._on_lost)
        self.listener.add(self._on_event)
        self._subs: set[Subscription] = set()

    async def subscribe(self, workspace_id: str | None) -> Subscription:
        self.listener.start()
        # Events committed before LISTEN took effect are replayed from the table by the caller.
        await asyncio.wait_for(self.listener.ready.wait(), 10)
        sub = Subscription(workspace_id)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def _on_lost(self) -> None:
        for sub in list(self._subs):  # a gap in the stream: tell clients to resume with Last-Event-ID
            sub.lost = True
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait({})

    def _on_event(self, event: dict[str, Any]) -> None:
        for sub in list(self._subs):
            if sub.workspace_id and event.get("workspace_id") != sub.workspace_id:
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.lagged = True

    async def stop(self) -> None:
        await self.listener.stop()
