"""Coalesces heartbeat news per workspace: the same news is signalled at most once per window.

A signal is durable once sent; while the workflow catches up, later beats carrying the same news
(same status as read, error band, runtime_state, status_mgmt) add nothing but Temporal history and load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

DEFAULT_WINDOW_SECONDS = 10.0
_MAX_ENTRIES = 100_000


class NewsGate:
    def __init__(
        self, window: float = DEFAULT_WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self.clock = clock
        self._sent: dict[str, tuple[Hashable, float]] = {}

    def should_signal(self, workspace_id: str, signature: Hashable) -> bool:
        now = self.clock()
        previous = self._sent.get(workspace_id)
        if previous is not None and previous[0] == signature and now - previous[1] < self.window:
            return False
        if len(self._sent) >= _MAX_ENTRIES:
            self._sent.clear()
        self._sent[workspace_id] = (signature, now)
        return True
