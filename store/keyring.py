"""The secrets' encryption keys and the sealing itself: AES-256-GCM, a fresh 96-bit nonce per value,
the row's identity as associated data, and a key version stored beside each value.

Keys come from `SECRETS_ENCRYPTION_KEY`, or else from `secrets.key` in the data dir, generated on
first start (mode 0600). Either holds one key (base64 of 32 bytes: version 1) or several as
`N:base64` separated by commas; the highest version encrypts, every listed one decrypts."""

from __future__ import annotations

import base64
import binascii
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("molecule.secrets")

KEY_FILE = "secrets.key"
_NONCE_BYTES = 12


class KeyringError(RuntimeError):
    """The configured keys cannot be used. The message never holds key material."""


class UndecryptableSecret(Exception):
    """One value cannot be opened: an unknown key version, a wrong key, or a value moved from
    another row. Carries no detail on purpose: callers report fixed words."""


@dataclass(frozen=True)
class Sealed:
    version: int
    blob: bytes  # nonce || ciphertext || tag


def parse_keys(text: str, source: str) -> dict[int, bytes]:
    """{version: 32-byte key} from `base64` or `N:base64,M:base64`. `source` names where the text came
    from in the error; the text itself is never repeated."""
    keys: dict[int, bytes] = {}
    entries = [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]
    if not entries:
        raise KeyringError(f"{source} holds no key")
    for position, entry in enumerate(entries, 1):
        version_text, sep, encoded = entry.rpartition(":")
        if not sep:
            version_text, encoded = "1", entry
        try:
            version = int(version_text)
            key = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error):
            raise KeyringError(
                f"{source}: entry {position} is not 'base64' or 'N:base64' (N a positive integer)"
            ) from None
        if version < 1:
            raise KeyringError(f"{source}: entry {position} has version {version}; versions start at 1")
        if len(key) != 32:
            raise KeyringError(f"{source}: entry {position} decodes to {len(key)} bytes, not 32")
        if version in keys:
            raise KeyringError(f"{source}: version {version} is listed twice")
        keys[version] = key
    return keys


def format_keys(keys: dict[int, bytes]) -> str:
    return ",".join(f"{v}:{base64.b64encode(k).decode()}" for v, k in sorted(keys.items()))


class Keyring:
    def __init__(self, keys: dict[int, bytes], source: Path | None = None) -> None:
        """`source`: the key file these came from, read again when it changes (a version added while
        this process runs)."""
        if not keys:
            raise KeyringError("no encryption key")
        self._source = source
        self._stamp = self._file_stamp()
        self._load(keys)

    def _load(self, keys: dict[int, bytes]) -> None:
        self._ciphers = {version: AESGCM(key) for version, key in keys.items()}
        self.current = max(keys)

    def _file_stamp(self) -> int | None:
        try:
            return self._source.stat().st_mtime_ns if self._source is not None else None
        except OSError:
            return None

    def _refresh(self) -> None:
        """Read the key file again if it changed (`molecule secrets new-key` while this process runs):
        new values are then sealed under the newest version at once."""
        if self._source is None:
            return
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            return
        try:
            self._load(parse_keys(self._source.read_text(), str(self._source)))
            self._stamp = stamp
        except (OSError, KeyringError) as exc:
            log.warning("could not re-read the secrets key file (%s)", type(exc).__name__)

    @property
    def versions(self) -> list[int]:
        return sorted(self._ciphers)

    def seal(self, plaintext: str, aad: bytes) -> Sealed:
        self._refresh()
        nonce = os.urandom(_NONCE_BYTES)
        blob = nonce + self._ciphers[self.current].encrypt(nonce, plaintext.encode(), aad)
        return Sealed(self.current, blob)

    def open(self, sealed: Sealed, aad: bytes) -> str:
        if sealed.version not in self._ciphers:
            self._refresh()
        cipher = self._ciphers.get(sealed.version)
        if cipher is None or len(sealed.blob) <= _NONCE_BYTES:
            raise UndecryptableSecret()
        try:
            plain = cipher.decrypt(sealed.blob[:_NONCE_BYTES], sealed.blob[_NONCE_BYTES:], aad)
        except InvalidTag:
            raise UndecryptableSecret() from None
        return plain.decode()


def key_file(data_dir: Path) -> Path:
    return data_dir / KEY_FILE


def load_keyring(configured: str | None, data_dir: Path, *, create: bool = True) -> Keyring:
    """The configured keys, else the data dir's (created with one fresh key when absent, unless
    `create` is False: then a missing file is a KeyringError)."""
    if configured:
        return Keyring(parse_keys(configured, "SECRETS_ENCRYPTION_KEY"))
    path = key_file(data_dir)
    try:
        return _from_file(path)
    except FileNotFoundError:
        if not create:
            raise KeyringError(f"{path} does not exist (and SECRETS_ENCRYPTION_KEY is not set)") from None
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = _write_private(data_dir, {1: AESGCM.generate_key(bit_length=256)})
    try:
        # A hard link appears whole or not at all: of processes starting together (the API and the
        # worker on one volume), one installs its key and every one of them reads that one.
        os.link(tmp, path)
        _sync_dir(data_dir)
        log.info("generated the secrets encryption key in %s (the secrets cannot be read without it)", path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return _from_file(path)


def _from_file(path: Path) -> Keyring:
    return Keyring(parse_keys(path.read_text(), str(path)), path)


def add_key_version(data_dir: Path) -> int:
    """Append a fresh key as the next version to the data dir's key file; its version."""
    path = key_file(data_dir)
    keys = parse_keys(path.read_text(), str(path))
    version = max(keys) + 1
    keys[version] = AESGCM.generate_key(bit_length=256)
    os.replace(_write_private(data_dir, keys), path)
    _sync_dir(data_dir)
    return version


def _write_private(directory: Path, keys: dict[int, bytes]) -> Path:
    """The keys in a new file of a unique name (mode 0600), on disk before it is linked in."""
    fd, name = tempfile.mkstemp(prefix=f".{KEY_FILE}.", dir=directory)
    with os.fdopen(fd, "w") as out:
        out.write(format_keys(keys) + "\n")
        out.flush()
        os.fsync(out.fileno())
    return Path(name)


def _sync_dir(directory: Path) -> None:
    """The new name is durable too: a key file lost to a power cut would orphan every secret."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
