"""Files a user or an agent attaches to a chat: `POST .../chat/uploads` (multipart, field `files`)
stores them and names each with a `workspace:/` URI; `GET .../chat/download?uri=` streams one back."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from api.deps import (
    PlatformDep,
    PoolDep,
    WorkspaceOrOperator,
    check_owner_or_operator,
    live_workspace,
    parse_workspace_id,
)
from api.errors import ApiError
from api.openapi import AUTHENTICATED, errors
from domain.chat_files import MAX_UPLOAD_BYTES, media_type, new_file, object_key, path_of, safe_name, uri_for
from store import chat_files as file_store
from store.objects import ObjectMissing

log = logging.getLogger("molecule.api")
router = APIRouter(prefix="/workspaces/{workspace_id}/chat", tags=["chat files"], responses=AUTHENTICATED)
MAX_FILES = 50
UPLOAD_PATH = r"^/workspaces/[^/]+/chat/uploads$"


class StoredFile(BaseModel):
    uri: str
    name: str
    mimeType: str
    size: int


class Uploaded(BaseModel):
    files: list[StoredFile]


@router.post(
    "/uploads",
    response_model=Uploaded,
    responses=errors(400, 403, 404, 410, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                        },
                        "required": ["files"],
                    }
                }
            },
        }
    },
    description=f"One or more files (field `files`), {MAX_UPLOAD_BYTES // 2**20} MiB in all per request.",
)
async def upload(
    workspace_id: str, request: Request, caller: WorkspaceOrOperator, pool: PoolDep, platform: PlatformDep
) -> Uploaded:
    check_owner_or_operator(caller, parse_workspace_id(workspace_id))
    wid, _ = await live_workspace(pool, workspace_id)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ApiError(
            400, "expected a multipart/form-data body with one or more 'files' parts", "invalid_body"
        )
    # A malformed body is Starlette's HTTPException(400), which the error handlers answer.
    form = await request.form(max_files=MAX_FILES, max_fields=MAX_FILES)
    try:
        parts = [v for k, v in form.multi_items() if k in ("files", "file") and isinstance(v, UploadFile)]
        if not parts:
            raise ApiError(400, "expected at least one 'files' field", "invalid_body")
        stored = []
        for part in parts:
            name = safe_name(part.filename)
            path, file_id = new_file(name)
            mime = media_type(part.content_type, name)
            size = part.size if part.size is not None else 0
            key = object_key(wid, path)
            try:
                await platform.objects.put(key, part.file, mime)
            except Exception as exc:  # the store (disk, S3) is a dependency: its failure is a 503
                log.warning("workspace %s: could not store an upload (%s)", wid, type(exc).__name__)
                raise _store_unavailable() from None
            if not await file_store.insert(pool, str(uuid.UUID(file_id)), wid, key, name, mime, size):
                # Removed meanwhile, its files perhaps already deleted: this one must not outlive it.
                await platform.objects.delete_prefix(key)
                raise ApiError(410, f"workspace {wid} was removed", "workspace_removed", id=wid)
            stored.append(StoredFile(uri=uri_for(path), name=name, mimeType=mime, size=size))
    finally:
        await form.close()
    return Uploaded(files=stored)


def _store_unavailable() -> ApiError:
    return ApiError(503, "the file store is unavailable; retry shortly", "file_store_unavailable")


@router.get(
    "/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **errors(400, 403, 404, 410)},
)
async def download(
    workspace_id: str,
    caller: WorkspaceOrOperator,
    pool: PoolDep,
    platform: PlatformDep,
    uri: str | None = Query(default=None, max_length=4096, description="workspace:/chat-uploads/…"),
    path: str | None = Query(default=None, max_length=4096, description="the same, without the scheme"),
) -> StreamingResponse:
    check_owner_or_operator(caller, parse_workspace_id(workspace_id))
    wid, _ = await live_workspace(pool, workspace_id)
    asked = uri if uri is not None else path
    if not asked:
        raise ApiError(400, "uri is required (workspace:/chat-uploads/...)", "invalid_parameter")
    stored_path = path_of(asked)
    if stored_path is None:
        raise ApiError(
            400, "uri must name an uploaded chat file (workspace:/chat-uploads/...)", "invalid_parameter"
        )
    key = object_key(wid, stored_path)
    row = await file_store.find(pool, wid, key)
    if row is None:
        raise ApiError(404, "no such file in this workspace", "not_found")
    chunks = platform.objects.read(key)
    try:
        first = await anext(chunks, b"")
    except ObjectMissing:
        raise ApiError(404, "no such file in this workspace", "not_found") from None
    except Exception as exc:
        log.warning("workspace %s: could not read a chat file (%s)", wid, type(exc).__name__)
        raise _store_unavailable() from None

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    name = row["name"]
    headers = {
        "Content-Length": str(row["size"]),
        "Content-Disposition": f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(name)}",
    }
    return StreamingResponse(body(), media_type=row["mime_type"], headers=headers)
