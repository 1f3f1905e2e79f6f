"""The activity log's rules: what a row may say, how a read is filtered, and the views the clients
read (the SDK's `data`, a notify's chat row)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from domain.a2a import part_texts, preview

# The five the platform writes and agents report, and the two the original also took from agents.
ACTIVITY_TYPES = (
    "a2a_send",
    "a2a_receive",
    "task_update",
    "agent_log",
    "error",
    "skill_promotion",
    "memory_write",
)
STATUSES = ("ok", "error", "timeout")
SOURCES = ("canvas", "agent")
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
MAX_SINCE_SECS = 30 * 24 * 3600
NOTIFY_METHOD = "notify"
NOTIFY_SUMMARY_CHARS = 80

_SINCE_ID = re.compile(r"^[0-9]{1,18}$")
_COUNT = re.compile(r"^[0-9]{1,9}$")  # ASCII digits only: str.isdigit() takes '²', which int() refuses


class InvalidFilter(ValueError):
    """A query parameter that cannot be read; its message names the parameter."""


class CursorLost(LookupError):
    """`since_id` names no row of this workspace (another server's cursor, or a pruned row)."""


@dataclass(frozen=True)
class ActivityFilter:
    activity_type: str | None = None
    source: str | None = None
    since_secs: int | None = None
    since_id: int | None = None
    limit: int = DEFAULT_LIMIT
    peer_id: str | None = None
    before: datetime | None = None
    oldest_first: bool = False
    # An agent reading its own inbox does not get its own notify messages back as if a user wrote them.
    hide_own_notify: bool = False


def parse_filter(
    *,
    activity_type: str | None,
    source: str | None,
    since_secs: str | None,
    since_id: str | None,
    limit: str | None,
    peer_id: str | None,
    before_ts: str | None,
    order: str | None,
) -> ActivityFilter:
    """Query parameters as the clients send them (all text) → a filter, or InvalidFilter/CursorLost."""
    if activity_type is not None and activity_type not in ACTIVITY_TYPES:
        raise InvalidFilter(f"type must be one of: {', '.join(ACTIVITY_TYPES)}")
    if source is not None and source not in SOURCES:
        raise InvalidFilter("source must be 'canvas' or 'agent'")
    secs = None
    if since_secs is not None:
        if not _COUNT.match(since_secs) or int(since_secs) <= 0:
            raise InvalidFilter("since_secs must be a positive integer")
        secs = min(int(since_secs), MAX_SINCE_SECS)
    cursor = None
    if since_id is not None:
        if _SINCE_ID.match(since_id):
            cursor = int(since_id)
        elif _is_uuid(since_id):
            raise CursorLost(since_id)  # the original server's cursors were UUIDs: start again
        else:
            raise InvalidFilter("since_id must be the id of an activity row (an integer)")
    count = DEFAULT_LIMIT
    if limit is not None:
        if not _COUNT.match(limit) or not 1 <= int(limit) <= MAX_LIMIT:
            raise InvalidFilter(f"limit must be an integer from 1 to {MAX_LIMIT}")
        count = int(limit)
    peer = None
    if peer_id is not None:
        if not _is_uuid(peer_id):
            raise InvalidFilter("peer_id must be a UUID")
        peer = str(uuid.UUID(peer_id))
    before = None
    if before_ts is not None:
        before = parse_rfc3339(before_ts)
        if before is None:
            raise InvalidFilter("before_ts must be an RFC 3339 timestamp (e.g. 2026-05-01T00:00:00Z)")
    if order not in (None, "asc", "desc"):
        raise InvalidFilter("order must be 'asc' or 'desc'")
    # Oldest first unless asked otherwise: the SDK's and the CLI's pollers take the last row they
    # read as their next cursor, the first poll (no cursor) included.
    oldest_first = order != "desc"
    return ActivityFilter(activity_type, source, secs, cursor, count, peer, before, oldest_first)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) in (32, 36)


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def parse_rfc3339(text: str) -> datetime | None:
    """A timestamp with its offset (RFC 3339), else None; nanoseconds are cut to microseconds."""
    if not _RFC3339.match(text):
        return None
    main, _, rest = text.replace("z", "Z").partition(".")
    if rest:
        digits = re.match(r"\d+", rest)
        assert digits is not None
        zone = rest[digits.end() :]
        text = f"{main}.{digits.group()[:6]}{zone}"
    try:
        # In UTC here: a time at the edge of the calendar (9999-12-31T23:59:59-23:59) has none.
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def inbound_view(row: dict[str, Any]) -> dict[str, Any] | None:
    """What the SDK's poller reads of an a2a_receive row (`data.source`, `data.text`): who sent it,
    and the text of the message it carried. None for other rows."""
    if row.get("activity_type") != "a2a_receive":
        return None
    source_id = row.get("source_id")
    request = row.get("request_body")
    text = ""
    if isinstance(request, dict):
        params = request.get("params")
        message = params.get("message") if isinstance(params, dict) else None
        if isinstance(message, dict):
            text = "\n".join(part_texts(message.get("parts")))
    if row.get("method") == NOTIFY_METHOD:
        response = row.get("response_body")
        result = response.get("result") if isinstance(response, dict) else None
        return {"source": "agent", "text": result if isinstance(result, str) else ""}
    return {
        "source": "peer_agent" if source_id else "canvas_user",
        "source_id": source_id,
        "text": text,
    }


def notify_summary(message: str) -> str:
    """Of a message already redacted (a cut first could split a secret past recognition)."""
    return "Agent message: " + preview(message, NOTIFY_SUMMARY_CHARS)


def file_part(attachment: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "file", "file": attachment}
