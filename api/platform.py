"""Connections the API holds: opened lazily so the API starts (and answers 503) while a dependency is down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

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
from relay.dispatch import Dispatcher
from relay.forward import ForwardConfig, Forwarder
from store.db import create_pool
from store.keyring import load_keyring
from store.objects import object_store

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
        self.dispatcher = Dispatcher(settings.ssrf_policy())
        self.objects = object_store(settings)
        # Loaded at start: a malformed key stops the API here, before it accepts a secret it could
        # not read back.
        self.keyring = load_keyring(settings.secrets_encryption_key, settings.data_dir)
        self._forwarder: Forwarder | None = None
        self._background: set[asyncio.Task[Any]] = set()

    async def forwarder(self) -> Forwarder:
        if self._forwarder is None:
            config = ForwardConfig(
                idle_timeout_seconds=self.settings.a2a_idle_timeout_seconds,
                ceiling_seconds=self.settings.a2a_call_ceiling_seconds,
                queue_ttl_seconds=self.settings.a2a_queue_ttl_seconds,
                docker_network=self.settings.docker_network,
            )
            self._forwarder = Forwarder(await self.pool(), self.dispatcher, self.hub.listener.watch, config)
        return self._forwarder

    def spawn(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run `work` after the reply (a log row, a wake): kept referenced, failures logged."""

        async def run() -> None:
            try:
                await work
            except Exception as exc:
                log.warning("%s failed (%s)", what, type(exc).__name__)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        await self.dispatcher.close()
        await self.hub.stop()
        if self._pool is not None:
            await self._pool.close()
