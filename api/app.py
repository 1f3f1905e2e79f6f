from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.body_limit import BodyLimitMiddleware
from api.errors import UnexpectedErrorMiddleware, install_error_handlers
from api.platform import Platform
from api.routes import (
    a2a,
    activity,
    chat_files,
    delegations,
    discovery,
    events,
    lifecycle,
    models,
    registry,
    secrets,
    system,
    tokens,
    workspaces,
)
from config.settings import Settings, get_settings
from config.version import __version__
from domain.chat_files import MAX_UPLOAD_BYTES

log = logging.getLogger("molecule.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    platform = Platform(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not settings.admin_token:
            if settings.molecule_env == "development":
                log.warning(
                    "!!! ADMIN_TOKEN is not set: operator routes are OPEN (MOLECULE_ENV=development) !!!"
                )
            else:
                log.warning("ADMIN_TOKEN is not set: operator routes will answer 401 until it is")
        # Everything loaded so far lives as long as the process. Freezing it keeps it out of the
        # collector's full passes, which otherwise walk every imported module's objects (~50 ms
        # pauses, the p99 of heartbeat ingest) while finding nothing to free.
        gc.freeze()
        yield
        await platform.close()

    app = FastAPI(title="Molecule", version=__version__, lifespan=lifespan)
    app.state.platform = platform
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        larger={chat_files.UPLOAD_PATH: MAX_UPLOAD_BYTES},
    )
    app.add_middleware(UnexpectedErrorMiddleware)  # outermost of ours: it sees every route's failure
    install_error_handlers(app)
    for router in (
        workspaces.router,
        lifecycle.router,
        lifecycle.admin_router,
        registry.router,
        a2a.router,
        a2a.admin_router,
        delegations.router,
        activity.router,
        chat_files.router,
        tokens.router,
        secrets.settings_router,
        secrets.workspace_router,
        models.router,
        models.templates_router,
        discovery.router,
        events.router,
        system.router,
    ):
        app.include_router(router)
    return app
