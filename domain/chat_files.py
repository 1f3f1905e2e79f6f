"""Chat files' rules: safe names, their media type, and the `workspace:/` URIs that name them."""

from __future__ import annotations

import mimetypes
import re
import uuid

URI_SCHEME = "workspace:"
UPLOAD_DIR = "chat-uploads"
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_NAME_CHARS = 100
GENERIC_TYPES = ("", "application/octet-stream")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_STORED = re.compile(rf"^/{UPLOAD_DIR}/([0-9a-f]{{32}})-([A-Za-z0-9._-]{{1,{MAX_NAME_CHARS}}})$")


def safe_name(filename: str | None) -> str:
    """A name that cannot leave its directory: the last path segment, spaces as '_', nothing but
    letters, digits, '.', '_' and '-', no leading dots, at most 100 characters; 'file' if nothing is left."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].replace(" ", "_")
    cleaned = _UNSAFE.sub("", base).lstrip(".")
    return cleaned[-MAX_NAME_CHARS:] or "file"


def media_type(declared: str | None, name: str) -> str:
    """The part's own Content-Type wins; else the extension's; else application/octet-stream."""
    declared = (declared or "").split(";", 1)[0].strip().lower()
    if declared not in GENERIC_TYPES and "/" in declared:
        return declared
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


def new_file(name: str) -> tuple[str, str]:
    """(the URI path of a new upload, its file id)."""
    file_id = uuid.uuid4().hex
    return f"/{UPLOAD_DIR}/{file_id}-{name}", file_id


def uri_for(path: str) -> str:
    return f"{URI_SCHEME}{path}"


def path_of(uri: str) -> str | None:
    """The stored path a `workspace:/chat-uploads/<id>-<name>` URI (or its bare path) names; None
    when it is not one (another scheme, another directory, traversal)."""
    path = uri.removeprefix(URI_SCHEME)
    return path if _STORED.match(path) else None


def object_key(workspace_id: str, path: str) -> str:
    return f"workspaces/{workspace_id}{path}"
