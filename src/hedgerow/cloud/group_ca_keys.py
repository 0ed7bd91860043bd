"""Group CA private keys at rest: sealed with ``envelope`` under the keyring's current KEK.

* ``GroupCAKeys.seal``/``open``: what ``PKIService`` uses for every new and used CA key;
  the associated data names the record (group, generation, certificate fingerprint), so a
  sealed key moved to another row does not open.
* ``prepare_keyring``: at start, the keyring file must exist, except in a database that
  holds no sealed key yet (a data directory from before sealing, or an empty database):
  then it is created.
* ``seal_clear_keys``: the migration of existing data: every clear ``key_pem`` is sealed
  and emptied, then the database is compacted so the clear text leaves the file too.
  Idempotent (a second run finds nothing to do).
* ``rotate_kek``: a new KEK re-wraps every data key; the old KEKs stay in the file until
  no row needs them, so a crash at any point leaves every key openable (run it again to
  finish).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from hedgerow.cloud import envelope
from hedgerow.cloud.errors import SecretError
from hedgerow.cloud.keyring import KeyringFile, create_keyring, read_keyring, write_keyring
from hedgerow.cloud.storage.repository import GroupCA
from hedgerow.cloud.storage.sealed_keys import GroupCAKeyRow, SealedKeyStore
from hedgerow.cloud.storage.secrets import SecretStore

log = logging.getLogger(__name__)
#: Passes over the table before ``rotate_kek`` gives up on rows that keep changing.
MAX_REWRAP_PASSES = 5


def record_aad(group: str, generation: int, fingerprint: str) -> bytes:
    """The associated data binding a sealed key to its row."""
    return f"hedgerow/group-ca-key/{group}/{generation}/{fingerprint}".encode()


class GroupCAKeys:
    def __init__(self, keyring: KeyringFile) -> None:
        self.keyring = keyring

    def seal(self, group: str, generation: int, fingerprint: str, key_pem: str) -> bytes:
        return envelope.encrypt(
            self.keyring.current(), key_pem.encode(), record_aad(group, generation, fingerprint)
        )

    def open(self, ca: GroupCA) -> str:
        """The CA's private key PEM (sealed keys are opened; a not yet migrated row is clear)."""
        if ca.key_sealed is None:
            if ca.key_pem is None:
                raise SecretError(f"group {ca.group!r} CA {ca.generation} has no private key")
            return ca.key_pem
        aad = record_aad(ca.group, ca.generation, ca.fingerprint)
        kek = self.keyring.get(envelope.kek_id_of(ca.key_sealed))
        try:
            return envelope.decrypt(kek, ca.key_sealed, aad).decode()
        except SecretError as exc:
            raise SecretError(f"group {ca.group!r} CA {ca.generation}: {exc.message}") from exc


def prepare_keyring(path: Path, store: SealedKeyStore) -> KeyringFile:
    """The keyring file for a starting cloud; created only if no sealed key needs an old one."""
    if not path.exists():
        sealed = store.sealed_count()
        if sealed:
            raise SecretError(
                f"the key-encryption keyring {path} is missing but the database holds "
                f"{sealed} sealed group CA key(s): restore the keyring from a backup or copy "
                "it from the server that sealed them (or point [secrets] kek_file / "
                "HEDGEROW_CLOUD_KEK_FILE at it)"
            )
        try:
            create_keyring(path)
        except FileExistsError:
            log.info("keyring.created_elsewhere path=%s", path)  # another process was first
    keyring_file = KeyringFile(path)
    keyring_file.keyring()  # refuses a damaged or group/world-readable file now, not later
    return keyring_file


def seal_clear_keys(store: SealedKeyStore, keys: GroupCAKeys) -> int:
    """Seal every group CA key still in clear; returns how many were sealed."""
    sealed = 0
    for row in store.clear_rows():
        if row.key_pem is None:
            log.warning(
                "cloud.group_ca_keys.missing group=%s generation=%s advice=%r",
                row.group,
                row.generation,
                "rotate this group's CA",
            )
            continue
        kek = keys.keyring.current()
        blob = envelope.encrypt(
            kek, row.key_pem.encode(), record_aad(row.group, row.generation, row.fingerprint)
        )
        if store.store_sealed(row, blob, kek.id):
            sealed += 1
    if sealed:
        store.compact()
        log.info("group_ca_keys.sealed count=%s kek=%s", sealed, keys.keyring.current().id)
    return sealed


@dataclass(frozen=True)
class KekRotation:
    kek_id: str
    rewrapped: int
    sealed_from_clear: int
    retired: tuple[str, ...]


def _rewrap_row(row: GroupCAKeyRow, keyring: envelope.Kek, old: envelope.Kek | None) -> bytes:
    aad = record_aad(row.group, row.generation, row.fingerprint)
    if row.key_sealed is None:
        assert row.key_pem is not None
        return envelope.encrypt(keyring, row.key_pem.encode(), aad)
    if old is None:
        raise SecretError(
            f"group {row.group!r} CA {row.generation} is sealed under key-encryption key "
            f"{row.kek_id!r}, which the keyring does not hold: restore the keyring that has it"
        )
    try:
        return envelope.rewrap(old, keyring, row.key_sealed, aad)
    except SecretError as exc:
        raise SecretError(f"group {row.group!r} CA {row.generation}: {exc.message}") from exc


def rotate_kek(path: Path, store: SealedKeyStore) -> KekRotation:
    """Re-wrap every data key under a new KEK, then retire the KEKs no row needs."""
    keyring = read_keyring(path).rotated()
    write_keyring(path, keyring)  # from here on, the file holds the new KEK and the old ones
    new = keyring.current
    log.info("keyring.rotating new=%s previous=%s", new.id, ",".join(keyring.ids[1:]))
    rewrapped = from_clear = 0
    for _ in range(MAX_REWRAP_PASSES):
        pending = store.rows_not_under(new.id) + store.clear_rows()
        pending = [r for r in pending if r.key_sealed is not None or r.key_pem is not None]
        if not pending:
            break
        for row in pending:
            old = keyring.get(row.kek_id) if row.kek_id else None
            if store.store_sealed(row, _rewrap_row(row, new, old), new.id):
                if row.key_sealed is None:
                    from_clear += 1
                else:
                    rewrapped += 1
    else:
        raise SecretError(
            "rows kept changing while re-wrapping: run `hedgerow cloud rotate-kek` again "
            f"(every key still opens: the keyring {path} keeps the old keys)"
        )
    if from_clear:
        store.compact()
    # function secrets: re-wrapped too; a version that changed meanwhile keeps its old KEK
    # in the file (kek_ids_in_use counts them), so nothing becomes unopenable
    secrets_rewrapped = SecretStore(store.engine).rewrap(KeyringFile(path), new)
    log.info("keyring.secrets_rewrapped count=%s", secrets_rewrapped)
    final = keyring.keeping_only(store.kek_ids_in_use())
    if final.ids != keyring.ids:
        write_keyring(path, final)
        # a serve process may have sealed a new group CA with the old KEK it read just
        # before the rotation began: such a row keeps its KEK in the file
        late = store.kek_ids_in_use() - set(final.ids)
        if late:
            final = keyring.keeping_only(store.kek_ids_in_use())
            write_keyring(path, final)
            log.warning("keyring.kept_for_late_rows keks=%s", ",".join(sorted(late)))
    retired = tuple(k for k in keyring.ids if k not in final.ids)
    log.info(
        "keyring.rotated kek=%s rewrapped=%s sealed_from_clear=%s retired=%s",
        new.id,
        rewrapped,
        from_clear,
        ",".join(retired) or "-",
    )
    return KekRotation(new.id, rewrapped, from_clear, retired)
