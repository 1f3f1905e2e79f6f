"""Bounds on JSON that agents and operators send: depth, serialized size, what a stored row can serve."""

from __future__ import annotations

from domain.json_bounds import MAX_BYTES, MAX_DEPTH, bound_violation, depth_exceeds, unservable_reason


def nested(depth: int) -> object:
    value: object = {}
    for i in range(depth - 1):
        value = {"a": value} if i % 2 else [value]
    return value


def test_depth_counts_containers_and_survives_any_nesting():
    assert not depth_exceeds("scalar", 0)
    assert depth_exceeds({}, 0) and not depth_exceeds({}, 1)
    assert not depth_exceeds(nested(MAX_DEPTH)) and depth_exceeds(nested(MAX_DEPTH + 1))
    assert depth_exceeds(nested(100_000))  # far past the recursion limit: measured, not crashed on
    wide = {"k": [1, {"x": [[]]}], "flat": list(range(10))}
    assert not depth_exceeds(wide, 5) and depth_exceeds(wide, 4)


def test_size_is_the_compact_utf8_json():
    assert bound_violation({"k": "x" * (MAX_BYTES - 8)}) is None  # {"k":"..."} is 8 bytes of syntax
    problem = bound_violation({"k": "x" * (MAX_BYTES - 7)})
    assert problem is not None and str(MAX_BYTES) in problem
    assert bound_violation("é" * (MAX_BYTES // 2)) is not None, "bytes, not characters"
    assert "deeper than 32" in (bound_violation(nested(40)) or "")


def test_stored_values_that_cannot_be_served():
    assert unservable_reason({"a": 1}) is None
    assert "not an object" in (unservable_reason([1, 2]) or "")
    assert "deeper" in (unservable_reason({"a": nested(MAX_DEPTH)}) or "")
