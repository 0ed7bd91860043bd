"""Secrets in the cloud (pure): labels move on a new value, values are sealed at rest under
the KEK with the record's identity, and sealed to one core's key for its deployment."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest

from hedgerow import pki
from hedgerow.cloud import function_secrets as fs
from hedgerow.cloud.errors import InvalidInput, SecretError
from hedgerow.cloud.keyring import KeyringFile, create_keyring
from hedgerow.core.secrets import secret_aad

NOW = dt.datetime(2026, 12, 4, 15, 0, tzinfo=dt.UTC)


def test_labels_move_and_values_open_only_as_their_own_record(tmp_path: Path) -> None:
    create_keyring(tmp_path / "kek.json")
    keyring = KeyringFile(tmp_path / "kek.json")
    v1 = fs.new_version(keyring, "factory-1", "api-key", b"one", False, NOW)
    assert b"one" not in v1.sealed and v1.stages == ("AWSCURRENT",)
    v2 = fs.new_version(keyring, "factory-1", "api-key", b"two", False, NOW)
    after_v2 = fs.next_versions([v1], v2)
    assert [(v.version_id, v.stages) for v in after_v2] == [
        (v2.version_id, ("AWSCURRENT",)), (v1.version_id, ("AWSPREVIOUS",))
    ]  # fmt: skip
    v3 = fs.new_version(keyring, "factory-1", "api-key", b"three", False, NOW)
    after_v3 = fs.next_versions(after_v2, v3)
    assert [v.version_id for v in after_v3] == [v3.version_id, v2.version_id]  # v1 dropped
    assert fs.open_version(keyring, "factory-1", "api-key", after_v3[1]) == b"two"
    with pytest.raises(SecretError, match="api-key"):  # the blob of another record
        fs.open_version(keyring, "factory-2", "api-key", after_v3[1])
    assert "sealed" not in fs.SecretVersionRecord.to_json(v3)
    with pytest.raises(InvalidInput):
        fs.validate_secret_name("no spaces")
    with pytest.raises(InvalidInput):
        fs.validate_value("", False)
    assert fs.validate_value("AP8=", True) == b"\x00\xff"


def test_a_deployment_entry_opens_only_with_that_cores_key(tmp_path: Path) -> None:
    create_keyring(tmp_path / "kek.json")
    keyring = KeyringFile(tmp_path / "kek.json")
    ca = pki.make_ca("test CA")
    core_key = pki.new_key()
    cert = pki.sign_public_key(ca, core_key.public_key(), "pi-1", unit="core")
    version = fs.new_version(keyring, "factory-1", "api-key", b"s3cr3t", False, NOW)
    (entry,) = fs.sealed_for_core(keyring, "factory-1", "pi-1", pki.cert_to_pem(cert).decode(),
                                  "api-key", [version])  # fmt: skip
    assert "s3cr3t" not in str(entry) and entry["created_ms"] == int(NOW.timestamp() * 1000)
    sealed = base64.b64decode(entry["sealed"])
    aad = secret_aad("factory-1", "pi-1", "api-key", version.version_id)
    assert aad == fs.core_aad("factory-1", "pi-1", "api-key", version.version_id)
    assert pki.open_sealed(core_key, sealed, aad) == b"s3cr3t"
    with pytest.raises(pki.PKIError):
        pki.open_sealed(pki.new_key(), sealed, aad)


def test_the_store_keeps_two_labelled_versions_and_never_a_clear_value(
    tmp_path: Path, database_url: str
) -> None:
    from hedgerow.cloud.errors import Conflict, NotFound
    from hedgerow.cloud.storage.database import create_engine, migrate
    from hedgerow.cloud.storage.repository import Repository
    from hedgerow.cloud.storage.secrets import SecretStore

    url = database_url or f"sqlite:///{tmp_path / 'cloud.db'}"
    engine = create_engine(url)
    try:
        migrate(engine)
        Repository(engine).create_group("factory-1")
        create_keyring(tmp_path / "kek.json")
        keyring = KeyringFile(tmp_path / "kek.json")
        store = SecretStore(engine)
        first = fs.new_version(keyring, "factory-1", "api-key", b"value-one", False, NOW)
        store.create("factory-1", "api-key", first)
        with pytest.raises(Conflict, match="secret update"):
            store.create("factory-1", "api-key", first)
        with pytest.raises(NotFound, match="group"):
            store.create("factory-9", "api-key", first)
        for value in (b"value-two", b"value-three"):
            new = fs.new_version(keyring, "factory-1", "api-key", value, False, NOW)
            store.put_version("factory-1", "api-key", new)
        versions = store.versions("factory-1", "api-key")
        assert [v.stages for v in versions] == [("AWSCURRENT",), ("AWSPREVIOUS",)]
        opened = [fs.open_version(keyring, "factory-1", "api-key", v) for v in versions]
        assert opened == [b"value-three", b"value-two"]
        assert store.names("factory-1") == ["api-key"]
        assert list(store.for_deployment("factory-1", ["api-key", "absent"])) == ["api-key"]
        store.delete("factory-1", "api-key")
        assert store.names("factory-1") == []
        with pytest.raises(NotFound, match="does not exist in group"):
            store.versions("factory-1", "api-key")
    finally:
        engine.dispose()
    if not database_url:
        raw = (tmp_path / "cloud.db").read_bytes()
        for name in ("cloud.db-wal",):
            if (tmp_path / name).exists():
                raw += (tmp_path / name).read_bytes()
        assert b"value-" not in raw


def test_rotating_the_kek_rewraps_secrets_and_keeps_them_openable(tmp_path: Path) -> None:
    from hedgerow.cloud import envelope
    from hedgerow.cloud.group_ca_keys import rotate_kek
    from hedgerow.cloud.storage.database import create_engine, migrate
    from hedgerow.cloud.storage.repository import Repository
    from hedgerow.cloud.storage.sealed_keys import SealedKeyStore
    from hedgerow.cloud.storage.secrets import SecretStore

    engine = create_engine(f"sqlite:///{tmp_path / 'cloud.db'}")
    try:
        migrate(engine)
        Repository(engine).create_group("factory-1")
        create_keyring(tmp_path / "kek.json")
        keyring = KeyringFile(tmp_path / "kek.json")
        old_kek = keyring.current().id
        store = SecretStore(engine)
        store.create("factory-1", "api-key",
                     fs.new_version(keyring, "factory-1", "api-key", b"v-one", False, NOW))  # fmt: skip
        sealed_store = SealedKeyStore(engine)
        assert sealed_store.sealed_count() == 1 and sealed_store.kek_ids_in_use() == {old_kek}
        rotation = rotate_kek(tmp_path / "kek.json", sealed_store)
        assert old_kek in rotation.retired
        (version,) = store.versions("factory-1", "api-key")
        assert envelope.kek_id_of(version.sealed) == rotation.kek_id
        assert fs.open_version(KeyringFile(tmp_path / "kek.json"), "factory-1", "api-key",
                               version) == b"v-one"  # fmt: skip
    finally:
        engine.dispose()
