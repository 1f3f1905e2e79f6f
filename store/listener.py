"""One LISTEN connection per process on the events channel, reconnecting on loss, handing every
parsed notification to the callbacks registered with it (SSE fan-out, A2A idle timers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from store.events import CHANNEL

log = logging.getLogger("molecule.events")
Callback = Callable[[dict[str, Any]], None]


class Listener:
    def __init__(self, dsn: str, on_lost: Callable[[], None] | None = None) -> None:
        self.dsn = dsn
        self._callbacks: set[Callback] = set()
        self._by_workspace: dict[str, set[Callback]] = {}
        self._on_lost = on_lost
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    def start(self) -> None:
        """Start listening (idempotent); `ready` is set once LISTEN is in effect."""
        if self._task is None or self._task.done():
            self.ready.clear()
            self._task = asyncio.create_task(self._listen())

    def add(self, callback: Callback) -> None:
        self._callbacks.add(callback)

    def discard(self, callback: Callback) -> None:
        self._callbacks.discard(callback)

    def watch(self, workspace_id: str, touch: Callable[[], None]) -> Callable[[], None]:
        """Call `touch` on every event of one workspace until the returned function is called."""
        self.start()

        def callback(_event: dict[str, Any]) -> None:
            touch()

        self._by_workspace.setdefault(workspace_id, set()).add(callback)

        def unwatch() -> None:
            callbacks = self._by_workspace.get(workspace_id)
            if callbacks is not None:
                callbacks.discard(callback)
                if not callbacks:
                    del self._by_workspace[workspace_id]

        return unwatch

    async def _listen(self) -> None:
        backoff = 0.5
        while True:
            try:
                conn = await asyncpg.connect(self.dsn)
                try:
                    await conn.add_listener(CHANNEL, self._on_notify)
                    self.ready.set()
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
            self.ready.clear()
            if self._on_lost is not None:
                self._on_lost()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            event = json.loads(payload)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        for callback in list(self._callbacks):
            callback(event)
        workspace_id = event.get("workspace_id")
        if isinstance(workspace_id, str):
            for callback in list(self._by_workspace.get(workspace_id, ())):
                callback(event)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
