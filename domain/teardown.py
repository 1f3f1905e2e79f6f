"""How hard the workflow tries to stop an instance. Pure numbers, shared by teardown and reapers."""

from __future__ import annotations

# After this many failed stop attempts the instance is a leak suspect (event + search attribute).
LEAK_SUSPECT_AFTER = 3
# Restart and pause stop with this many attempts before handing the instance to a reaper.
RESTART_STOP_ATTEMPTS = 3
MAX_STOP_BACKOFF_SECONDS = 300.0
# The boot watcher's log tail is kept to this many bytes.
LOG_TAIL_MAX_BYTES = 8192


def stop_backoff(failed_attempts: int) -> float:
    """Seconds to wait after the n-th failed stop: 1 s, 2 s, 4 s … capped at 5 minutes."""
    return min(2.0 ** max(0, failed_attempts - 1), MAX_STOP_BACKOFF_SECONDS)


def truncate_utf8(text: str, limit: int = LOG_TAIL_MAX_BYTES) -> str:
    """The last `limit` bytes of `text` (a tail keeps the end), never splitting a character."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[-limit:].decode(errors="ignore")
