"""Failed authentication, counted per client address.

`limit` wrong tokens (admin or workspace) from one address within a window of `window` seconds
(a fixed window that opens at its first failure) lock that address out: every authenticated route
answers it 429 until the window closes, without looking at the token (so a locked-out address
learns nothing, and costs no database round trip) -- except for a token that already authenticated
from that address, so its valid callers (agents sharing 127.0.0.1 with a misbehaving one, say) carry
on unslowed. Other addresses are unaffected. A missing token, a revoked one, or a token used for
another workspace is not a guess and is not counted.

In memory, per API process: each replica counts on its own. Both operations are O(1); windows are
kept in the order they opened, so expired ones are dropped from the front as new ones open, and at
most `max_tracked` addresses are remembered.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Window:
    opened: float
    failures: int


class AuthFailureLimiter:
    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = 100_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_tracked = max_tracked
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        # (address, credential digest) pairs that authenticated, most recent last.
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()

    def retry_after(self, address: str, credential: str | None = None) -> int | None:
        """Whole seconds until `address` may try again, or None when it may try now.
        `credential`: a digest of the token offered; one that authenticated from here passes."""
        if not self.limit:
            return None
        entry = self._windows.get(address)
        if entry is None or entry.failures < self.limit:
            return None
        if credential is not None and (address, credential) in self._known:
            return None
        remaining = entry.opened + self.window - self.clock()
        if remaining <= 0:
            del self._windows[address]
            return None
        return max(1, math.ceil(remaining))

    def succeeded(self, address: str, credential: str) -> None:
        """`credential` (a digest) authenticated from `address`: it is never locked out there."""
        if not self.limit:
            return
        key = (address, credential)
        if key in self._known:
            self._known.move_to_end(key)
            return
        self._known[key] = None
        if len(self._known) > self.max_tracked:
            self._known.popitem(last=False)

    def failed(self, address: str) -> None:
        if not self.limit:
            return
        now = self.clock()
        entry = self._windows.get(address)
        if entry is not None and now - entry.opened < self.window:
            entry.failures += 1
            return
        self._windows[address] = _Window(now, 1)
        self._windows.move_to_end(address)
        self._forget_expired(now)

    def _forget_expired(self, now: float) -> None:
        while self._windows:
            address, oldest = next(iter(self._windows.items()))
            if now - oldest.opened < self.window and len(self._windows) <= self.max_tracked:
                return
            del self._windows[address]
