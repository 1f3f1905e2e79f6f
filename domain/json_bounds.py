"""Bounds on the JSON that agents and operators hand us: nesting depth and serialized size. Pure.

A map past these bounds is refused before anything is written: deep nesting breaks serializers far
from where it was accepted (a reply, a signal payload, a NOTIFY), and size is what it costs every
read after."""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32
MAX_BYTES = 256 * 1024


_CONTAINERS = (dict, list, tuple)
# One encoder, built once: json.dumps with options builds a new one on every call.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def depth_exceeds(value: Any, max_depth: int = MAX_DEPTH) -> bool:
    """Whether `value` nests deeper than `max_depth` (a scalar is depth 0, `{}` and `[]` depth 1).

    Iterative, and it stops at the first container past the bound: a value nested deeper than the
    interpreter's recursion limit is measured, not crashed on."""
    if not isinstance(value, _CONTAINERS):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, _CONTAINERS):
                stack.append((child, depth + 1))
    return False


def serialized_size(value: Any) -> int:
    """Bytes of `value` as compact UTF-8 JSON, the way it is stored and served. The value must be
    within the depth bound (the encoder recurses)."""
    return len(_COMPACT.encode(value).encode("utf-8", "surrogatepass"))


def bound_violation(value: Any, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES) -> str | None:
    """Why `value` is out of bounds, or None when it is within them."""
    if depth_exceeds(value, max_depth):
        return f"nested deeper than {max_depth} levels"
    size = serialized_size(value)
    if size > max_bytes:
        return f"larger than {max_bytes} bytes as JSON ({size} bytes)"
    return None


UNREADABLE = "unreadable"


def unservable_reason(value: Any) -> str | None:
    """Why a stored JSON object cannot be served as one (written before these bounds, or by hand),
    or None when it can."""
    if not isinstance(value, dict):
        return f"stored value is a JSON {type(value).__name__}, not an object"
    if depth_exceeds(value):
        return f"stored value is nested deeper than {MAX_DEPTH} levels"
    return None
