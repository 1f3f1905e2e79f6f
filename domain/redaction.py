"""Redaction of secrets from evidence (rescue bundles). Pure: the caller supplies the workspace's
own secret values and token hashes; known secret shapes are matched by pattern."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

MASK = "[REDACTED]"
# Values shorter than this are not matched verbatim: they would blank out ordinary words.
MIN_EXACT_LENGTH = 4

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys (RSA, EC, OPENSSH, ENCRYPTED …), the whole block.
    (
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S
        ),
        MASK,
    ),
    # AWS access key ids and the secret keys written next to them.
    (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b"), MASK),
    (
        re.compile(r"(?i)(aws_secret_access_key|secret_access_key|aws_session_token)(\s*[=:]\s*)\S+"),
        rf"\1\2{MASK}",
    ),
    # Authorization headers and bearer tokens.
    (re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1\2{MASK}"),
    # Provider-shaped API keys.
    (
        re.compile(
            r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|xox[abpr]-[A-Za-z0-9-]{10,})"
        ),
        MASK,
    ),
    # key=value / key: value for secret-looking keys (password=…, "api_key": "…", DB_PASSWORD=…).
    (
        re.compile(
            r"""(?ix)
            # a match starts only where a word starts: a long word is scanned once, not once per
            # character (quadratic: 64 ms for 1 KiB, 1 s for 4 KiB)
            ((?<![a-z0-9_])[a-z0-9_]*?(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)
             [a-z0-9_]*["']?)
            (\s*[=:]\s*)
            ("[^"\n]*"|'[^'\n]*'|[^\s,;&]+)"""
        ),
        rf"\1\2{MASK}",
    ),
    # Credentials inside URLs: scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@"), rf"\1{MASK}@"),
)
# Our own tokens are 32 random bytes in base64url (43 characters): found by hash, never by value.
_TOKEN_SHAPE = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


# Every pattern above needs one of these (lower-cased): text with none of them, most of it, is
# returned after a few substring checks instead of seven regex scans.
_HINTS = (
    "-----begin",
    "akia",
    "asia",
    "agpa",
    "aida",
    "aroa",
    "anpa",
    "secret",
    "passw",
    "pwd",
    "token",
    "key",
    "credential",
    "bearer",
    "basic",
    "sk-",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "xox",
    "://",
)


def _may_hold_a_secret(text: str) -> bool:
    lowered = text.lower()
    return any(hint in lowered for hint in _HINTS)


class Redactor:
    """Masks known secret shapes, the exact values of the workspace's secrets, and any of its
    tokens (recognised by their sha256, since only hashes are stored)."""

    def __init__(self, secret_values: Iterable[str] = (), token_hashes: Iterable[str] = ()) -> None:
        values = {v for v in secret_values if len(v) >= MIN_EXACT_LENGTH}
        self._exact = sorted(values, key=len, reverse=True)  # longest first: no partial leftovers
        self._token_hashes = frozenset(token_hashes)

    def redact(self, text: str) -> str:
        for value in self._exact:
            text = text.replace(value, MASK)
        if self._token_hashes:
            text = _TOKEN_SHAPE.sub(self._mask_own_token, text)
        if not _may_hold_a_secret(text):
            return text
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def _mask_own_token(self, match: re.Match[str]) -> str:
        candidate = match.group(0)
        return MASK if hashlib.sha256(candidate.encode()).hexdigest() in self._token_hashes else candidate


def redact_sections(sections: dict[str, str], redactor: Redactor | None) -> dict[str, str] | None:
    """Every section through the redactor; None (no bundle at all) when there is no redactor."""
    if redactor is None:
        return None
    return {name: redactor.redact(text) for name, text in sections.items()}


_SECRET_KEY = re.compile(
    r"(?i)(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?|authorization)"
)


def redact_json(value: object, redactor: Redactor) -> object:
    """A JSON value with every string redacted and the value under a secret-looking key masked,
    still valid JSON (for request and response bodies kept in logs)."""
    if isinstance(value, str):
        return redactor.redact(value)
    if isinstance(value, list):
        return [redact_json(item, redactor) for item in value]
    if isinstance(value, dict):
        return {
            key: MASK
            if isinstance(key, str)
            and _SECRET_KEY.search(key)
            and isinstance(item, str | int | float)
            and not isinstance(item, bool)
            else redact_json(item, redactor)
            for key, item in value.items()
        }
    return value
