"""`python -m tests.integration.chaos_worker`: the real worker, with every backend's `stop` failing
at random (CHAOS_STOP_FAILURE_RATE, default 0.3; CHAOS_SEED for a repeatable run).

At most MAX_FAILURES_PER_INSTANCE injected per instance (per worker process): a teardown's backoff
doubles with each failure, up to 5 minutes, so an unbounded run of bad luck (9 in a row is 511 s of
backoff, about one run in five with 100 workspaces of up to two instances each) would test the dice,
not the platform. Three per instance still reaches the leak-suspect path; the never-give-up loop
itself is tested in tests/workflows/test_teardown.py."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import Any

from backends.base import BackendError, Provisioner
from backends.registry import Backends
from config.settings import Settings
from workers.main import run_worker

log = logging.getLogger("molecule.chaos")
MAX_FAILURES_PER_INSTANCE = 3


class FlakyStop:
    def __init__(self, inner: Provisioner, rate: float, rng: random.Random) -> None:
        self.inner = inner
        self.name = inner.name
        self.rate = rate
        self.rng = rng
        self.injected = 0
        self.failures: dict[str, int] = {}

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    async def stop(self, instance_id: str) -> None:
        failures = self.failures.get(instance_id, 0)
        if failures < MAX_FAILURES_PER_INSTANCE and self.rng.random() < self.rate:
            self.failures[instance_id] = failures + 1
            self.injected += 1
            log.info("chaos: failing stop of %s (%d injected so far)", instance_id, self.injected)
            raise BackendError("chaos: injected stop failure")
        await self.inner.stop(instance_id)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    rate = float(os.environ.get("CHAOS_STOP_FAILURE_RATE", "0.3"))
    rng = random.Random(os.environ.get("CHAOS_SEED"))
    backends = Backends(settings)
    for _, provisioner in backends.items():
        backends.replace(FlakyStop(provisioner, rate, rng))
    asyncio.run(run_worker(settings, backends))
    os._exit(0)  # see molecule.cli._hard_exit: the SDK's bridge can abort at interpreter exit


if __name__ == "__main__":
    main()
