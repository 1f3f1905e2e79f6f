from typing import Final

DEFAULT_RUNTIME: Final = "claude-code"
EXTERNAL_RUNTIME: Final = "external"
RUNTIMES: Final = ("claude-code", "hermes", "codex", "openclaw", EXTERNAL_RUNTIME)


def normalize_runtime(runtime: str | None) -> tuple[str, bool]:
    """Return the runtime to use and whether the requested one was replaced by the default."""
    value = (runtime or "").strip().lower()
    if value in RUNTIMES:
        return value, False
    return DEFAULT_RUNTIME, True
