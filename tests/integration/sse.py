"""A small SSE client for tests: collects events in the background, awaits the one you want."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import httpx

Event = dict[str, Any]


class EventStream:
    def __init__(
        self, client: httpx.AsyncClient, path: str = "/events", headers: dict[str, str] | None = None
    ) -> None:
        self.client = client
        self.path = path
        self.headers = headers or {}
        self.events: list[Event] = []
        self._changed = asyncio.Condition()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventStream:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._connected.wait(), 15)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        async with self.client.stream("GET", self.path, headers=self.headers, timeout=None) as response:
            response.raise_for_status()
            data: list[str] = []
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    self._connected.set()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    event = json.loads("\n".join(data))
                    data = []
                    async with self._changed:
                        self.events.append(event)
                        self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 60.0) -> Event:
        async def _wait() -> Event:
            async with self._changed:
                await self._changed.wait_for(lambda: any(predicate(e) for e in self.events))
                return next(e for e in self.events if predicate(e))

        return await asyncio.wait_for(_wait(), timeout)

    async def wait_type(self, event_type: str, workspace_id: str, timeout: float = 60.0) -> Event:
        return await self.wait_for(
            lambda e: e["event_type"] == event_type and e["workspace_id"] == workspace_id, timeout
        )
