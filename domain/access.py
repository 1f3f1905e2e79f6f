"""Who may call whom: a workspace may reach itself, its parent, its children and its siblings (same
parent; root-level workspaces are siblings of each other). The operator may reach any workspace."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Node:
    id: str
    parent_id: str | None


def can_communicate(caller: Node, target: Node) -> bool:
    if caller.id == target.id:
        return True
    if target.parent_id == caller.id or caller.parent_id == target.id:
        return True
    return caller.parent_id == target.parent_id  # siblings, root-level ones included (None == None)
