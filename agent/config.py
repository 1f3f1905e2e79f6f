"""Agent configuration, read from the environment the platform gives the agent process.

Missing required values raise :class:`ConfigError` (the CLI turns it into one stderr line and exit
code 2). Malformed optional values never stop the agent: a warning names the variable, the bad value
and the default used instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("molecule.agent")

DEFAULT_CONFIG_PATH = "/configs"
TOKEN_FILE = ".auth_token"  # noqa: S105 - a file name, not a secret
REQUIRED = ("WORKSPACE_ID", "PLATFORM_URL")

_TRUE = frozenset({"1", "true", "yes", "on", "y", "t"})
_FALSE = frozenset({"", "0", "false", "no", "off", "n", "f"})

D = TypeVar("D", float, None)


class ConfigError(ValueError):
    """The environment lacks something the agent cannot run without."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    workspace_id: str
    platform_url: str
    token: str = field(default="", repr=False)  # never shown in reprs or logs
    heartbeat_interval: float = 30.0
    host: str = "127.0.0.1"
    port: int = 0
    public_url: str | None = None
    config_path: Path = Path(DEFAULT_CONFIG_PATH)
    # fault modes
    boot_delay_seconds: float = 0.0
    never_register: bool = False
    crash_after_seconds: float | None = None
    wedged: bool = False
    error_rate: float = 0.0
    # tuning (not read from the environment; tests shorten them)
    register_backoff_initial: float = 1.0
    register_backoff_max: float = 10.0
    request_timeout: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AgentConfig:
        def get(name: str) -> str:
            return environ.get(name, "").strip()

        missing = [name for name in REQUIRED if not get(name)]
        if missing:
            plural = "s" if len(missing) > 1 else ""
            raise ConfigError(f"missing required environment variable{plural}: {', '.join(missing)}")
        platform_url = get("PLATFORM_URL").rstrip("/")
        if not platform_url.startswith(("http://", "https://")):
            raise ConfigError(f"PLATFORM_URL must be an http(s) URL, got {platform_url!r}")

        config_path = Path(get("WORKSPACE_CONFIG_PATH") or DEFAULT_CONFIG_PATH)
        token = get("WORKSPACE_TOKEN") or _read_token(config_path)

        crash_after: float | None = None
        if get("AGENT_CRASH_AFTER_SECONDS"):
            crash_after = _number(environ, "AGENT_CRASH_AFTER_SECONDS", None, lambda v: v > 0, "> 0")

        return cls(
            workspace_id=get("WORKSPACE_ID"),
            platform_url=platform_url,
            token=token,
            heartbeat_interval=_number(environ, "HEARTBEAT_INTERVAL", 30.0, lambda v: v > 0, "> 0"),
            host=get("AGENT_HOST") or "127.0.0.1",
            port=_port(environ),
            public_url=get("AGENT_PUBLIC_URL").rstrip("/") or None,
            config_path=config_path,
            boot_delay_seconds=_number(environ, "AGENT_BOOT_DELAY_SECONDS", 0.0, lambda v: v >= 0, ">= 0"),
            never_register=_flag(environ, "AGENT_NEVER_REGISTER"),
            crash_after_seconds=crash_after,
            wedged=_flag(environ, "AGENT_WEDGED"),
            error_rate=_number(environ, "AGENT_ERROR_RATE", 0.0, lambda v: 0 <= v <= 1, "in [0, 1]"),
        )


def _read_token(config_path: Path) -> str:
    path = config_path / TOKEN_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        reason = "does not exist"
    except (OSError, UnicodeDecodeError) as exc:
        reason = f"could not be read ({type(exc).__name__})"
    log.warning(
        "WORKSPACE_TOKEN is not set and %s %s; calling the platform without a bearer token", path, reason
    )
    return ""


def _number(
    environ: Mapping[str, str], name: str, default: D, ok: Callable[[float], bool], expected: str
) -> float | D:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and ok(value):
        return value
    log.warning(
        "ignoring malformed %s=%r (expected a number %s); using default %r", name, raw, expected, default
    )
    return default


def _port(environ: Mapping[str, str]) -> int:
    raw = environ.get("AGENT_PORT", "").strip()
    if not raw:
        return 0
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if 0 <= port <= 65535:
        return port
    log.warning("ignoring malformed AGENT_PORT=%r (expected an integer in [0, 65535]); using default 0", raw)
    return 0


def _flag(environ: Mapping[str, str], name: str) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw not in _FALSE:
        log.warning(
            "ignoring malformed %s=%r (expected 1/0, true/false, yes/no, on/off); using default False",
            name,
            environ.get(name),
        )
    return False
