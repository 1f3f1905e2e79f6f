"""domain.access.can_communicate: a workspace reaches itself, its parent, its children and its
siblings (root-level workspaces are siblings of each other), and nothing further away."""

from __future__ import annotations

import pytest

from domain.access import Node, can_communicate

# root ── a ── a1
#   │    │  └─ a2 ── a2x
#   │    └─ b ── b1
# other  (a second root)
ROOT = Node("root", None)
OTHER = Node("other", None)
A = Node("a", "root")
B = Node("b", "root")
A1 = Node("a1", "a")
A2 = Node("a2", "a")
B1 = Node("b1", "b")
A2X = Node("a2x", "a2")


@pytest.mark.parametrize(
    ("caller", "target", "allowed"),
    [
        (A, A, True),  # self
        (ROOT, ROOT, True),  # self, at the root
        (A1, A, True),  # parent
        (A, ROOT, True),  # parent, a root one
        (A, A1, True),  # child
        (ROOT, A, True),  # child of a root
        (A1, A2, True),  # sibling
        (A, B, True),  # sibling
        (ROOT, OTHER, True),  # root-level workspaces are siblings
        (OTHER, ROOT, True),
        (A1, B1, False),  # cousin
        (B1, A1, False),
        (A1, ROOT, False),  # grandparent
        (ROOT, A1, False),  # grandchild
        (A2X, A, False),  # grandparent, below the root
        (A1, B, False),  # uncle
        (B, A1, False),  # nephew
        (OTHER, A, False),  # a root and another root's child
        (A, OTHER, False),
    ],
)
def test_who_may_reach_whom(caller: Node, target: Node, allowed: bool) -> None:
    assert can_communicate(caller, target) is allowed
