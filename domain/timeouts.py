"""Provisioning deadline resolution.

Order: PROVISION_TIMEOUT_SECONDS (all runtimes) > template manifest
`runtime_config.provision_timeout_seconds` (max over templates of the runtime) > hermes 30 min >
default 720 s.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

DEFAULT_PROVISION_TIMEOUT_SECONDS: Final = 720
HERMES_PROVISION_TIMEOUT_SECONDS: Final = 30 * 60
RUNTIME_DEFAULT_TIMEOUTS: Final = {"hermes": HERMES_PROVISION_TIMEOUT_SECONDS}


@dataclass(frozen=True)
class ResolvedTimeout:
    seconds: int
    source: str  # "env" | "manifest" | "runtime_default" | "default"


def manifest_timeout(values: Iterable[object]) -> int | None:
    """The max of the positive integer timeouts the templates of one runtime declare."""
    valid = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    return max(valid) if valid else None


def resolve_provision_timeout(
    runtime: str, env_override: int | None, manifest_seconds: int | None
) -> ResolvedTimeout:
    if env_override is not None and env_override > 0:
        return ResolvedTimeout(env_override, "env")
    if manifest_seconds is not None and manifest_seconds > 0:
        return ResolvedTimeout(manifest_seconds, "manifest")
    if runtime in RUNTIME_DEFAULT_TIMEOUTS:
        return ResolvedTimeout(RUNTIME_DEFAULT_TIMEOUTS[runtime], "runtime_default")
    return ResolvedTimeout(DEFAULT_PROVISION_TIMEOUT_SECONDS, "default")


PROVISION_TIMEOUT_ERROR: Final = (
    "provisioning timed out — the agent started but never called /registry/register; "
    "check its logs and its network path to the platform"
)
