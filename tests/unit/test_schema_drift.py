"""The status enum has one source (domain.status) and SQL never hard-codes a status value."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from domain.status import WorkspaceStatus
from store.migrate import MIGRATIONS_DIR, load_migrations

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("api", "activities", "backends", "domain", "molecule", "store", "workers", "workflows", "agent")
STATUS_VALUES = "|".join(s.value for s in WorkspaceStatus)


def migration_enum_values() -> list[str]:
    """Values of workspace_status after all migrations: CREATE TYPE plus any ALTER TYPE ADD VALUE."""
    values: list[str] = []
    for migration in load_migrations(MIGRATIONS_DIR):
        created = re.search(r"CREATE TYPE workspace_status AS ENUM \((.*?)\);", migration.sql, re.S)
        if created:
            values = re.findall(r"'([^']+)'", created.group(1))
        values += re.findall(
            r"ALTER TYPE workspace_status ADD VALUE (?:IF NOT EXISTS )?'([^']+)'", migration.sql
        )
    return values


def test_migration_enum_matches_python_enum():
    assert migration_enum_values() == [s.value for s in WorkspaceStatus]


def test_drift_check_notices_a_divergence(tmp_path, monkeypatch):
    # The check above must be able to fail: a migration adding a value Python lacks is caught.
    for m in sorted(MIGRATIONS_DIR.glob("*.sql")):
        (tmp_path / m.name).write_text(m.read_text())
    (tmp_path / "9999_extra.sql").write_text("ALTER TYPE workspace_status ADD VALUE 'zombie';")
    monkeypatch.setattr("tests.unit.test_schema_drift.MIGRATIONS_DIR", tmp_path)
    assert migration_enum_values()[-1] == "zombie"
    assert migration_enum_values() != [s.value for s in WorkspaceStatus]


# A status value in quotes next to a status column, a cast, or in a SET/VALUES/WHERE of SQL text.
_LITERAL = re.compile(
    rf"(status\s*(=|<>|!=|IN\s*\()\s*'({STATUS_VALUES})')|('({STATUS_VALUES})'\s*::\s*workspace_status)",
    re.I,
)


def sql_strings(path: Path) -> list[tuple[int, str]]:
    """String constants in a Python file that look like SQL."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if re.search(r"\b(SELECT|UPDATE|INSERT|DELETE|WHERE|SET)\b", text):
                found.append((node.lineno, text))
    return found


def status_literals_in_sql() -> list[str]:
    offenders = []
    for directory in CODE_DIRS:
        for path in sorted((REPO / directory).rglob("*.py")):
            for line, text in sql_strings(path):
                if _LITERAL.search(text):
                    offenders.append(f"{path.relative_to(REPO)}:{line}")
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        body = re.sub(r"CREATE TYPE workspace_status AS ENUM \(.*?\);", "", path.read_text(), flags=re.S)
        if _LITERAL.search(body) or re.search(rf"DEFAULT\s+'({STATUS_VALUES})'", body):
            offenders.append(str(path.relative_to(REPO)))
    return offenders


def test_no_sql_writes_a_status_literal():
    assert status_literals_in_sql() == []


def test_literal_scan_catches_offenders():
    samples = [
        "UPDATE workspaces SET status = 'online' WHERE id = $1",
        "SELECT * FROM workspaces WHERE status IN ('failed', 'removed')",
        "INSERT INTO workspaces (status) VALUES ('provisioning'::workspace_status)",
    ]
    for sample in samples:
        assert _LITERAL.search(sample), sample
    assert not _LITERAL.search("UPDATE workspaces SET status = $2::workspace_status WHERE id = $1")
