"""A host-wide exclusive lock on a file: for work two processes must never do at once (two test
runs initialising one PGDATA, `make run` building the agent image beside a test run)."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Held until the block ends; the second caller waits. The lock goes with the process, so a
    killed holder never leaves it taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
