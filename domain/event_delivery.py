"""Which event ids a stream has already sent. Pure.

Event ids come from a sequence and are allocated before commit, so rows commit out of id order: a
row with a lower id can become visible after a higher one was sent. A single high-water mark would
drop it as "already sent"; DeliveredIds remembers which ids were sent within a window below the
highest one instead, in a fixed amount of memory (one bit per id)."""

from __future__ import annotations

DEFAULT_SPAN = 65_536


class DeliveredIds:
    def __init__(self, span: int = DEFAULT_SPAN) -> None:
        self.span = span
        self.top: int | None = None  # the highest id sent
        self._bits = 0  # bit k set: id `top - k` was sent
        self._mask = (1 << span) - 1

    def first_delivery(self, event_id: int) -> bool:
        """Mark `event_id` as sent; False when it already was (a duplicate to drop).

        An id more than `span` below the highest one sent cannot be told apart and counts as new:
        a duplicate that late is possible in principle, a lost event is not."""
        if self.top is None or event_id > self.top:
            shift = self.span if self.top is None else event_id - self.top
            self._bits = 1 if shift >= self.span else ((self._bits << shift) | 1) & self._mask
            self.top = event_id
            return True
        behind = self.top - event_id
        if behind >= self.span:
            return True
        bit = 1 << behind
        if self._bits & bit:
            return False
        self._bits |= bit
        return True
