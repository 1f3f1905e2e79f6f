"""Reference agent process: serve A2A, register with the platform, heartbeat until told to stop.

Exit codes: 0 stopped (signal, or the platform answered 410: workspace removed), 1 crash (including
the simulated one), 2 bad configuration, 3 the platform rejected the workspace token (401/403).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Generator
from typing import Any

import httpx
import uvicorn

from agent.a2a import CAPABILITIES, AgentState, agent_card, create_app
from agent.config import AgentConfig, ConfigError

__all__ = ["EXIT_AUTH", "EXIT_CONFIG", "EXIT_CRASH", "EXIT_OK", "Agent", "AgentConfig", "run", "serve"]

FAULTS_FILE = "faults.json"
log = logging.getLogger("molecule.agent")

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_CONFIG = 2
EXIT_AUTH = 3

SIMULATED_ERROR = "simulated failure"
NATIVE_SESSION_CAPABILITY = "session"  # the wire name of the runtime's provides_native_session


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (:func:`run` owns SIGINT/SIGTERM), stopping promptly."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit_requested = asyncio.Event()

    def request_exit(self) -> None:
        self.should_exit = True
        self._exit_requested.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def main_loop(self) -> None:
        # uvicorn polls should_exit every 0.1 s; wake up as soon as an exit is requested instead.
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit_requested.wait(), 0.1)


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)  # connections queue up even before uvicorn starts accepting
    except OSError:
        sock.close()
        raise
    return sock


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):  # noqa: S104 - mapping a wildcard bind to a reachable address
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _snippet(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:200] + ("…" if len(text) > 200 else "")


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class Agent:
    """One agent run. ``url`` is known once ``ready`` is set; ``registered`` is set on registration."""

    def __init__(self, config: AgentConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.state = AgentState()
        self.url: str | None = None
        self.ready = asyncio.Event()
        self.registered = asyncio.Event()
        self._transport = transport

    async def run(self, stop: asyncio.Event | None = None) -> int:
        cfg = self.config
        try:
            sock = _bind(cfg.host, cfg.port)
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s", cfg.host, cfg.port, exc)
            return EXIT_CRASH
        port = sock.getsockname()[1]
        self.url = cfg.public_url or f"http://{_url_host(cfg.host)}:{port}"
        card = agent_card(self.url)
        server = _Server(
            uvicorn.Config(
                create_app(card, self.state, self.fault_overrides),
                log_config=None,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=2,
            )
        )
        log.info(
            "workspace %s: A2A listening on %s:%d, advertised as %s",
            cfg.workspace_id,
            cfg.host,
            port,
            self.url,
        )
        headers = {"Authorization": f"Bearer {cfg.token}"} if cfg.token else {}
        tasks: list[asyncio.Task[Any]] = []
        code = EXIT_OK
        async with httpx.AsyncClient(
            base_url=cfg.platform_url, headers=headers, timeout=cfg.request_timeout, transport=self._transport
        ) as client:
            server_task = asyncio.create_task(server.serve(sockets=[sock]), name="agent-a2a")
            control_task = asyncio.create_task(self._control(client, card), name="agent-control")
            stop_task = asyncio.create_task((stop or asyncio.Event()).wait(), name="agent-stop")
            tasks = [control_task, stop_task]
            if cfg.crash_after_seconds is not None:
                tasks.append(
                    asyncio.create_task(self._crash_after(cfg.crash_after_seconds), name="agent-crash")
                )
            self.ready.set()
            try:
                await asyncio.wait(
                    [server_task, control_task, stop_task], return_when=asyncio.FIRST_COMPLETED
                )
                if control_task.done():
                    code = control_task.result()
                elif server_task.done():
                    failure = None if server_task.cancelled() else server_task.exception()
                    log.error("A2A server stopped unexpectedly: %r", failure)
                    code = EXIT_CRASH
                else:
                    log.info("stop requested; shutting down")
            finally:
                for task in tasks:
                    task.cancel()
                server.request_exit()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await server_task
                await asyncio.gather(*tasks, return_exceptions=True)
                sock.close()
        log.info("agent exiting with code %d", code)
        return code

    async def _control(self, client: httpx.AsyncClient, card: dict[str, Any]) -> int:
        cfg = self.config
        try:
            if cfg.boot_delay_seconds > 0:
                log.info("AGENT_BOOT_DELAY_SECONDS: waiting %.1fs before registering", cfg.boot_delay_seconds)
                await asyncio.sleep(cfg.boot_delay_seconds)
            if cfg.never_register:
                log.warning("AGENT_NEVER_REGISTER: serving A2A but never registering nor heartbeating")
                await asyncio.Event().wait()
            code = await self._register(client, card)
            if code is not None:
                return code
            return await self._heartbeat_loop(client)
        except Exception:
            log.exception("agent control loop failed")
            return EXIT_CRASH

    async def _register(self, client: httpx.AsyncClient, card: dict[str, Any]) -> int | None:
        """Register until it works (None) or the platform says stop (an exit code)."""
        cfg = self.config
        payload = {"id": cfg.workspace_id, "url": self.url, "agent_card": card}
        delay = cfg.register_backoff_initial
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await client.post("/registry/register", json=payload)
            except httpx.RequestError as exc:
                problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
            else:
                code = self._verdict(response, "register")
                if code is not None:
                    return code
                if response.is_success:
                    reply = self._note_reply(response)
                    log.info(
                        "registered workspace %s at %s with %s (status %r, attempt %d)",
                        cfg.workspace_id,
                        self.url,
                        cfg.platform_url,
                        reply.get("status"),
                        attempt,
                    )
                    self.registered.set()
                    return None
                problem = f"HTTP {response.status_code}: {_snippet(response)}"
            log.warning("register attempt %d failed (%s); retrying in %.1fs", attempt, problem, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, cfg.register_backoff_max)

    async def _heartbeat_loop(self, client: httpx.AsyncClient) -> int:
        interval = self.config.heartbeat_interval
        next_at = time.monotonic()
        failures = 0
        while True:
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # fell behind (slow platform): don't burst, restart the schedule
                next_at = now
            await asyncio.sleep(next_at - now)
            try:
                response = await client.post("/registry/heartbeat", json=self.heartbeat_payload())
            except httpx.RequestError as exc:
                problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
            else:
                code = self._verdict(response, "heartbeat")
                if code is not None:
                    return code
                if response.is_success:
                    self._note_reply(response)
                    if failures:
                        log.info("heartbeat recovered after %d failed beat(s)", failures)
                    failures = 0
                    continue
                problem = f"HTTP {response.status_code}: {_snippet(response)}"
            failures += 1
            log.warning("heartbeat failed (%s); will retry in %.1fs", problem, interval)

    def fault_overrides(self) -> dict[str, Any]:
        """The run-time fault overrides in `<WORKSPACE_CONFIG_PATH>/faults.json`, re-read on every call
        (every heartbeat and every A2A request), so a test can switch modes while the agent runs.
        Absent or malformed: ``{}``. Keys (each optional; malformed values are ignored):

        - ``error_rate`` (0..1), ``wedged`` (bool): override ``AGENT_ERROR_RATE`` / ``AGENT_WEDGED``;
        - ``active_tasks`` (int): heartbeats report at least this many active tasks;
        - ``native_session`` (true): heartbeats declare the ``session`` capability;
        - ``idle_timeout_seconds`` (int): sent as ``runtime_metadata.idle_timeout_seconds`` (0 clears);
        - ``a2a`` (``reset`` / ``busy`` / ``slow`` / ``hold`` / ``large``) with ``a2a_delay_seconds``,
          ``a2a_hold_file``, ``a2a_response_bytes``, ``a2a_content_length``: see
          :class:`agent.a2a.A2AFault`.
        """
        try:
            override = json.loads((self.config.config_path / FAULTS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return override if isinstance(override, dict) else {}

    def faults(self, overrides: dict[str, Any] | None = None) -> tuple[float, bool]:
        """(error_rate, wedged): the env's fault modes, overridden by ``overrides`` (by default
        :meth:`fault_overrides`, e.g. ``{"error_rate": 0.8, "wedged": true}``)."""
        error_rate, wedged = self.config.error_rate, self.config.wedged
        override = self.fault_overrides() if overrides is None else overrides
        rate = override.get("error_rate", error_rate)
        if isinstance(rate, int | float) and not isinstance(rate, bool) and 0 <= rate <= 1:
            error_rate = float(rate)
        wedged = bool(override.get("wedged", wedged))
        return error_rate, wedged

    def heartbeat_payload(self) -> dict[str, Any]:
        cfg, state = self.config, self.state
        overrides = self.fault_overrides()
        error_rate, wedged = self.faults(overrides)
        active_tasks = state.active_tasks
        floor = overrides.get("active_tasks")
        if isinstance(floor, int) and not isinstance(floor, bool):
            active_tasks = max(active_tasks, floor)
        capabilities = dict(CAPABILITIES)
        if overrides.get("native_session") is True:
            capabilities[NATIVE_SESSION_CAPABILITY] = True
        metadata: dict[str, Any] = {"capabilities": capabilities}
        idle = overrides.get("idle_timeout_seconds")
        if isinstance(idle, int) and not isinstance(idle, bool):
            metadata["idle_timeout_seconds"] = idle
        return {
            "workspace_id": cfg.workspace_id,
            "error_rate": error_rate,
            "sample_error": SIMULATED_ERROR if error_rate > 0 else "",
            "active_tasks": active_tasks,
            "uptime_seconds": state.uptime_seconds(),
            "current_task": state.current_task,
            "runtime_state": "wedged" if wedged else "",
            "runtime_metadata": metadata,
        }

    def _verdict(self, response: httpx.Response, call: str) -> int | None:
        """Exit code for replies that end the agent, else None."""
        if response.status_code in (401, 403):
            log.error(
                "platform rejected the workspace token on %s (HTTP %d); exiting", call, response.status_code
            )
            return EXIT_AUTH
        if response.status_code == 410:
            log.warning("workspace removed (HTTP 410 on %s); exiting", call)
            return EXIT_OK
        return None

    def _note_reply(self, response: httpx.Response) -> dict[str, Any]:
        reply = _json_object(response)
        secret = reply.get("platform_inbound_secret")
        if isinstance(secret, str) and secret:
            self.state.platform_inbound_secret = secret
        return reply

    async def _crash_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        log.error("AGENT_CRASH_AFTER_SECONDS=%g elapsed: simulating a crash (exit %d)", seconds, EXIT_CRASH)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(EXIT_CRASH)


async def serve(
    config: AgentConfig,
    *,
    stop: asyncio.Event | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """Run the agent until ``stop`` is set (-> 0) or the platform ends it; returns the exit code."""
    return await Agent(config, transport=transport).run(stop)


def _configure_logging() -> logging.Handler | None:
    root = logging.getLogger()
    if root.handlers:  # the host (e.g. the CLI) already configured logging
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per heartbeat is noise
    return handler


async def _main(config: AgentConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s", sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
    return await serve(config, stop=stop)


def run() -> None:
    """CLI entry point (``molecule agent``): configure from the environment and run until stopped."""
    handler = _configure_logging()
    try:
        try:
            config = AgentConfig.from_env(os.environ)
        except ConfigError as exc:
            log.error("%s", exc)
            code = EXIT_CONFIG
        else:
            code = asyncio.run(_main(config))
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    run()
