"""The key-encryption keys (KEKs) of the cloud, kept in a 0600 JSON file outside the database.

```json
{"format": "hedgerow-keyring/1", "current": "kek-…",
 "keys": [{"id": "kek-…", "key": "<base64 of 32 bytes>", "created_at": "ISO-8601"}]}
```

``current`` seals new secrets; the other keys only open what is still sealed with them
(during and after an interrupted ``hedgerow cloud rotate-kek``). The file lives at
``DATA/pki/keyring.json`` unless ``[secrets] kek_file`` or ``HEDGEROW_CLOUD_KEK_FILE``
says otherwise. ``Keyring`` is pure; ``read_keyring``/``write_keyring`` touch the file
(written atomically: a temporary file, fsync, rename, fsync of the directory);
``KeyringFile`` re-reads it when it changed, so a running cloud follows a rotation.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hedgerow.cloud.envelope import Kek, new_kek
from hedgerow.cloud.errors import SecretError

log = logging.getLogger(__name__)

FORMAT = "hedgerow-keyring/1"
#: Mode bits a key file must not have (group and others).
PRIVATE_MASK = 0o077


@dataclass(frozen=True)
class Keyring:
    current: Kek
    previous: tuple[Kek, ...] = ()

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.current.id, *(k.id for k in self.previous))

    def get(self, kek_id: str) -> Kek | None:
        return next((k for k in (self.current, *self.previous) if k.id == kek_id), None)

    def rotated(self, kek: Kek | None = None) -> Keyring:
        """A new current KEK; the old ones stay to open what they sealed."""
        return Keyring(kek or new_kek(), (self.current, *self.previous))

    def keeping_only(self, kek_ids: set[str]) -> Keyring:
        """Drop every previous KEK not in ``kek_ids`` (the current one always stays)."""
        return Keyring(self.current, tuple(k for k in self.previous if k.id in kek_ids))

    def to_json(self, created: dict[str, str] | None = None) -> dict[str, Any]:
        created = created or {}
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        return {
            "format": FORMAT,
            "current": self.current.id,
            "keys": [
                {
                    "id": k.id,
                    "key": base64.b64encode(k.key).decode(),
                    "created_at": created.get(k.id, stamp),
                }
                for k in (self.current, *self.previous)
            ],
        }


def keyring_from_json(data: Any, where: str) -> Keyring:
    try:
        if data.get("format") != FORMAT:
            raise SecretError(f"{where} is not a Hedgerow keyring (format {data.get('format')!r})")
        keys = [
            Kek(str(entry["id"]), base64.b64decode(entry["key"], validate=True))
            for entry in data["keys"]
        ]
        current = next(k for k in keys if k.id == data["current"])
    except StopIteration as exc:
        raise SecretError(f"{where}: the current key {data.get('current')!r} is missing") from exc
    except (AttributeError, KeyError, TypeError, binascii.Error) as exc:
        raise SecretError(f"{where} is damaged ({exc!r}): restore it from a backup") from exc
    return Keyring(current, tuple(k for k in keys if k.id != current.id))


def private_mode_problem(path: Path) -> str | None:
    """Why ``path`` is not a private file (None when it is 0600 or stricter)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & PRIVATE_MASK:
        return f"{path} has mode {mode:04o}, readable beyond its owner: run `chmod 600 {path}`"
    return None


def read_keyring(path: Path) -> Keyring:
    try:
        problem = private_mode_problem(path)
        text = path.read_text()
    except FileNotFoundError as exc:
        raise SecretError(
            f"the key-encryption keyring {path} does not exist: restore it from a backup "
            "(or point [secrets] kek_file / HEDGEROW_CLOUD_KEK_FILE at it)"
        ) from exc
    except OSError as exc:
        raise SecretError(f"cannot read the keyring {path}: {exc}") from exc
    if problem:
        raise SecretError(problem)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SecretError(f"{path} is not valid JSON ({exc}): restore it from a backup") from exc
    return keyring_from_json(data, str(path))


def _write_temporary(path: Path, keyring: Keyring) -> Path:
    created: dict[str, str] = {}
    try:
        old = json.loads(path.read_text())
        created = {str(e["id"]): str(e["created_at"]) for e in old.get("keys", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    data = json.dumps(keyring.to_json(created), indent=2).encode() + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return temporary


def _sync_directory(path: Path) -> None:
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_keyring(path: Path, keyring: Keyring) -> None:
    """Replace the file atomically (a crash leaves the old file or the new one, whole)."""
    temporary = _write_temporary(path, keyring)
    os.replace(temporary, path)
    _sync_directory(path)
    log.info(
        "keyring.written path=%s current=%s keys=%s", path, keyring.current.id, len(keyring.ids)
    )


def create_keyring(path: Path) -> Keyring:
    """A new keyring with one KEK; never replaces a file (two starting processes that both
    found none end up with the one that was linked first: ``FileExistsError`` for the other)."""
    if path.exists():
        raise FileExistsError(f"{path} already exists: refusing to replace a keyring")
    keyring = Keyring(new_kek())
    temporary = _write_temporary(path, keyring)
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: no race protection, still atomic
        if path.exists():
            raise FileExistsError(f"{path} already exists: refusing to replace a keyring") from None
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _sync_directory(path)
    log.info("keyring.created path=%s current=%s", path, keyring.current.id)
    return keyring


class KeyringFile:
    """The keyring file as a running cloud sees it: re-read when it changed on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._keyring: Keyring | None = None

    def exists(self) -> bool:
        return self.path.exists()

    def keyring(self) -> Keyring:
        """The file's keyring, re-read if its inode, size or modification time changed."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            st = None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns) if st else None
        with self._lock:
            if self._keyring is not None and stamp == self._stamp:
                return self._keyring
        keyring = read_keyring(self.path)
        with self._lock:
            self._keyring, self._stamp = keyring, stamp
        return keyring

    def current(self) -> Kek:
        return self.keyring().current

    def get(self, kek_id: str) -> Kek:
        kek = self.keyring().get(kek_id)
        if kek is None:
            raise SecretError(
                f"the keyring {self.path} does not hold key-encryption key {kek_id!r}: "
                "use the keyring file the secrets were sealed with (restore it from a backup)"
            )
        return kek
