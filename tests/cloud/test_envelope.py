"""Envelope encryption (pure) and the keyring file."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest

from hedgerow.cloud import envelope
from hedgerow.cloud.errors import SecretError
from hedgerow.cloud.keyring import (
    KeyringFile,
    create_keyring,
    read_keyring,
    write_keyring,
)

SECRET = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI...\n-----END PRIVATE KEY-----\n"
AAD = b"hedgerow/group-ca-key/factory-1/1/ab12"


def test_a_sealed_secret_opens_with_its_kek_and_record_only() -> None:
    kek = envelope.new_kek()
    blob = envelope.encrypt(kek, SECRET, AAD)
    assert SECRET not in blob and b"PRIVATE KEY" not in blob
    assert envelope.kek_id_of(blob) == kek.id
    assert envelope.decrypt(kek, blob, AAD) == SECRET
    assert envelope.encrypt(kek, SECRET, AAD) != blob, "a fresh data key and nonce every time"
    with pytest.raises(SecretError, match="altered or moved"):
        envelope.decrypt(kek, blob, b"hedgerow/group-ca-key/factory-2/1/cd34")
    other = envelope.new_kek()
    with pytest.raises(SecretError, match="not"):
        envelope.decrypt(other, blob, AAD)
    impostor = envelope.Kek(kek.id, other.key)  # same id, another key
    with pytest.raises(SecretError, match="does not open"):
        envelope.decrypt(impostor, blob, AAD)


def test_a_damaged_blob_is_refused_not_misread() -> None:
    kek = envelope.new_kek()
    blob = envelope.encrypt(kek, SECRET, AAD)
    for cut in (0, 3, 10, len(blob) - 20, len(blob) - 1):
        with pytest.raises(SecretError):
            envelope.decrypt(kek, blob[:cut], AAD)
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    with pytest.raises(SecretError, match="integrity"):
        envelope.decrypt(kek, bytes(flipped), AAD)
    with pytest.raises(SecretError, match="integrity"):
        envelope.rewrap(kek, envelope.new_kek(), bytes(flipped), AAD)
    with pytest.raises(SecretError, match="format"):
        envelope.decrypt(kek, b"-----BEGIN PRIVATE KEY-----", AAD)


def test_rewrap_changes_the_kek_not_the_ciphertext() -> None:
    old, new = envelope.new_kek(), envelope.new_kek()
    blob = envelope.encrypt(old, SECRET, AAD)
    moved = envelope.rewrap(old, new, blob, AAD)
    assert envelope.kek_id_of(moved) == new.id
    assert envelope.decrypt(new, moved, AAD) == SECRET
    assert moved.endswith(blob[-len(SECRET) - 16 :]), "the data ciphertext is kept"
    with pytest.raises(SecretError):
        envelope.decrypt(old, moved, AAD)


def test_kek_ids_and_sizes_are_checked() -> None:
    with pytest.raises(SecretError, match="bytes"):
        envelope.Kek("kek-1", b"short")
    with pytest.raises(SecretError, match="id"):
        envelope.Kek("bad id/with slash", bytes(32))
    assert "key=" not in repr(envelope.new_kek())


def test_the_keyring_file_is_private_atomic_and_followed(tmp_path: Path) -> None:
    path = tmp_path / "pki" / "keyring.json"
    first = create_keyring(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError, match="already exists"):
        create_keyring(path)
    watched = KeyringFile(path)
    assert watched.current() == first.current
    rotated = first.rotated()
    write_keyring(path, rotated)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["keyring.json"], "no temporary left"
    assert watched.current() == rotated.current, "a running cloud follows the file"
    assert watched.get(first.current.id) == first.current
    with pytest.raises(SecretError, match="does not hold"):
        watched.get("kek-unknown")
    write_keyring(path, rotated.keeping_only(set()))
    assert read_keyring(path).ids == (rotated.current.id,)
    path.chmod(0o644)
    with pytest.raises(SecretError, match=f"chmod 600 {path}"):
        read_keyring(path)
    path.chmod(0o600)
    data = json.loads(path.read_text())
    data["keys"][0]["key"] = "!!"
    path.write_text(json.dumps(data))
    with pytest.raises(SecretError, match="damaged"):
        read_keyring(path)
    with pytest.raises(SecretError, match="does not exist"):
        read_keyring(tmp_path / "nowhere.json")


def test_only_one_of_several_racing_creators_makes_the_keyring(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    made: list[str | None] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait(timeout=10)
        try:
            made.append(create_keyring(path).current.id)
        except FileExistsError:
            made.append(None)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    winners = [m for m in made if m]
    assert len(made) == 8 and len(winners) == 1, made
    assert read_keyring(path).current.id == winners[0]
    assert [p.name for p in tmp_path.iterdir()] == ["keyring.json"]
