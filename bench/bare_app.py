"""Baseline for heartbeat ingest: a bare FastAPI endpoint doing the same single UPDATE with asyncpg.

DATABASE_URL=... uvicorn bench.bare_app:app --port P
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request

state: dict[str, asyncpg.Pool] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    state["pool"] = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=4, max_size=20)
    yield
    await state["pool"].close()


app = FastAPI(lifespan=lifespan)


@app.post("/heartbeat")
async def heartbeat(request: Request) -> dict[str, str]:
    body = await request.json()
    await state["pool"].execute(
        """UPDATE workspaces SET last_heartbeat_at = now(), last_error_rate = $2, active_tasks = $3,
                  uptime_seconds = $4, runtime_state = $5, updated_at = now() WHERE id = $1""",
        body["workspace_id"],
        body.get("error_rate", 0.0),
        body.get("active_tasks", 0),
        body.get("uptime_seconds", 0),
        body.get("runtime_state", ""),
    )
    return {"status": "ok"}
