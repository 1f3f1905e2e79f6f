"""In-process cache of each workspace's platform_inbound_secret (5-minute TTL).

Write-through on mint; a miss is never cached, so a secret minted elsewhere is found on the next read.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_TTL_SECONDS = 300.0


class InboundSecretCache:
    def __init__(self, ttl: float = DEFAULT_TTL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[str, tuple[str, float]] = {}

    def get(self, workspace_id: str) -> str | None:
        entry = self._entries.get(workspace_id)
        if entry is None:
            return None
        secret, expires = entry
        if self.clock() >= expires:
            del self._entries[workspace_id]
            return None
        return secret

    def put(self, workspace_id: str, secret: str | None) -> None:
        if secret:
            self._entries[workspace_id] = (secret, self.clock() + self.ttl)

    def forget(self, workspace_id: str) -> None:
        self._entries.pop(workspace_id, None)
