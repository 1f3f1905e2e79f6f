"""Reference agent: registration, heartbeats, fault modes and the A2A echo, against a fake platform."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agent.a2a import AgentState
from agent.config import AgentConfig, ConfigError
from agent.main import Agent, serve

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 3.0


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:  # leave pytest's signal handlers alone
        yield


class FakePlatform:
    """Records every call; replies with queued status codes, then 200."""

    def __init__(self) -> None:
        self.registers: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.heartbeats: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.register_statuses: list[int] = []
        self.heartbeat_statuses: list[int] = []
        self.url = ""
        self._changed = asyncio.Event()
        self.app = FastAPI()
        self.app.post("/registry/register")(self._endpoint(self.registers, self.register_statuses))
        self.app.post("/registry/heartbeat")(self._endpoint(self.heartbeats, self.heartbeat_statuses))

    def _endpoint(self, calls: list[tuple[dict[str, str], dict[str, Any]]], statuses: list[int]) -> Any:
        async def endpoint(request: Request) -> JSONResponse:
            calls.append((dict(request.headers), await request.json()))
            self._changed.set()
            status = statuses.pop(0) if statuses else 200
            if status != 200:
                return JSONResponse({"detail": f"fake {status}"}, status_code=status)
            return JSONResponse({"status": "registered", "platform_inbound_secret": "inbound-s3cret"})

        return endpoint

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        async def waiter() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(waiter(), TIMEOUT)

    def reset(self) -> None:
        for calls in (self.registers, self.heartbeats, self.register_statuses, self.heartbeat_statuses):
            calls.clear()


@pytest.fixture(scope="module")
async def _platform_server() -> AsyncIterator[FakePlatform]:
    """One fake platform on a real socket for the module (a uvicorn shutdown costs ~0.2 s)."""
    fake = FakePlatform()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    fake.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = _QuietServer(uvicorn.Config(fake.app, log_config=None, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    yield fake
    server.should_exit = True
    await asyncio.wait_for(task, TIMEOUT)
    sock.close()


@pytest.fixture
def platform(_platform_server: FakePlatform) -> FakePlatform:
    _platform_server.reset()
    return _platform_server


def make_config(platform_url: str, **env: str) -> AgentConfig:
    base = {
        "WORKSPACE_ID": "ws-1",
        "PLATFORM_URL": platform_url,
        "WORKSPACE_TOKEN": "tok-123",
        "HEARTBEAT_INTERVAL": "0.05",
        "WORKSPACE_CONFIG_PATH": "/nonexistent",
    }
    config = AgentConfig.from_env({**base, **env})
    return dataclasses.replace(config, register_backoff_initial=0.01, register_backoff_max=0.02)


@contextlib.asynccontextmanager
async def running(config: AgentConfig, **kwargs: Any) -> AsyncIterator[Agent]:
    """Run an agent in the background; on exit stop it and check it ended cleanly."""
    agent = Agent(config, **kwargs)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.wait_for(agent.ready.wait(), TIMEOUT)
    try:
        yield agent
    finally:
        stop.set()
        assert await asyncio.wait_for(task, TIMEOUT) == 0


CLI_RUNS: dict[str, dict[str, str]] = {
    "missing-config": {"PLATFORM_URL": "http://127.0.0.1:9"},
    "crash": {
        "WORKSPACE_ID": "ws-1",
        "PLATFORM_URL": "http://127.0.0.1:9",
        "AGENT_NEVER_REGISTER": "1",
        "AGENT_CRASH_AFTER_SECONDS": "0.2",
    },
}


@pytest.fixture(scope="module", autouse=True)
def cli_processes() -> Generator[dict[str, subprocess.Popen[str]], None, None]:
    """Real ``python -m agent`` processes, started with the module so their start-up overlaps the tests."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WORKSPACE_", "AGENT_", "PLATFORM_"))}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "agent"],
            env={**clean, "WORKSPACE_CONFIG_PATH": "/nonexistent", **env},
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, env in CLI_RUNS.items()
    }
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def finished(proc: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = proc.communicate(timeout=15)
    return proc.returncode, stderr


# --- registration and heartbeats ------------------------------------------------------------------


async def test_registers_then_heartbeats(platform: FakePlatform) -> None:
    async with running(make_config(platform.url)) as agent:
        await platform.wait_until(lambda: len(platform.heartbeats) >= 3)
        assert agent.registered.is_set()

    headers, body = platform.registers[0]
    assert len(platform.registers) == 1
    assert headers["authorization"] == "Bearer tok-123"
    assert body["id"] == "ws-1"
    assert body["url"] == agent.url
    assert agent.url is not None and agent.url.startswith("http://127.0.0.1:")
    card = body["agent_card"]
    assert {"name", "description", "version", "capabilities"} <= card.keys()
    assert [skill["id"] for skill in card["skills"]] == ["echo"]
    assert agent.state.platform_inbound_secret == "inbound-s3cret"

    headers, beat = platform.heartbeats[0]
    assert headers["authorization"] == "Bearer tok-123"
    assert beat == {
        "workspace_id": "ws-1",
        "error_rate": 0.0,
        "sample_error": "",
        "active_tasks": 0,
        "uptime_seconds": 0,
        "current_task": None,
        "runtime_state": "",
        "runtime_metadata": {"capabilities": card["capabilities"]},
    }


async def test_heartbeats_report_error_rate_and_wedged(platform: FakePlatform) -> None:
    config = make_config(platform.url, AGENT_ERROR_RATE="0.25", AGENT_WEDGED="true")
    start = time.monotonic()
    async with running(config):
        await platform.wait_until(lambda: len(platform.heartbeats) >= 3)
    assert time.monotonic() - start < 1.5  # three beats at a 50 ms interval, not the 30 s default
    for _, beat in platform.heartbeats:
        assert beat["error_rate"] == 0.25
        assert beat["sample_error"] == "simulated failure"
        assert beat["runtime_state"] == "wedged"


async def test_never_register_stays_silent_but_serves_a2a(platform: FakePlatform) -> None:
    silent = make_config(platform.url, WORKSPACE_ID="ws-silent", AGENT_NEVER_REGISTER="1")
    normal = make_config(platform.url, WORKSPACE_ID="ws-normal")
    async with running(silent) as agent, running(normal):
        async with httpx.AsyncClient(trust_env=False) as client:
            health = await client.get(f"{agent.url}/health")
            assert health.json() == {"status": "ok"}
        # The normal agent registering and beating three times is ample time for the silent one to have.
        await platform.wait_until(lambda: len(platform.heartbeats) >= 3)
    assert not agent.registered.is_set()
    calls = platform.registers + platform.heartbeats
    assert calls and all(body.get("id", body.get("workspace_id")) == "ws-normal" for _, body in calls)


async def test_register_retried_after_503(platform: FakePlatform, caplog: pytest.LogCaptureFixture) -> None:
    platform.register_statuses[:] = [503, 503]
    caplog.set_level(logging.WARNING, logger="molecule.agent")
    async with running(make_config(platform.url)) as agent:
        await asyncio.wait_for(agent.registered.wait(), TIMEOUT)
    assert len(platform.registers) == 3
    assert "register attempt 1 failed (HTTP 503" in caplog.text


async def test_register_retried_after_network_errors_then_410_on_heartbeat() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        if len(calls) == 2:
            raise httpx.ReadTimeout("timed out", request=request)
        if request.url.path == "/registry/register":
            return httpx.Response(200, json={"status": "registered", "platform_inbound_secret": "x"})
        return httpx.Response(410, json={"detail": "gone"})

    config = make_config("http://platform.invalid")
    code = await asyncio.wait_for(serve(config, transport=httpx.MockTransport(handler)), TIMEOUT)
    assert code == 0
    assert calls == ["/registry/register"] * 3 + ["/registry/heartbeat"]


async def test_failed_heartbeats_do_not_stop_the_loop(platform: FakePlatform) -> None:
    platform.heartbeat_statuses[:] = [500, 503]
    async with running(make_config(platform.url)):
        await platform.wait_until(lambda: len(platform.heartbeats) >= 4)


async def test_heartbeat_410_ends_serve_with_0(
    platform: FakePlatform, caplog: pytest.LogCaptureFixture
) -> None:
    platform.heartbeat_statuses[:] = [410]
    caplog.set_level(logging.INFO, logger="molecule.agent")
    assert await asyncio.wait_for(serve(make_config(platform.url)), TIMEOUT) == 0
    assert len(platform.heartbeats) == 1
    assert "workspace removed" in caplog.text


@pytest.mark.parametrize(
    ("register", "heartbeat", "code"),
    [([401], [], 3), ([403], [], 3), ([], [401], 3), ([], [403], 3), ([410], [], 0)],
)
async def test_platform_verdicts_end_serve(
    platform: FakePlatform, register: list[int], heartbeat: list[int], code: int
) -> None:
    platform.register_statuses[:] = register
    platform.heartbeat_statuses[:] = heartbeat
    assert await asyncio.wait_for(serve(make_config(platform.url)), TIMEOUT) == code


async def test_token_never_logged(platform: FakePlatform, caplog: pytest.LogCaptureFixture) -> None:
    platform.register_statuses[:] = [503, 401]
    caplog.set_level(logging.DEBUG)
    config = make_config(platform.url)
    assert await asyncio.wait_for(serve(config), TIMEOUT) == 3
    assert "tok-123" not in caplog.text
    assert "tok-123" not in repr(config)


# --- A2A ------------------------------------------------------------------------------------------


async def test_a2a_echo_round_trip(platform: FakePlatform) -> None:
    async with running(make_config(platform.url)):
        await platform.wait_until(lambda: bool(platform.registers))
        url = platform.registers[0][1]["url"]  # call the agent where it told the platform it lives
        async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
            card = (await client.get("/.well-known/agent.json")).json()
            assert card["url"] == url
            assert card["skills"][0]["id"] == "echo"
            assert (await client.get("/health")).json() == {"status": "ok"}

            send = {
                "jsonrpc": "2.0",
                "id": 7,
                "method": "message/send",
                "params": {
                    "message": {
                        "kind": "message",
                        "role": "user",
                        "messageId": "m1",
                        "parts": [{"kind": "text", "text": "hello"}],
                    }
                },
            }
            reply = (await client.post("/", json=send)).json()
            assert reply["jsonrpc"] == "2.0"
            assert reply["id"] == 7
            result = reply["result"]
            assert (result["kind"], result["role"]) == ("message", "agent")
            assert result["parts"] == [{"kind": "text", "text": "echo: hello"}]

            unknown = (await client.post("/", json={**send, "method": "tasks/get"})).json()
            assert unknown["id"] == 7
            assert unknown["error"]["code"] == -32601
            assert (await client.post("/", content=b"{not json")).json()["error"]["code"] == -32700
            bad = (await client.post("/", json={**send, "params": {}})).json()
            assert bad["error"]["code"] == -32602


def test_state_reports_the_task_in_flight() -> None:
    state = AgentState()
    assert (state.active_tasks, state.current_task) == (0, None)
    with state.task("message/send: hello"):
        assert (state.active_tasks, state.current_task) == (1, "message/send: hello")
    assert (state.active_tasks, state.current_task) == (0, None)


# --- configuration --------------------------------------------------------------------------------


def test_token_read_from_auth_token_file(tmp_path: Path) -> None:
    (tmp_path / ".auth_token").write_text("tok-from-file\n")
    env = {"WORKSPACE_ID": "ws-1", "PLATFORM_URL": "http://p:8080/", "WORKSPACE_CONFIG_PATH": str(tmp_path)}
    config = AgentConfig.from_env(env)
    assert config.token == "tok-from-file"
    assert config.platform_url == "http://p:8080"
    assert AgentConfig.from_env({**env, "WORKSPACE_TOKEN": "tok-env"}).token == "tok-env"


def test_defaults() -> None:
    config = AgentConfig.from_env({"WORKSPACE_ID": "ws-1", "PLATFORM_URL": "http://127.0.0.1:8080"})
    assert (config.heartbeat_interval, config.host, config.port, config.public_url) == (
        30.0,
        "127.0.0.1",
        0,
        None,
    )
    assert (config.never_register, config.wedged, config.error_rate, config.crash_after_seconds) == (
        False,
        False,
        0.0,
        None,
    )


@pytest.mark.parametrize(
    "env",
    [{"PLATFORM_URL": "http://p"}, {"WORKSPACE_ID": "  ", "PLATFORM_URL": "http://p"}],
)
def test_missing_workspace_id_is_a_clear_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="missing required environment variable: WORKSPACE_ID"):
        AgentConfig.from_env(env)


def test_malformed_numbers_warn_and_use_defaults(caplog: pytest.LogCaptureFixture) -> None:
    env = {
        "WORKSPACE_ID": "ws-1",
        "PLATFORM_URL": "http://p",
        "HEARTBEAT_INTERVAL": "soon",
        "AGENT_PORT": "99999",
        "AGENT_ERROR_RATE": "1.5",
        "AGENT_BOOT_DELAY_SECONDS": "-1",
    }
    with caplog.at_level(logging.WARNING, logger="molecule.agent"):
        config = AgentConfig.from_env(env)
    assert (config.heartbeat_interval, config.port, config.error_rate, config.boot_delay_seconds) == (
        30.0,
        0,
        0.0,
        0.0,
    )
    assert "HEARTBEAT_INTERVAL='soon'" in caplog.text and "using default 30.0" in caplog.text
    assert "AGENT_PORT='99999'" in caplog.text
    assert "AGENT_ERROR_RATE='1.5'" in caplog.text
    assert "AGENT_BOOT_DELAY_SECONDS='-1'" in caplog.text


def test_cli_missing_config_exits_2_with_one_line(cli_processes: dict[str, subprocess.Popen[str]]) -> None:
    code, stderr = finished(cli_processes["missing-config"])
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "missing required environment variable: WORKSPACE_ID" in lines[0]
    assert lines[0][:4].isdigit()  # timestamped


def test_cli_crash_after_seconds_exits_1(cli_processes: dict[str, subprocess.Popen[str]]) -> None:
    code, stderr = finished(cli_processes["crash"])
    assert code == 1, stderr
    assert "simulating a crash" in stderr


# --- templates ------------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["claude-code", "hermes", "codex", "openclaw"])
def test_shipped_templates(runtime: str) -> None:
    path = REPO / "templates" / runtime / "config.yaml"
    template = yaml.safe_load(path.read_text())
    assert template["runtime"] == runtime
    assert template["backend"] == "process"
    assert template["description"]
    # `python -m agent` is `molecule agent` without loading the CLI: cheaper when many boot at once.
    assert template["command"] == ["{python}", "-m", "agent"]
    assert template["env"] == {}
    assert template["runtime_config"]["required_env"] == []
    assert "provision_timeout_seconds" not in template["runtime_config"]
    assert "# provision_timeout_seconds:" in path.read_text()


def test_faults_file_overrides_env_fault_modes_at_run_time(tmp_path: Path) -> None:
    from agent.main import Agent

    env = {
        "WORKSPACE_ID": "w",
        "PLATFORM_URL": "http://127.0.0.1:1",
        "WORKSPACE_TOKEN": "t",
        "WORKSPACE_CONFIG_PATH": str(tmp_path),
        "AGENT_ERROR_RATE": "0.8",
    }
    agent = Agent(AgentConfig.from_env(env))
    assert agent.heartbeat_payload()["error_rate"] == 0.8
    (tmp_path / "faults.json").write_text('{"error_rate": 0.0, "wedged": true}')
    payload = agent.heartbeat_payload()
    assert (payload["error_rate"], payload["runtime_state"], payload["sample_error"]) == (0.0, "wedged", "")
    (tmp_path / "faults.json").write_text("not json")
    assert agent.heartbeat_payload()["error_rate"] == 0.8
