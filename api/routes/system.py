from __future__ import annotations

import asyncio
import os
import subprocess
from functools import lru_cache

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import PlatformDep
from api.errors import ApiError
from api.schemas import Health
from config.settings import REPO_ROOT
from config.version import __version__

router = APIRouter(tags=["system"])
_CHECK_TIMEOUT = 3.0


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "PostgreSQL or Temporal is unavailable"}},
)
async def health(platform: PlatformDep) -> JSONResponse:
    checks = {"database": "ok", "temporal": "ok"}
    code = None
    try:
        pool = await platform.pool()
        await asyncio.wait_for(pool.fetchval("SELECT 1"), _CHECK_TIMEOUT)
    except (ApiError, OSError, TimeoutError, Exception):
        checks["database"] = "unavailable"
        code = "platform_unavailable"
    try:
        await platform.gateway.check_health(_CHECK_TIMEOUT)
    except Exception:
        checks["temporal"] = "unavailable"
        code = code or "orchestrator_unavailable"
    # `version` and `database` at the top level too: the CLI's `platform health` reads them there.
    reply = {"version": __version__, "database": checks["database"], "checks": checks}
    if code:
        return JSONResponse({"status": "unavailable", "code": code, **reply}, status_code=503)
    return JSONResponse({"status": "ok", **reply})


@lru_cache(maxsize=1)
def _git_sha() -> str:
    if os.environ.get("GIT_SHA"):
        return os.environ["GIT_SHA"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@router.get("/buildinfo")
async def buildinfo() -> dict[str, str]:
    return {"git_sha": _git_sha(), "version": __version__}
