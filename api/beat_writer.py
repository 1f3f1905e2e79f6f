"""Group commit for heartbeats: beats that arrive while a write is in flight go out together.

At fleet scale the cost of a beat is mostly per statement (a round trip, a transaction, a commit), not
per row, so concurrent beats share one statement (store.heartbeats.record_beats). Beats are taken in
arrival order; a workspace's second beat waits for the next batch, since one statement writes a row
once. A lone beat is written at once: batching only ever forms behind a write already in flight.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from store.heartbeats import Beat, BeatResult, PendingBeat, record_beats

DEFAULT_WRITERS = 4
DEFAULT_MAX_BATCH = 64


@dataclass(eq=False)
class _Waiting:
    beat: PendingBeat
    reply: asyncio.Future[BeatResult]


class BeatWriter:
    def __init__(
        self,
        pool: Callable[[], Awaitable[asyncpg.Pool]],
        writers: int = DEFAULT_WRITERS,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self._pool = pool
        self.writers = writers
        self.max_batch = max_batch
        self._queue: deque[_Waiting] = deque()
        self._tasks: set[asyncio.Task[None]] = set()  # strong references while they run
        self._active = 0  # counted by the writers themselves: a finished task's done-callback runs late
        self._in_flight: set[str] = set()  # workspaces some writer is writing now: their next beat waits

    async def record(self, token_hash: str, workspace_id: str, beat: Beat) -> BeatResult:
        reply: asyncio.Future[BeatResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(PendingBeat(token_hash, workspace_id, beat), reply))
        if self._active < self.writers:
            self._active += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await reply

    def _take(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        later: list[_Waiting] = []
        while self._queue and len(batch) < self.max_batch:
            waiting = self._queue.popleft()
            if waiting.reply.done():  # the caller went away; nothing to answer
                continue
            if waiting.beat.workspace_id in self._in_flight:  # in this batch or another writer's
                later.append(waiting)
                continue
            self._in_flight.add(waiting.beat.workspace_id)
            batch.append(waiting)
        self._queue.extendleft(reversed(later))
        return batch

    async def _drain(self) -> None:
        try:
            await self._write_batches()
        finally:
            self._active -= 1  # in the same step as the empty-queue check: no beat is left unserved

    async def _write_batches(self) -> None:
        while self._queue:
            batch = self._take()
            if not batch:  # what is left waits on workspaces other writers hold: they take it after
                return
            try:
                pool = await self._pool()
                async with pool.acquire() as conn:
                    outcomes: list[BeatResult | Exception] = await self._write(conn, batch)
            except Exception as exc:  # each caller turns it into its reply (503 when the DB is down)
                outcomes = [exc] * len(batch)
            except BaseException:  # shutting down: nobody is left to answer
                for waiting in batch:
                    waiting.reply.cancel()
                raise
            finally:
                self._in_flight -= {w.beat.workspace_id for w in batch}
            for waiting, outcome in zip(batch, outcomes, strict=True):
                if waiting.reply.done():
                    continue
                if isinstance(outcome, BaseException):
                    waiting.reply.set_exception(outcome)
                else:
                    waiting.reply.set_result(outcome)

    async def _write(self, conn: asyncpg.Connection, batch: list[_Waiting]) -> list[BeatResult | Exception]:
        try:
            return list(await record_beats(conn, [w.beat for w in batch]))
        except Exception:
            if len(batch) == 1 or conn.is_closed():
                raise
        # A beat Postgres refuses must not fail the rest of its batch: each is written alone.
        outcomes: list[BeatResult | Exception] = []
        for waiting in batch:
            try:
                outcomes.extend(await record_beats(conn, [waiting.beat]))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes
