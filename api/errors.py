"""Errors as replies: a clear message and a stable code, never a stack trace or a DSN."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.service import RPCError, RPCStatusCode

log = logging.getLogger("molecule.api")


class ApiError(Exception):
    headers: dict[str, str] | None = None

    def __init__(self, status: int, error: str, code: str, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.code = code
        self.extra = extra


class PlatformUnavailable(ApiError):
    def __init__(self) -> None:
        super().__init__(503, "the platform database is unavailable; retry shortly", "platform_unavailable")


class OrchestratorUnavailable(ApiError):
    def __init__(self) -> None:
        super().__init__(
            503, "the workflow orchestrator is unavailable; retry shortly", "orchestrator_unavailable"
        )


class TooManyAuthFailures(ApiError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(
            429,
            f"too many failed authentications from this address; retry in {retry_after}s",
            "too_many_auth_failures",
            retry_after=retry_after,
        )
        self.headers = {"Retry-After": str(retry_after)}


_TEMPORAL_DOWN = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED}
_DB_DOWN: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    ConnectionError,
    OSError,
    TimeoutError,
)


def is_temporal_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, RPCError) and exc.status in _TEMPORAL_DOWN


def _reply(exc: ApiError) -> JSONResponse:
    return JSONResponse(
        {"error": exc.error, "code": exc.code, **exc.extra}, status_code=exc.status, headers=exc.headers
    )


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _invalid(fields: list[dict[str, str]]) -> JSONResponse:
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return JSONResponse(
        {"error": f"invalid request: {summary}", "code": "validation_error", "fields": fields},
        status_code=422,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _reply(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = []
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))
            message = err.get("msg", "invalid")
            if err.get("type") == "json_invalid":
                message = f"malformed JSON: {err.get('ctx', {}).get('error', 'cannot parse body')}"
            fields.append(
                {"field": _field_name(loc), "location": ".".join(map(str, loc)), "message": message}
            )
        return _invalid(fields)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI decodes a JSON body as UTF-8 and turns a failure into a bare 400; it is a
            # malformed body like any other (the heartbeat's own parser says so too).
            message = "malformed JSON: the body is not valid UTF-8"
            return _invalid([{"field": "body", "location": "body", "message": message}])
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": str(exc.detail), "code": code}, status_code=exc.status_code)

    @app.exception_handler(RPCError)
    async def temporal_error(_: Request, exc: RPCError) -> JSONResponse:
        if is_temporal_unavailable(exc):
            return _reply(OrchestratorUnavailable())
        log.error("temporal call failed: %s (%s)", exc.message, exc.status)
        return JSONResponse(
            {"error": "orchestrator call failed", "code": "orchestrator_error"}, status_code=502
        )

    for exc_type in _DB_DOWN:

        @app.exception_handler(exc_type)
        async def db_down(_: Request, exc: Exception) -> JSONResponse:
            log.warning("database unavailable: %s", type(exc).__name__)
            return _reply(PlatformUnavailable())


_INTERNAL = b'{"error":"internal error","code":"internal_error"}'


class UnexpectedErrorMiddleware:
    """Answers an unexpected exception with a normal 500 and keeps the connection.

    Not an `exception_handler(Exception)`: Starlette runs that one in ServerErrorMiddleware, which
    re-raises after replying, and uvicorn then closes the keep-alive connection under the client
    (no `Connection: close`), so the client's next request on it fails. Once the reply has started
    there is nothing to answer with: the exception goes on to the server, which drops the connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:
                raise
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(_INTERNAL)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _INTERNAL})
