"""Connections the API holds: opened lazily so the API starts (and answers 503) while a dependency is down."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from temporalio.client import Client

from api.auth_limit import AuthFailureLimiter
from api.beat_writer import BeatWriter
from api.errors import OrchestratorUnavailable, PlatformUnavailable
from api.event_hub import EventHub
from api.gateway import WorkflowGateway
from api.news_gate import NewsGate
from api.secret_cache import InboundSecretCache
from config.settings import Settings
from config.templates import TemplateCatalog
from store.db import create_pool

log = logging.getLogger("molecule.api")
_CONNECT_TIMEOUT = 5.0


class Platform:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.templates = TemplateCatalog(settings.templates_dir)
        self.hub = EventHub(settings.database_url or "")
        self.inbound_secrets = InboundSecretCache()
        self.news = NewsGate()
        self.auth_failures = AuthFailureLimiter(settings.auth_failure_limit_per_minute)
        self._pool: asyncpg.Pool | None = None
        self._client: Client | None = None
        self._lock = asyncio.Lock()
        self.beats = BeatWriter(self.pool)
        self.gateway = WorkflowGateway(
            self.temporal, settings.task_queue, settings.update_reply_timeout_seconds
        )

    async def pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        if not self.settings.database_url:
            raise PlatformUnavailable()
        async with self._lock:
            if self._pool is None:
                try:
                    self._pool = await asyncio.wait_for(
                        create_pool(
                            self.settings.database_url, min_size=1, max_size=20, timeout=_CONNECT_TIMEOUT
                        ),
                        _CONNECT_TIMEOUT * 2,
                    )
                except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                    log.warning("cannot connect to PostgreSQL: %s", type(exc).__name__)
                    raise PlatformUnavailable() from None
        return self._pool

    async def temporal(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(
                        Client.connect(
                            self.settings.temporal_address, namespace=self.settings.temporal_namespace
                        ),
                        _CONNECT_TIMEOUT,
                    )
                except (RuntimeError, OSError, TimeoutError) as exc:
                    log.warning("cannot connect to Temporal: %s", type(exc).__name__)
                    raise OrchestratorUnavailable() from None
        return self._client

    async def close(self) -> None:
        await self.hub.stop()
        if self._pool is not None:
            await self._pool.close()
