"""Image references: when a cached image may be trusted and when it must be pulled again."""

from __future__ import annotations

MOVING_TAGS = frozenset({"latest", "staging", "main", "dev", "edge", "nightly", "rolling"})


def image_tag(ref: str) -> str | None:
    """The tag of `ref`, or None when it has none. A registry port (`host:5000/x`) is not a tag."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    return last.rsplit(":", 1)[1]


def is_digest_pinned(ref: str) -> bool:
    return "@sha256:" in ref


def is_moving(ref: str) -> bool:
    """True when the reference may point at new content tomorrow: no tag or a moving tag."""
    if is_digest_pinned(ref):
        return False
    tag = image_tag(ref)
    return tag is None or tag.lower() in MOVING_TAGS
