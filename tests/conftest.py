from __future__ import annotations

import os
import sys

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(component: str, available: bool, why: str = "") -> None:
    """Skip locally when a real component is missing; under CI=true that is a failure, never a skip."""
    if available:
        return
    message = f"{component} is not available{': ' + why if why else ''}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # The Temporal SDK's Rust bridge can abort the interpreter during finalisation
    # (temporalio/sdk-python#300); once pytest has reported, skip teardown to keep the exit code honest.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
