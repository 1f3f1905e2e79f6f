"""Secrets: which names are allowed, how the layers merge into an instance's env, and the fixed words
a failure to decrypt is reported with. Pure: encryption and storage live in store/."""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum

# Env-var names: a secret becomes one variable of the instance's environment.
KEY_PATTERN = re.compile(r"[A-Z_][A-Z0-9_]*")
MAX_KEY_CHARS = 128
MAX_VALUE_BYTES = 64 * 1024
# What a workspace that cannot be started for an undecryptable secret says, everywhere it is seen:
# never the key's name, its version or the cipher's error (the system this replaces leaked all three).
DECRYPT_GLOBAL_FAILED = "failed to decrypt global secret"
DECRYPT_WORKSPACE_FAILED = "failed to decrypt workspace secret"


class Scope(StrEnum):
    GLOBAL = "global"
    WORKSPACE = "workspace"


class InvalidSecret(ValueError):
    """A key or value the API refuses (422), with a message naming what is wrong."""


def check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidSecret("key is required: an environment variable name such as OPENAI_API_KEY")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidSecret(f"key is longer than {MAX_KEY_CHARS} characters")
    if not KEY_PATTERN.fullmatch(key):
        raise InvalidSecret(
            f"key {key[:MAX_KEY_CHARS]!r} is not an environment variable name "
            "(upper-case letters, digits and underscores, not starting with a digit)"
        )
    return key


def check_value(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidSecret("value is required and must be a string")
    if "\x00" in value:
        raise InvalidSecret("value must not contain NUL characters (an environment cannot hold them)")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise InvalidSecret("value is not valid UTF-8 text (lone surrogates)") from None
    if size > MAX_VALUE_BYTES:
        raise InvalidSecret(f"value is {size} bytes; at most {MAX_VALUE_BYTES} are allowed")
    return value


def associated_data(scope: Scope, workspace_id: str | None, key: str) -> bytes:
    """What a ciphertext is bound to: a value copied to another row (another workspace, another key,
    or between global and workspace) fails to decrypt instead of leaking under a new name."""
    return f"molecule-secret\x00{scope.value}\x00{workspace_id or ''}\x00{key}".encode()


def merged(global_values: Mapping[str, str], workspace_values: Mapping[str, str]) -> dict[str, str]:
    """The values an agent sees: global, overridden by the workspace's own."""
    return {**global_values, **workspace_values}
