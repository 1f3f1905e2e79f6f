"""Reference agent: the run-time fault modes of its A2A surface and heartbeats (``faults.json``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from agent import a2a
from agent.a2a import LARGE_CHUNK_BYTES, A2AFault, AgentState, agent_card, create_app
from agent.config import AgentConfig
from agent.main import Agent

TIMEOUT = 3.0
HTTP_IMPLS = [
    "h11",
    pytest.param(
        "httptools",
        marks=pytest.mark.skipif(importlib.util.find_spec("httptools") is None, reason="httptools missing"),
    ),
]


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:  # leave pytest's signal handlers alone
        yield


async def until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait (bounded) until ``predicate()`` holds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def send_body(message_id: str | None = "m1", text: str = "hello", **message: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"kind": "message", "role": "user", "parts": [{"kind": "text", "text": text}]}
    if message_id is not None:
        msg["messageId"] = message_id
    return {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": {**msg, **message}}}


def make_app(faults: Mapping[str, Any]) -> tuple[FastAPI, AgentState]:
    """An agent app whose overrides are the (mutable) ``faults`` mapping, read on every request."""
    state = AgentState()
    return create_app(agent_card("http://agent.test"), state, lambda: faults), state


@contextlib.asynccontextmanager
async def asgi_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent.test") as client:
        yield client


@contextlib.asynccontextmanager
async def serving(app: FastAPI, http: str = "auto") -> AsyncIterator[str]:
    """``app`` under a real uvicorn on 127.0.0.1; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = uvicorn.Config(app, http=http, log_config=None, log_level="warning", lifespan="off")
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await until(lambda: server.started or task.done())
        assert server.started
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, TIMEOUT)
        sock.close()


def agent_in(tmp_path: Path, platform_url: str = "http://127.0.0.1:9") -> Agent:
    env = {
        "WORKSPACE_ID": "ws-1",
        "PLATFORM_URL": platform_url,
        "WORKSPACE_TOKEN": "tok",
        "HEARTBEAT_INTERVAL": "0.02",
        "WORKSPACE_CONFIG_PATH": str(tmp_path),
    }
    config = dataclasses.replace(AgentConfig.from_env(env), register_backoff_initial=0.01)
    return Agent(config)


def write_faults(tmp_path: Path, faults: dict[str, Any]) -> None:
    tmp_path.joinpath("faults.json.tmp").write_text(json.dumps(faults))
    tmp_path.joinpath("faults.json.tmp").replace(tmp_path / "faults.json")  # atomic, as a test should


def no_uvicorn_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name.startswith("uvicorn") and r.levelno >= logging.ERROR
    ]


# --- answers, message ids and the received log ----------------------------------------------------


async def test_echo_carries_request_message_id_and_requests_are_counted() -> None:
    app, state = make_app({})
    async with asgi_client(app) as client:
        first = (await client.post("/", json=send_body("m1", contextId="ctx-1"))).json()
        legacy = send_body("m2")
        legacy["params"]["message"]["parts"] = [
            {"type": "text", "text": "old"},
            {"type": "file", "text": "no"},
        ]
        second = (await client.post("/", json=legacy)).json()
        third = (await client.post("/", json=send_body(None))).json()
        # invalid requests are answered with errors and not counted as deliveries
        assert (await client.post("/", json={**send_body("bad"), "params": {}})).json()["error"][
            "code"
        ] == -32602
        received = (await client.get("/debug/received")).json()

    assert first["result"]["parts"] == [{"kind": "text", "text": "echo: hello"}]
    assert first["result"]["metadata"] == {"request_message_id": "m1"}
    assert first["result"]["contextId"] == "ctx-1"
    assert second["result"]["parts"] == [{"kind": "text", "text": "echo: old"}]
    assert second["result"]["metadata"]["request_message_id"] == "m2"
    assert third["result"]["metadata"]["request_message_id"] is None
    assert received == {"count": 3, "message_ids": ["m1", "m2", None]}
    assert state.a2a_requests == 3


def test_received_log_keeps_the_last_100_ids() -> None:
    state = AgentState()
    for n in range(105):
        state.note_received(f"m{n}")
    assert state.a2a_requests == 105
    assert list(state.received_message_ids) == [f"m{n}" for n in range(5, 105)]


# --- reset ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("http", HTTP_IMPLS)
async def test_reset_drops_the_connection_without_a_response(
    http: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    faults: dict[str, Any] = {"a2a": "reset"}
    app, state = make_app(faults)
    async with serving(app, http) as url, httpx.AsyncClient(base_url=url, trust_env=False) as client:
        for attempt in (1, 2):
            with pytest.raises(httpx.TransportError):  # never an HTTP status, not even a 500
                await client.post("/", json=send_body(f"reset-{attempt}"))
        faults.clear()  # the mode is read per request: the same server answers again
        reply = await client.post("/", json=send_body("after"))
        assert reply.status_code == 200
        assert reply.json()["result"]["metadata"]["request_message_id"] == "after"
    assert list(state.received_message_ids) == ["reset-1", "reset-2", "after"]
    assert state.active_tasks == 0
    assert no_uvicorn_errors(caplog) == []  # no "returned without starting response" / 500 attempt


# --- busy -----------------------------------------------------------------------------------------


async def test_busy_answers_503_with_retry_after() -> None:
    app, state = make_app({"a2a": "busy"})
    async with asgi_client(app) as client:
        reply = await client.post("/", json=send_body("b1"))
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "5"
    assert reply.json() == {"error": "busy", "busy": True}
    assert state.a2a_requests == 1


# --- slow and hold --------------------------------------------------------------------------------


async def test_slow_waits_as_an_active_task_then_answers(tmp_path: Path) -> None:
    agent = agent_in(tmp_path)
    write_faults(tmp_path, {"a2a": "slow", "a2a_delay_seconds": 0.3})
    app = create_app(agent_card("http://agent.test"), agent.state, agent.fault_overrides)
    async with asgi_client(app) as client:
        call = asyncio.create_task(client.post("/", json=send_body("s1")))
        await until(lambda: agent.state.active_tasks == 1)
        beat = agent.heartbeat_payload()
        assert beat["active_tasks"] == 1
        assert beat["current_task"] == "message/send: hello"
        reply = await asyncio.wait_for(call, TIMEOUT)
    assert reply.json()["result"]["parts"] == [{"kind": "text", "text": "echo: hello"}]
    assert agent.state.active_tasks == 0


async def test_hold_answers_only_once_the_file_is_gone(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    agent = agent_in(tmp_path)
    write_faults(tmp_path, {"a2a": "hold", "a2a_hold_file": str(hold)})
    app = create_app(agent_card("http://agent.test"), agent.state, agent.fault_overrides)
    async with asgi_client(app) as client:
        call = asyncio.create_task(client.post("/", json=send_body("h1")))
        await until(lambda: agent.state.active_tasks == 1)
        assert agent.heartbeat_payload()["active_tasks"] == 1
        # Held: a broken hold would answer within milliseconds.
        done, _ = await asyncio.wait([call], timeout=6 * a2a.HOLD_POLL_SECONDS)
        assert not done
        write_faults(tmp_path, {})  # changing the mode does not release a request already held
        done, _ = await asyncio.wait([call], timeout=3 * a2a.HOLD_POLL_SECONDS)
        assert not done
        hold.unlink()
        reply = await asyncio.wait_for(call, TIMEOUT)
    assert reply.status_code == 200
    assert reply.json()["result"]["metadata"]["request_message_id"] == "h1"
    assert agent.state.active_tasks == 0
    assert agent.heartbeat_payload()["active_tasks"] == 0


async def test_hold_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    monkeypatch.setattr(a2a, "MAX_WAIT_SECONDS", 0.1)
    app, state = make_app({"a2a": "hold", "a2a_hold_file": str(hold)})
    async with asgi_client(app) as client:
        reply = await asyncio.wait_for(client.post("/", json=send_body("h2")), TIMEOUT)
    assert reply.json()["result"]["parts"] == [{"kind": "text", "text": "echo: hello"}]
    assert hold.exists() and state.active_tasks == 0


# --- large ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [11 * 1024 * 1024, 200_000, 10])
async def test_large_answer_has_the_requested_size(size: int) -> None:
    app, _ = make_app({"a2a": "large", "a2a_response_bytes": size})
    async with asgi_client(app) as client:
        reply = await client.post("/", json=send_body("big", text="hi"))
    body = reply.json()
    assert (body["jsonrpc"], body["id"]) == ("2.0", 1)
    text = body["result"]["parts"][0]["text"]
    assert text.startswith("echo: hi\n")
    assert body["result"]["metadata"] == {"request_message_id": "big"}
    if size > 1000:
        assert len(reply.content) == size
    else:  # smaller than the envelope itself: just the envelope
        assert text == "echo: hi\n"


async def test_large_answer_is_streamed_in_chunks() -> None:
    size = 3 * 1024 * 1024
    app, state = make_app({"a2a": "large", "a2a_response_bytes": size})
    request = json.dumps(send_body("big")).encode()
    chunks: list[int] = []
    active: list[int] = []

    requests = [{"type": "http.request", "body": request, "more_body": False}]
    finished = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await finished.wait()  # the client stays connected until the whole answer is sent
        return {"type": "http.disconnect"}

    async def send(message: Mapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = dict(message["headers"])
            assert b"content-length" not in headers  # chunked: the platform has to count
        if message["type"] == "http.response.body" and message.get("body"):
            chunks.append(len(message["body"]))
            active.append(state.active_tasks)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            finished.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"agent.test")],
        "client": ("127.0.0.1", 1),
        "server": ("agent.test", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), TIMEOUT)
    assert sum(chunks) == size
    assert max(chunks) <= LARGE_CHUNK_BYTES
    assert len(chunks) >= size // LARGE_CHUNK_BYTES
    assert set(active) == {1}  # streaming counts as an active task
    assert state.active_tasks == 0


async def test_large_answer_over_a_real_server(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    size = 11 * 1024 * 1024
    faults: dict[str, Any] = {"a2a": "large", "a2a_response_bytes": size}
    app, _ = make_app(faults)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, trust_env=False) as client:
        async with client.stream("POST", "/", json=send_body("big")) as reply:
            assert reply.headers.get("transfer-encoding") == "chunked"
            assert "content-length" not in reply.headers
            received = sum([len(chunk) async for chunk in reply.aiter_raw()])
        assert received == size
        faults["a2a_content_length"] = True
        sized = await client.post("/", json=send_body("big2"))
        assert sized.headers["content-length"] == str(size) == str(len(sized.content))
        assert sized.json()["result"]["metadata"]["request_message_id"] == "big2"
    assert no_uvicorn_errors(caplog) == []


# --- malformed overrides --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "faults",
    [
        {"a2a": "explode"},
        {"a2a": 1},
        {"a2a": "slow"},
        {"a2a": "slow", "a2a_delay_seconds": -1},
        {"a2a": "slow", "a2a_delay_seconds": "soon"},
        {"a2a": "hold"},
        {"a2a": "hold", "a2a_hold_file": ""},
        {"a2a": "large"},
        {"a2a": "large", "a2a_response_bytes": -5},
        {"a2a": "large", "a2a_response_bytes": True},
    ],
)
async def test_malformed_a2a_faults_answer_normally(faults: dict[str, Any]) -> None:
    assert A2AFault.from_overrides(faults) == A2AFault()
    app, _ = make_app(faults)
    async with asgi_client(app) as client:
        reply = await client.post("/", json=send_body("x"))
    assert reply.status_code == 200
    assert reply.json()["result"]["parts"] == [{"kind": "text", "text": "echo: hello"}]


def test_fault_parsing() -> None:
    assert A2AFault.from_overrides({"a2a": "slow", "a2a_delay_seconds": 1}) == A2AFault(
        "slow", delay_seconds=1.0
    )
    assert A2AFault.from_overrides({"a2a": "slow", "a2a_delay_seconds": 1e9}).delay_seconds == 600.0
    assert A2AFault.from_overrides({"a2a": "hold", "a2a_hold_file": "/x"}) == A2AFault(
        "hold", hold_file=Path("/x")
    )
    assert A2AFault.from_overrides({"a2a": "large", "a2a_response_bytes": 5}) == A2AFault(
        "large", response_bytes=5
    )
    assert A2AFault.from_overrides({"a2a": "reset"}).mode == "reset"
    assert A2AFault.from_overrides({"a2a": "busy"}).mode == "busy"
    assert A2AFault.from_overrides({}) == A2AFault()


# --- heartbeat overrides --------------------------------------------------------------------------


def test_heartbeat_overrides_from_faults_file(tmp_path: Path) -> None:
    agent = agent_in(tmp_path)
    plain = agent.heartbeat_payload()
    assert plain["active_tasks"] == 0
    assert plain["runtime_metadata"] == {"capabilities": a2a.CAPABILITIES}

    write_faults(tmp_path, {"native_session": True, "active_tasks": 4, "idle_timeout_seconds": 90})
    beat = agent.heartbeat_payload()
    assert beat["active_tasks"] == 4
    assert beat["runtime_metadata"] == {
        "capabilities": {**a2a.CAPABILITIES, "session": True},
        "idle_timeout_seconds": 90,
    }
    with agent.state.task("one"), agent.state.task("two"):
        assert agent.heartbeat_payload()["active_tasks"] == 4  # at least, not added
    write_faults(tmp_path, {"active_tasks": 1})
    with agent.state.task("one"), agent.state.task("two"):
        assert agent.heartbeat_payload()["active_tasks"] == 2
    write_faults(tmp_path, {"idle_timeout_seconds": 0})  # 0 tells the platform to clear its override
    assert agent.heartbeat_payload()["runtime_metadata"]["idle_timeout_seconds"] == 0

    write_faults(tmp_path, {"native_session": "yes", "active_tasks": "9", "idle_timeout_seconds": 1.5})
    assert agent.heartbeat_payload() == plain | {
        "uptime_seconds": agent.heartbeat_payload()["uptime_seconds"]
    }
    write_faults(tmp_path, {})
    assert agent.heartbeat_payload()["runtime_metadata"] == {"capabilities": a2a.CAPABILITIES}


async def test_running_agent_rereads_faults_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """End to end: one running agent, its real server and heartbeats, modes switched by rewriting the file."""
    caplog.set_level(logging.WARNING)
    beats: list[dict[str, Any]] = []

    def platform(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/registry/heartbeat":
            beats.append(json.loads(request.content))
        return httpx.Response(200, json={"status": "ok"})

    agent = Agent(agent_in(tmp_path).config, transport=httpx.MockTransport(platform))
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.wait_for(agent.ready.wait(), TIMEOUT)
        async with httpx.AsyncClient(base_url=str(agent.url), trust_env=False) as client:
            write_faults(tmp_path, {"a2a": "reset"})
            with pytest.raises(httpx.TransportError):
                await client.post("/", json=send_body("r1"))
            write_faults(tmp_path, {"a2a": "busy", "native_session": True, "active_tasks": 3})
            assert (await client.post("/", json=send_body("b1"))).status_code == 503
            await until(lambda: bool(beats) and beats[-1]["active_tasks"] == 3)
            assert beats[-1]["runtime_metadata"]["capabilities"]["session"] is True

            hold = tmp_path / "hold"
            hold.touch()
            write_faults(tmp_path, {"a2a": "hold", "a2a_hold_file": str(hold)})
            call = asyncio.create_task(client.post("/", json=send_body("h1")))
            count = len(beats)
            await until(lambda: len(beats) > count and beats[-1]["active_tasks"] == 1)
            assert "session" not in beats[-1]["runtime_metadata"]["capabilities"]
            hold.unlink()
            reply = await asyncio.wait_for(call, TIMEOUT)
            assert reply.json()["result"]["metadata"]["request_message_id"] == "h1"
            received = (await client.get("/debug/received")).json()
        assert received == {"count": 3, "message_ids": ["r1", "b1", "h1"]}
    finally:
        stop.set()
        assert await asyncio.wait_for(run, TIMEOUT) == 0
    assert no_uvicorn_errors(caplog) == []
