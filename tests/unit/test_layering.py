"""The layering rule (README, Layout): arrows only point down. Parsed from the source, so a new import
that breaks it fails here before review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = (
    "domain",
    "config",
    "store",
    "backends",
    "relay",
    "activities",
    "workflows",
    "api",
    "workers",
    "agent",
)
# package -> the project packages it may import (besides itself). Third-party and stdlib are free.
ALLOWED: dict[str, frozenset[str]] = {
    "domain": frozenset(),
    "config": frozenset({"domain"}),
    "store": frozenset({"domain", "config"}),
    "backends": frozenset({"domain", "config"}),
    # Agent traffic the API proxy and the worker's drain and delegations share.
    "relay": frozenset({"store", "domain", "config"}),
    "activities": frozenset({"store", "backends", "relay", "domain", "config"}),
    "workflows": frozenset({"domain"}),
    "api": frozenset({"store", "relay", "domain", "config"}),
    "workers": frozenset({"workflows", "activities", "backends", "store", "relay", "domain", "config"}),
    "agent": frozenset({"config"}),
    # Benches drive the platform from outside: by the names in domain, never its workflows or tests.
    "bench": frozenset({"molecule", "workers", "backends", "store", "relay", "domain", "config", "api"}),
}
PROJECT = frozenset({*PACKAGES, "molecule", "tests", "bench"})


def imports_of(path: Path) -> set[str]:
    """Top-level project packages a module imports, wherever the import statement sits."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & PROJECT
    return found


def violations(package: str) -> list[str]:
    allowed = ALLOWED[package] | {package}
    bad = []
    for path in sorted((REPO / package).rglob("*.py")):
        for imported in sorted(imports_of(path) - allowed):
            bad.append(f"{path.relative_to(REPO)} imports {imported}")
    return bad


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_arrows_only_point_down(package: str) -> None:
    assert violations(package) == []


def test_the_checker_sees_a_broken_arrow(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom workflows.workspace import X\n\ndef f():\n    from api import deps\n")
    assert imports_of(module) == {"workflows", "api"}


def test_api_routes_reach_temporal_only_through_the_gateway() -> None:
    """Routes call api/gateway.py and nothing else of Temporal (platform.py holds the connection,
    errors.py maps an RPC failure that escapes to a reply)."""
    own = {"gateway.py", "platform.py", "errors.py"}
    offenders = []
    for path in sorted((REPO / "api").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [module or ""]
            if path.name not in own and any(n.split(".")[0] == "temporalio" for n in names):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
