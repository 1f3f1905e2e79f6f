"""The activity log (`POST`/`GET /workspaces/{id}/activity`) and an agent's messages to its user
(`POST /workspaces/{id}/notify`). Each takes the workspace's own token or the operator's."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Query

from api.deps import PoolDep, WorkspaceOrOperator, check_owner_or_operator, live_workspace, parse_workspace_id
from api.errors import ApiError
from api.openapi import AUTHENTICATED, errors
from api.schemas import ActivityLogged, ActivityReport, ActivityRow, Notified, NotifyBody, unstorable
from domain.a2a import bounded_json, preview
from domain.activity import (
    ACTIVITY_TYPES,
    NOTIFY_METHOD,
    CursorLost,
    InvalidFilter,
    file_part,
    inbound_view,
    notify_summary,
    parse_filter,
)
from domain.events import EventType
from domain.redaction import Redactor, redact_json
from store import activity as activity_store
from store.activity import NewActivity

router = APIRouter(prefix="/workspaces/{workspace_id}", tags=["activity"], responses=AUTHENTICATED)
_REDACTOR = Redactor()
SUMMARY_CHARS = 1000
ERROR_CHARS = 4000
_ATTACHMENT_TEXT = {"uri": 2048, "name": 255, "mimeType": 255}
_ATTACHMENT_SCHEMES = ("workspace:/", "https://", "http://")


def _id_or_none(value: str | None, field: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        return parse_workspace_id(value)
    except ApiError:
        raise ApiError(400, f"{field} must be a workspace id (a UUID)", "invalid_body") from None


def _stored_json(value: Any) -> Any:
    return None if value is None else redact_json(bounded_json(value), _REDACTOR)


def _text(value: str | None, limit: int) -> str | None:
    # Redacted whole, then cut: a cut first could split a secret past recognition.
    return preview(_REDACTOR.redact(value), limit) if value else None


@router.post("/activity", response_model=ActivityLogged, responses=errors(400, 403, 404, 410, 413))
async def report_activity(
    workspace_id: str, body: ActivityReport, caller: WorkspaceOrOperator, pool: PoolDep
) -> ActivityLogged:
    check_owner_or_operator(caller, parse_workspace_id(workspace_id))
    wid, _ = await live_workspace(pool, workspace_id)
    if body.activity_type not in ACTIVITY_TYPES:
        raise ApiError(
            400, f"invalid activity_type, must be one of: {', '.join(ACTIVITY_TYPES)}", "invalid_body"
        )
    source_id = _id_or_none(body.source_id, "source_id")
    if source_id is not None and source_id != wid:
        raise ApiError(403, "source_id must be the workspace the activity is reported for", "forbidden")
    # A self-action carries its own id as target.
    target_id = _id_or_none(body.target_id, "target_id") or wid
    row = NewActivity(
        workspace_id=wid,
        activity_type=body.activity_type,
        source_id=source_id or wid,
        target_id=target_id,
        method=_text(body.method, 200),
        summary=_text(body.summary, SUMMARY_CHARS),
        request_body=_stored_json(body.request_body if body.request_body is not None else body.metadata),
        response_body=_stored_json(body.response_body),
        duration_ms=body.duration_ms,
        status=body.status,
        error_detail=_text(body.error_detail, ERROR_CHARS),
        tool_trace=_stored_json(body.tool_trace),
        idempotency_key=body.idempotency_key or None,
    )
    # The event says what happened, never the bodies (they stay in the log, behind its auth).
    event = {
        "activity_type": row.activity_type,
        "method": row.method,
        "summary": row.summary,
        "status": row.status,
        "source_id": row.source_id,
        "target_id": row.target_id,
        "duration_ms": row.duration_ms,
    }
    activity_id, new = await activity_store.insert(pool, row, EventType.ACTIVITY_LOGGED, event)
    return ActivityLogged(id=activity_id, duplicate=not new)


@router.get(
    "/activity",
    response_model=list[ActivityRow],
    response_model_exclude_none=False,
    responses=errors(400, 403, 404, 410),
    description=(
        "Oldest first (order=desc for newest first): the latest `limit` rows (older than `before_ts`), "
        "or with `since_id` the first rows after that cursor; take the last id read as the next "
        "cursor. A cursor this workspace does not have answers 410 `cursor_lost`: start again "
        "without it. An agent reading its own a2a_receive rows (its inbox) does not get its own "
        "notify messages back."
    ),
)
async def list_activity(
    workspace_id: str,
    caller: WorkspaceOrOperator,
    pool: PoolDep,
    type: str | None = Query(default=None, description=" | ".join(ACTIVITY_TYPES)),
    source: str | None = Query(default=None, description="canvas (from the user) | agent"),
    since_secs: str | None = Query(default=None, description="rows of the last N seconds (at most 30 days)"),
    since_id: str | None = Query(default=None, description="rows after this id, oldest first"),
    limit: str | None = Query(default=None, description="1 to 500, default 100"),
    peer_id: str | None = Query(default=None, description="rows whose source or target is this workspace"),
    before_ts: str | None = Query(default=None, description="rows strictly older (RFC 3339)"),
    order: str | None = Query(default=None, description="asc | desc, overriding the default"),
) -> list[ActivityRow]:
    check_owner_or_operator(caller, parse_workspace_id(workspace_id))
    wid, _ = await live_workspace(pool, workspace_id)
    try:
        f = parse_filter(
            activity_type=type,
            source=source,
            since_secs=since_secs,
            since_id=since_id,
            limit=limit,
            peer_id=peer_id,
            before_ts=before_ts,
            order=order,
        )
        if f.since_id is not None and not await activity_store.cursor_exists(pool, wid, f.since_id):
            raise CursorLost(since_id)
    except InvalidFilter as exc:
        raise ApiError(400, str(exc), "invalid_parameter") from None
    except CursorLost:
        raise ApiError(
            410,
            f"since_id {since_id} is not a row of this workspace (pruned, or another server's cursor); "
            "read again without since_id",
            "cursor_lost",
        ) from None
    if caller is not None and f.activity_type == "a2a_receive":
        f = replace(f, hide_own_notify=True)
    rows = await activity_store.list_rows(pool, wid, f)
    return [ActivityRow(**row, data=inbound_view(row)) for row in rows]


def _check_attachments(attachments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checked = []
    for i, item in enumerate(attachments):
        uri, name = item.get("uri"), item.get("name")
        if not isinstance(uri, str) or not uri.strip() or not isinstance(name, str) or not name.strip():
            raise ApiError(400, f"attachment[{i}]: uri and name are required", "invalid_attachment")
        clean: dict[str, Any] = {"uri": uri, "name": name}
        if item.get("mimeType") is not None:
            if not isinstance(item["mimeType"], str):
                raise ApiError(400, f"attachment[{i}]: mimeType must be a string", "invalid_attachment")
            clean["mimeType"] = item["mimeType"]
        if item.get("size") is not None:
            size = item["size"]
            if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2**53:
                raise ApiError(
                    400, f"attachment[{i}]: size must be a non-negative integer", "invalid_attachment"
                )
            clean["size"] = size
        for key, limit in _ATTACHMENT_TEXT.items():
            text = clean.get(key) or ""
            if len(text) > limit:
                raise ApiError(
                    400, f"attachment[{i}]: {key} must be at most {limit} characters", "invalid_attachment"
                )
            if unstorable(text):
                raise ApiError(
                    400,
                    f"attachment[{i}]: {key} must not contain NUL or lone surrogates",
                    "invalid_attachment",
                )
        if not uri.startswith(_ATTACHMENT_SCHEMES):
            raise ApiError(
                400,
                f"attachment[{i}]: uri must be a workspace:/ file or an http(s) URL",
                "invalid_attachment",
            )
        # A presigned or ?token= URL is a secret too: it is broadcast and stored redacted.
        clean["uri"] = _REDACTOR.redact(uri)
        checked.append(clean)
    return checked


@router.post("/notify", response_model=Notified, responses=errors(400, 403, 404, 410, 413))
async def notify(workspace_id: str, body: NotifyBody, caller: WorkspaceOrOperator, pool: PoolDep) -> Notified:
    """A message from the agent to its user: broadcast as AGENT_MESSAGE and kept as an a2a_receive
    row (method `notify`), so a chat reload shows it and its files."""
    check_owner_or_operator(caller, parse_workspace_id(workspace_id))
    wid, name = await live_workspace(pool, workspace_id)
    attachments = _check_attachments(body.attachments)
    message = _REDACTOR.redact(body.message)
    row = NewActivity(
        workspace_id=wid,
        activity_type="a2a_receive",
        source_id=None,
        target_id=wid,
        method=NOTIFY_METHOD,
        summary=notify_summary(message),
        request_body=None,
        response_body={"result": message, "parts": [file_part(a) for a in attachments]},
        duration_ms=None,
        status="ok",
        error_detail=None,
        tool_trace=None,
        idempotency_key=None,
    )
    event = {"message": message, "name": name, "attachments": attachments, "workspace_id": wid}
    activity_id, _ = await activity_store.insert(pool, row, EventType.AGENT_MESSAGE, event)
    return Notified(activity_id=activity_id)
