"""The keyring (AES-256-GCM, versioned keys, associated data) and the secret name/value rules."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from domain.secrets import InvalidSecret, Scope, associated_data, check_key, check_value, merged
from store.keyring import (
    Keyring,
    KeyringError,
    Sealed,
    UndecryptableSecret,
    add_key_version,
    format_keys,
    key_file,
    load_keyring,
    parse_keys,
)

WS = "7b0f6a52-1f3e-4a53-9d55-0c7f0d6d2a11"
OTHER = "0d4c6e1a-96f8-4d55-8d65-3e3b0f5f9c22"


def key(byte: int) -> bytes:
    return bytes([byte]) * 32


def aad(key_name: str = "OPENAI_API_KEY", workspace: str = WS) -> bytes:
    return associated_data(Scope.WORKSPACE, workspace, key_name)


def test_round_trip_with_a_fresh_nonce_per_value() -> None:
    ring = Keyring({1: key(1)})
    first, second = ring.seal("sk-value", aad()), ring.seal("sk-value", aad())
    assert first.blob != second.blob, "the same value sealed twice must not give the same bytes"
    assert b"sk-value" not in first.blob
    assert ring.open(first, aad()) == ring.open(second, aad()) == "sk-value"
    assert ring.open(ring.seal("ünïcode ✓", aad()), aad()) == "ünïcode ✓"


@pytest.mark.parametrize(
    "moved_to",
    [
        associated_data(Scope.WORKSPACE, OTHER, "OPENAI_API_KEY"),  # another workspace
        associated_data(Scope.WORKSPACE, WS, "ANTHROPIC_API_KEY"),  # another key
        associated_data(Scope.GLOBAL, None, "OPENAI_API_KEY"),  # workspace → global
    ],
)
def test_a_value_copied_to_another_row_does_not_decrypt(moved_to: bytes) -> None:
    ring = Keyring({1: key(1)})
    sealed = ring.seal("sk-value", aad())
    with pytest.raises(UndecryptableSecret):
        ring.open(sealed, moved_to)


def test_tampered_or_truncated_values_do_not_decrypt() -> None:
    ring = Keyring({1: key(1)})
    sealed = ring.seal("sk-value", aad())
    flipped = bytearray(sealed.blob)
    flipped[-1] ^= 1
    for blob in (bytes(flipped), sealed.blob[:12], b""):
        with pytest.raises(UndecryptableSecret):
            ring.open(Sealed(1, blob), aad())


def test_the_newest_version_seals_and_old_versions_stay_readable() -> None:
    old = Keyring({1: key(1)}).seal("old", aad())
    ring = Keyring({1: key(1), 2: key(2)})
    assert ring.current == 2
    new = ring.seal("new", aad())
    assert new.version == 2
    assert ring.open(old, aad()) == "old"
    assert ring.open(new, aad()) == "new"
    with pytest.raises(UndecryptableSecret):  # a process that only knows version 1
        Keyring({1: key(1)}).open(new, aad())


def test_an_unknown_version_fails_that_read_only() -> None:
    ring = Keyring({1: key(1)})
    good = ring.seal("good", aad())
    with pytest.raises(UndecryptableSecret):
        ring.open(Sealed(7, good.blob), aad())
    assert ring.open(good, aad()) == "good"


def test_key_text_forms() -> None:
    plain = base64.b64encode(key(3)).decode()
    assert parse_keys(plain, "env") == {1: key(3)}
    listed = f"2:{base64.b64encode(key(2)).decode()}, 1:{plain}"
    assert parse_keys(listed, "env") == {1: key(3), 2: key(2)}
    assert parse_keys(format_keys({1: key(3), 2: key(2)}), "file") == {1: key(3), 2: key(2)}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "holds no key"),
        ("not base64!", "not 'base64' or 'N:base64'"),
        (base64.b64encode(b"short").decode(), "decodes to 5 bytes, not 32"),
        (f"0:{base64.b64encode(key(1)).decode()}", "versions start at 1"),
        (f"x:{base64.b64encode(key(1)).decode()}", "not 'base64' or 'N:base64'"),
        (f"1:{base64.b64encode(key(1)).decode()},1:{base64.b64encode(key(2)).decode()}", "listed twice"),
    ],
)
def test_malformed_keys_are_refused_without_repeating_them(text: str, says: str) -> None:
    with pytest.raises(KeyringError) as err:
        parse_keys(text, "SECRETS_ENCRYPTION_KEY")
    assert says in str(err.value)
    assert "SECRETS_ENCRYPTION_KEY" in str(err.value)
    if len(text) > 8:
        assert text not in str(err.value) and text.split(":")[-1] not in str(err.value)


def test_the_embedded_default_generates_a_private_key_file_once(tmp_path: Path) -> None:
    first = load_keyring(None, tmp_path)
    path = key_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = first.seal("kept", aad())
    second = load_keyring(None, tmp_path)  # the next start reads the same key
    assert second.open(sealed, aad()) == "kept"
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary file is left behind"


def test_processes_starting_together_end_up_with_one_key(tmp_path: Path) -> None:
    """The API and the worker on one fresh volume (in containers both can be pid 1): every loader
    gets the key the file holds, and no temporary file is left."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        rings = list(pool.map(lambda _: load_keyring(None, tmp_path), range(16)))
    sealed = rings[0].seal("shared", aad())
    assert all(ring.open(sealed, aad()) == "shared" for ring in rings)
    assert [p.name for p in tmp_path.iterdir()] == ["secrets.key"]


def test_a_missing_key_file_is_an_error_when_not_creating(tmp_path: Path) -> None:
    with pytest.raises(KeyringError):
        load_keyring(None, tmp_path, create=False)
    assert not key_file(tmp_path).exists()


def test_configured_keys_win_over_the_key_file(tmp_path: Path) -> None:
    load_keyring(None, tmp_path)
    configured = load_keyring(base64.b64encode(key(9)).decode(), tmp_path)
    assert configured.open(Keyring({1: key(9)}).seal("x", aad()), aad()) == "x"


def test_a_version_added_while_running_is_picked_up_on_first_sight(tmp_path: Path) -> None:
    running = load_keyring(None, tmp_path)
    assert add_key_version(tmp_path) == 2
    restarted = load_keyring(None, tmp_path)
    assert restarted.current == 2 and restarted.versions == [1, 2]
    sealed = restarted.seal("under v2", aad())
    assert running.open(sealed, aad()) == "under v2"
    assert running.seal("new", aad()).version == 2, "new values are sealed under the newest version"
    assert stat.S_IMODE(key_file(tmp_path).stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "_X", "A1", "X" * 128])
def test_env_var_names_are_keys(name: str) -> None:
    assert check_key(name) == name


@pytest.mark.parametrize("name", ["", "lower", "1ABC", "A-B", "A B", "Ä", "X" * 129, None, 5])
def test_other_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidSecret):
        check_key(name)


def test_values_are_bounded_text() -> None:
    assert check_value("x" * 65536) == "x" * 65536
    for bad in ("x" * 65537, "a\x00b", "\ud800", None, 3):
        with pytest.raises(InvalidSecret):
            check_value(bad)


def test_workspace_values_override_global_ones() -> None:
    assert merged({"A": "g", "B": "g"}, {"B": "w", "C": "w"}) == {"A": "g", "B": "w", "C": "w"}


def test_the_key_is_random_per_install(tmp_path: Path) -> None:
    os.makedirs(tmp_path / "a")
    os.makedirs(tmp_path / "b")
    load_keyring(None, tmp_path / "a")
    load_keyring(None, tmp_path / "b")
    assert key_file(tmp_path / "a").read_text() != key_file(tmp_path / "b").read_text()


def test_the_cli_adds_a_key_version_and_refuses_when_the_key_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from config.settings import get_settings
    from molecule.cli import app

    monkeypatch.setenv("MOLECULE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SECRETS_ENCRYPTION_KEY", raising=False)
    get_settings.cache_clear()
    load_keyring(None, tmp_path)
    try:
        added = CliRunner().invoke(app, ["secrets", "new-key"])
        assert added.exit_code == 0, added.output
        assert "key version 2 added" in added.output
        assert load_keyring(None, tmp_path).versions == [1, 2]
        monkeypatch.setenv("SECRETS_ENCRYPTION_KEY", base64.b64encode(key(5)).decode())
        get_settings.cache_clear()
        refused = CliRunner().invoke(app, ["secrets", "new-key"])
        assert refused.exit_code == 2
        assert base64.b64encode(key(5)).decode() not in refused.output
    finally:
        get_settings.cache_clear()
