"""`molecule` command line: the embedded stack, its processes, the reference agent, and workspaces."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Molecule: AI-agent workspace control plane"
)
workspace_app = typer.Typer(no_args_is_help=True, help="Create and inspect workspaces through the API")
app.add_typer(workspace_app, name="workspace")
secrets_app = typer.Typer(no_args_is_help=True, help="The secrets' encryption keys (run beside the database)")
app.add_typer(secrets_app, name="secrets")
console = Console()
err_console = Console(stderr=True)


def _hard_exit(code: int = 0) -> None:
    """Skip interpreter teardown once done: the Temporal SDK's Rust bridge can abort the process
    during finalisation (temporalio/sdk-python#300), turning a clean stop into a crash code."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _logging() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO: one line per proxied A2A call and per agent dispatch.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@app.command()
def up(
    data_dir: Annotated[Path, typer.Option(help="where Postgres, Temporal and logs keep their data")] = Path(
        ".molecule"
    ),
    api_port: Annotated[int, typer.Option(help="API port")] = 8080,
    temporal_port: Annotated[int, typer.Option(help="embedded Temporal gRPC port")] = 7233,
    ui_port: Annotated[int, typer.Option(help="embedded Temporal Web UI port")] = 8233,
    temporal_address: Annotated[str | None, typer.Option(help="use this Temporal server instead")] = None,
    database_url: Annotated[str | None, typer.Option(help="use this PostgreSQL instead")] = None,
) -> None:
    """Start the embedded stack (Temporal, PostgreSQL, worker, API) and print its URLs."""
    from molecule.stack import UpOptions, run_up

    _logging()
    code = run_up(
        UpOptions(
            data_dir=data_dir,
            api_port=api_port,
            temporal_port=temporal_port,
            ui_port=ui_port,
            temporal_address=temporal_address,
            database_url=database_url,
        )
    )
    _hard_exit(code)


@app.command()
def worker() -> None:
    """Run a Temporal worker for the `workspaces` task queue."""
    from config.settings import get_settings
    from store.keyring import KeyringError
    from workers.main import run_worker

    _logging()
    try:
        asyncio.run(run_worker(get_settings()))
    except KeyringError as exc:
        err_console.print(f"cannot start the worker: {exc}")
        _hard_exit(2)
    _hard_exit(0)


@app.command()
def api(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8080,
) -> None:
    """Serve the HTTP API under uvicorn, with the header limits and read timeouts of api/server.py."""
    import uvicorn

    from api.app import create_app
    from api.server import server_config
    from config.settings import get_settings
    from store.keyring import KeyringError

    _logging()
    settings = get_settings()
    try:
        application = create_app(settings)
    except KeyringError as exc:
        err_console.print(f"cannot start the API: {exc}")
        _hard_exit(2)
    uvicorn.Server(server_config(application, host, port, settings)).run()
    _hard_exit(0)


@app.command()
def migrate() -> None:
    """Apply pending SQL migrations to DATABASE_URL."""
    from config.settings import get_settings
    from store.migrate import apply_migrations

    _logging()
    dsn = get_settings().database_url
    if not dsn:
        err_console.print("DATABASE_URL is not set")
        raise typer.Exit(2)
    applied = asyncio.run(apply_migrations(dsn))
    console.print(f"applied: {applied or 'nothing, up to date'}")


@secrets_app.command("new-key")
def secrets_new_key() -> None:
    """Add a fresh key version to the data dir's key file (the embedded default). Running processes
    seal new values with it from their next write; `molecule secrets rotate` re-encrypts the rest."""
    from config.settings import get_settings
    from store.keyring import KeyringError, add_key_version, key_file

    settings = get_settings()
    if settings.secrets_encryption_key:
        err_console.print(
            "SECRETS_ENCRYPTION_KEY is set: add the new version there (`N:base64,…`), not to a key file"
        )
        raise typer.Exit(2)
    try:
        version = add_key_version(settings.data_dir)
    except (OSError, KeyringError) as exc:
        err_console.print(f"cannot add a key to {key_file(settings.data_dir)}: {exc}")
        raise typer.Exit(1) from None
    console.print(f"key version {version} added to {key_file(settings.data_dir)}")


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every secret under the newest key version. Values that cannot be read are left as
    they are, and named in the log."""
    from config.settings import get_settings
    from store.db import create_pool
    from store.keyring import KeyringError, load_keyring
    from store.secrets import rotate

    _logging()
    settings = get_settings()
    if not settings.database_url:
        err_console.print("DATABASE_URL is not set")
        raise typer.Exit(2)
    try:
        # Never a new key here: run where the platform's key is, or every value would be unreadable.
        keyring = load_keyring(settings.secrets_encryption_key, settings.data_dir, create=False)
    except KeyringError as exc:
        err_console.print(str(exc))
        raise typer.Exit(2) from None

    async def run() -> tuple[int, int]:
        pool = await create_pool(str(settings.database_url))
        try:
            return await rotate(pool, keyring)
        finally:
            await pool.close()

    rotated, unreadable = asyncio.run(run())
    console.print(f"re-encrypted {rotated} secret(s) under key version {keyring.current}")
    if unreadable:
        err_console.print(f"{unreadable} secret(s) could not be decrypted and were left as they are")
        raise typer.Exit(1)


@app.command()
def agent() -> None:
    """Run the reference agent (register, heartbeat, A2A echo). Configured by env."""
    from agent.main import run

    run()


@app.command("build-agent-image")
def build_agent_image(
    tag: Annotated[str, typer.Option(help="extra tag for the templates to use")] = "molecule-agent:local",
) -> None:
    """Build the reference agent's Docker image locally (debootstrap + this project's wheel)."""
    import docker

    from molecule.agent_image import ImageBuildError, ensure_agent_image

    _logging()
    try:
        client = docker.from_env()
        ref = ensure_agent_image(client)
        repository, _, name = tag.rpartition(":")
        client.images.get(ref).tag(repository, name)
    except (ImageBuildError, docker.errors.DockerException) as exc:
        err_console.print(f"could not build the agent image: {exc}")
        raise typer.Exit(1) from None
    console.print(f"{ref} (tagged {tag})")


# --- workspace commands (talk to the API) ----------------------------------------------------

ApiUrl = Annotated[str, typer.Option("--api", envvar="MOLECULE_API_URL", help="API base URL")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def _request(method: str, api_url: str, path: str, **kwargs: Any) -> Any:
    headers = {}
    if token := os.environ.get("ADMIN_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = httpx.request(method, api_url.rstrip("/") + path, headers=headers, timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        err_console.print(f"[red]cannot reach the API at {api_url}: {exc}[/red]")
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        err_console.print(f"[red]{response.status_code}: {message}[/red]")
        raise typer.Exit(1)
    return response.json()


_COLUMNS = ("id", "name", "runtime", "backend", "status", "url", "last_sample_error")


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table()
    for column in _COLUMNS:
        table.add_column(column, overflow="fold", no_wrap=column in ("id", "status"))
    for row in rows:
        table.add_row(*[str(row.get(c) or "") for c in _COLUMNS])
    return table


@workspace_app.command("create")
def workspace_create(
    name: str,
    runtime: Annotated[
        str, typer.Option(help="claude-code | hermes | codex | openclaw | external")
    ] = "claude-code",
    template: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option()] = None,
    env: Annotated[list[str] | None, typer.Option(help="NAME=VALUE, repeatable")] = None,
    external: Annotated[bool, typer.Option(help="the agent runs off-host")] = False,
    api_url: ApiUrl = "http://127.0.0.1:8080",
    as_json: AsJson = False,
) -> None:
    """Create a workspace; prints its auth token once."""
    env_map = {}
    for item in env or []:
        key, sep, value = item.partition("=")
        if not sep:
            err_console.print(f"[red]--env {item!r}: expected NAME=VALUE[/red]")
            raise typer.Exit(2)
        env_map[key] = value
    body: dict[str, Any] = {
        "name": name,
        "runtime": runtime,
        "template": template,
        "model": model,
        "env": env_map,
    }
    if external:
        body["external"] = True
    result = _request("POST", api_url, "/workspaces", json=body)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    console.print(_table([result["workspace"]]))
    console.print(f"auth token (shown once): [bold]{result['auth_token']}[/bold]")


@workspace_app.command("list")
def workspace_list(
    status: Annotated[str | None, typer.Option()] = None,
    api_url: ApiUrl = "http://127.0.0.1:8080",
    as_json: AsJson = False,
) -> None:
    """List workspaces."""
    rows = _request("GET", api_url, "/workspaces", params={"status": status} if status else None)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        console.print(_table(rows))


@workspace_app.command("get")
def workspace_get(
    workspace_id: str, api_url: ApiUrl = "http://127.0.0.1:8080", as_json: AsJson = False
) -> None:
    """Show one workspace."""
    row = _request("GET", api_url, f"/workspaces/{workspace_id}")
    if as_json:
        print(json.dumps(row, indent=2))
        return
    table = Table(show_header=False)
    for key, value in row.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict | list) else str(value))
    console.print(table)


if __name__ == "__main__":
    app()
