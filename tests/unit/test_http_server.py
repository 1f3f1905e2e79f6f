"""The API's HTTP server on a real socket: errors keep the connection, and requests over the header
limits or too slow to arrive are refused with a status before the socket closes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from api.app import create_app
from api.server import server_config
from config.settings import Settings

WAIT = 10.0  # a bound on awaiting the server, never an assertion on elapsed time


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:  # leave pytest's signal handlers alone
        yield


def _app(settings: Settings) -> FastAPI:
    app = create_app(settings)

    @app.get("/test/peer")
    async def peer(request: Request) -> dict[str, Any]:
        assert request.client is not None
        return {"port": request.client.port}

    @app.get("/test/boom")
    async def boom() -> None:
        raise RuntimeError("forced failure")

    @app.post("/test/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    return app


Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start the API (no database needed for these routes) under the server `molecule api` runs."""
    running: list[tuple[_QuietServer, asyncio.Task[None], socket.socket]] = []

    async def start(**settings: Any) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        config_ = Settings(molecule_env="development", **settings)
        config = server_config(
            _app(config_), "127.0.0.1", sock.getsockname()[1], config_, lifespan="off", log_config=None
        )
        server = _QuietServer(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        running.append((server, task, sock))
        while not server.started:
            await asyncio.sleep(0.01)
        return f"127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, task, sock in running:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT)
        sock.close()


async def _exchange(address: str, request: bytes) -> bytes:
    """Send `request` (the server may stop reading it) and return all the server sends until it
    closes the connection."""
    host, port = address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(request)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        reply = await asyncio.wait_for(reader.read(), WAIT)  # b"" once the server closed
    finally:
        sender.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return reply


def _status_and_body(reply: bytes) -> tuple[int, dict[str, Any], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body), head.lower()


async def test_a_500_answers_json_and_keeps_the_connection(serve):
    address = await serve()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=f"http://{address}", limits=limits) as client:
        port = (await client.get("/test/peer")).json()["port"]
        response = await client.get("/test/boom")
        assert response.status_code == 500
        assert response.json() == {"error": "internal error", "code": "internal_error"}
        assert response.headers.get("connection", "").lower() != "close"
        for _ in range(3):  # the same connection serves the next requests
            again = await client.get("/test/peer")
            assert again.status_code == 200
            assert again.json()["port"] == port


async def test_an_oversized_header_is_431_before_the_close(serve):
    address = await serve(http_max_header_bytes=8192)
    request = b"GET /buildinfo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n"
    status, body, head = _status_and_body(await _exchange(address, request))
    assert status == 431
    assert body["code"] == "request_header_fields_too_large"
    assert b"connection: close" in head


async def test_too_many_headers_are_431_before_the_close(serve):
    address = await serve(http_max_headers=50)
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
    status, body, _ = _status_and_body(
        await _exchange(address, b"GET /buildinfo HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    )
    assert status == 431
    assert "50" in body["error"]


async def test_requests_within_the_limits_are_served(serve):
    address = await serve(http_max_header_bytes=8192, http_max_headers=50)
    headers = {f"X-H{i}": "v" * 100 for i in range(40)}
    async with httpx.AsyncClient(base_url=f"http://{address}") as client:
        assert (await client.get("/buildinfo", headers=headers)).status_code == 200
        response = await client.post("/test/echo", content=b"x" * 500_000)
        assert response.json() == {"bytes": 500_000}


async def test_a_client_stalling_in_its_headers_is_dropped_with_408(serve):
    address = await serve(http_header_timeout_seconds=0.3)
    reply = await _exchange(address, b"GET /buildinfo HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    status, body, _ = _status_and_body(reply)
    assert status == 408
    assert body["code"] == "request_timeout"


async def test_a_client_that_sends_nothing_is_dropped(serve):
    address = await serve(http_header_timeout_seconds=0.3)
    status, _, _ = _status_and_body(await _exchange(address, b""))
    assert status == 408


async def test_a_client_stalling_in_its_body_is_dropped_with_408(serve):
    address = await serve(http_body_timeout_seconds=0.3)
    request = b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10
    status, body, _ = _status_and_body(await _exchange(address, request))
    assert status == 408
    assert body["code"] == "request_timeout"


async def test_a_trickling_client_is_dropped_although_bytes_keep_coming(serve):
    address = await serve(http_header_timeout_seconds=0.3)
    host, port = address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /buildinfo HTTP/1.1\r\nHost: x\r\n")

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            while True:  # one header byte at a time, never finishing the head
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.05)

    trickler = asyncio.create_task(trickle())
    try:
        reply = await asyncio.wait_for(reader.read(), WAIT)
    finally:
        trickler.cancel()
        writer.close()
    assert _status_and_body(reply)[0] == 408
