"""Secrets at rest: private modes, group CA keys sealed in SQLite and PostgreSQL, the
migration of an older data directory, ``rotate-kek`` (real CLI subprocesses, real pg_dump)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hedgerow import pki
from hedgerow.cloud import config as config_module
from hedgerow.cloud.config import CloudConfig, check_modes
from hedgerow.cloud.errors import ConfigError, SecretError
from hedgerow.cloud.group_ca_keys import GroupCAKeys, rotate_kek
from hedgerow.cloud.keyring import KeyringFile, read_keyring, write_keyring
from hedgerow.cloud.server import CloudServer
from hedgerow.cloud.storage.database import MIGRATIONS, create_engine
from hedgerow.cloud.storage.repository import Repository
from hedgerow.cloud.storage.sealed_keys import SealedKeyStore
from tests.cloud.conftest import Cloud, clone_config, loopback_config

HEDGEROW = str(Path(sys.executable).parent / "hedgerow")
WAIT = 30.0
SECRET_FILES = (
    "config.toml",
    "admin-token",
    "cloud.db",
    "pki/root-ca.key",
    "pki/server.key",
    "pki/cloud.key",
    "pki/deploy-signing.key",
    "pki/keyring.json",
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def key_material(key_pem: str) -> list[bytes]:
    """Byte strings that give a private key away: PEM lines, DER, the raw private number."""
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    lines = [line.encode() for line in key_pem.splitlines() if line and "-----" not in line]
    found = [b"PRIVATE KEY", der, base64.b64encode(der)[:48], *lines]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        value = key.private_numbers().private_value
        found.append(value.to_bytes((value.bit_length() + 7) // 8, "big"))
    elif isinstance(key, rsa.RSAPrivateKey):
        value = key.private_numbers().d
        found.append(value.to_bytes((value.bit_length() + 7) // 8, "big"))
    return found


def assert_no_key_material(dump: bytes, key_pems: list[str], where: str) -> None:
    assert key_pems
    assert b"PRIVATE KEY" not in dump, f"{where} holds a PEM private key"
    for key_pem in key_pems:
        for material in key_material(key_pem):
            assert material not in dump, f"{where} holds key material {material[:16]!r}..."


def sqlite_bytes(data: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data.glob("cloud.db*")))


def pg_dump(schema: str) -> bytes:
    done = subprocess.run(
        ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-n", schema],
        capture_output=True,
        check=True,
        timeout=WAIT,
    )
    assert b"CREATE TABLE" in done.stdout and b"group_cas" in done.stdout
    return done.stdout


def database_bytes(config: CloudConfig, request: pytest.FixtureRequest) -> bytes:
    if not config.database:
        return sqlite_bytes(config.data_dir)
    return pg_dump(request.getfixturevalue("pg_schema"))


async def sign_core_server(cloud_server: CloudServer, cert: Path, key: Path, core: str) -> None:
    """The core's server certificate, signed by the current group CA (whose key is sealed)."""
    server_key = pki.new_key()
    csr = pki.make_csr(server_key, core).decode()
    ctx = pki.client_context(str(cloud_server.config.paths.root_ca_cert), str(cert), str(key))
    assert cloud_server.endpoints is not None
    async with httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{cloud_server.endpoints.device[1]}", verify=ctx, timeout=10
    ) as device:
        response = await device.post(
            "/core/v1/certificate", json={"csr": csr, "hosts": [f"{core}.local"]}
        )
    assert response.status_code == 200, response.text
    signed = response.json()
    server_cert = pki.cert_from_pem(signed["certificate"].encode())
    assert pki.is_signed_by(server_cert, pki.cert_from_pem(signed["group_cas"][0].encode()))
    assert server_cert.public_key() == server_key.public_key()


async def admin(server: CloudServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.api_url,
        headers={"authorization": f"Bearer {server.admin_token}"},
        timeout=10,
    )


async def make_core(server: CloudServer, group: str, core: str, out: Path) -> tuple[Path, Path]:
    async with await admin(server) as api:
        assert (await api.post("/api/v1/groups", json={"name": group})).status_code == 201
        cloud = Cloud(server, api, server.config.data_dir)
        cert, key = await cloud.core(core, group, out)
        assert len((await api.get(f"/api/v1/groups/{group}/cas")).json()["items"]) == 1
        rotated = await api.post(f"/api/v1/groups/{group}/cas/rotate")
        assert rotated.status_code == 200 and len(rotated.json()["items"]) == 2
        thing = await api.post("/api/v1/things", json={"name": f"{core}-thing", "groups": [group]})
        assert thing.status_code == 201
    await sign_core_server(server, cert, key, core)
    return cert, key


def opened_keys(config: CloudConfig, group: str) -> list[str]:
    """Every CA key of ``group`` as the cloud opens it (raises if one does not open)."""
    engine = create_engine(config.database_url)
    try:
        keys = GroupCAKeys(KeyringFile(config.kek_path))
        return [keys.open(ca) for ca in Repository(engine).group_cas(group)]
    finally:
        engine.dispose()


def sealed_columns(config: CloudConfig) -> list[tuple[str | None, bytes | None, str | None]]:
    engine = create_engine(config.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT key_pem, key_sealed, kek_id FROM group_cas"))
            return [(r[0], bytes(r[1]) if r[1] is not None else None, r[2]) for r in rows]
    finally:
        engine.dispose()


# ---- modes ------------------------------------------------------------------------------


async def test_init_and_serve_leave_every_secret_owner_only(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # the usual umask: files 0644 and directories 0755 by default
    try:
        config = await asyncio.to_thread(loopback_config, tmp_path / "cloud")
        async with CloudServer(config) as server:
            await make_core(server, "factory-1", "pi-1", tmp_path)
            data = config.data_dir
            assert mode(data) == 0o700 and mode(data / "pki") == 0o700
            for name in (*SECRET_FILES, "cloud.db-wal", "cloud.db-shm"):
                assert mode(data / name) == 0o600, f"{name} is {mode(data / name):04o}"
            assert check_modes(config) == []
    finally:
        os.umask(previous)


async def test_serve_refuses_secret_files_others_can_read(tmp_path: Path) -> None:
    data = tmp_path / "data"
    init = await asyncio.create_subprocess_exec(
        HEDGEROW, "cloud", "init", "--data", str(data), "--api-port", "0",
        "--device-host", "127.0.0.1", "--device-port", "0",
        "--mqtt-host", "127.0.0.1", "--mqtt-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(WAIT):
        out, err = await init.communicate()
    assert init.returncode == 0, err
    assert b"keyring" in out
    for name in ("pki/root-ca.key", "pki/keyring.json", "cloud.db", "admin-token"):
        (data / name).chmod(0o644)
        serve = await asyncio.create_subprocess_exec(
            HEDGEROW, "cloud", "serve", "--data", str(data),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(WAIT):
            out, err = await serve.communicate()
        message = err.decode()
        assert serve.returncode == 2, message
        assert f"{data / name} is 0644" in message
        assert f"run `chmod 600 {data / name}`" in message, message
        (data / name).chmod(0o600)
    data.chmod(0o755)
    config = config_module.load(data)
    warnings = check_modes(config)
    assert warnings == [f"{data} is 0755: run `chmod 700 {data}` (only its owner needs it)"]


# ---- ciphertext only ----------------------------------------------------------------------


async def test_the_database_holds_only_sealed_group_ca_keys(
    tmp_path: Path, database_url: str, cloud_template: Path, request: pytest.FixtureRequest
) -> None:
    config = await asyncio.to_thread(clone_config, cloud_template, tmp_path / "cloud", database_url)
    async with CloudServer(config) as server:
        await make_core(server, "factory-1", "pi-1", tmp_path)
        await make_core(server, "factory-2", "pi-2", tmp_path)
    keys = opened_keys(config, "factory-1") + opened_keys(config, "factory-2")
    assert len(keys) == 4 and all("PRIVATE KEY" in k for k in keys)
    columns = sealed_columns(config)
    assert len(columns) == 4
    assert all(pem is None and sealed and kek for pem, sealed, kek in columns)
    dump = await asyncio.to_thread(database_bytes, config, request)
    assert_no_key_material(dump, keys, "the SQLite file" if not database_url else "pg_dump")


async def test_a_sealed_key_moved_to_another_row_does_not_open(
    tmp_path: Path, cloud_template: Path
) -> None:
    config = await asyncio.to_thread(clone_config, cloud_template, tmp_path / "cloud")
    async with CloudServer(config) as server:
        cert, key = await make_core(server, "factory-1", "pi-1", tmp_path)
        engine = create_engine(config.database_url)
        try:
            with engine.begin() as connection:  # the older CA's key in the current CA's row
                rows = connection.execute(
                    sa.text("SELECT id, key_sealed FROM group_cas ORDER BY generation")
                ).all()
                connection.execute(
                    sa.text("UPDATE group_cas SET key_sealed = :k WHERE id = :i"),
                    {"k": rows[0][1], "i": rows[1][0]},
                )
        finally:
            engine.dispose()
        server.services.pki.forget("factory-1")
        with pytest.raises(AssertionError, match="500"):
            await sign_core_server(server, cert, key, "pi-1")
    with pytest.raises(SecretError, match="altered or moved"):
        opened_keys(config, "factory-1")


# ---- an older data directory ---------------------------------------------------------------


def make_old_data_dir(config: CloudConfig) -> list[str]:
    """Turn a new data directory into what the version before sealing left: schema 0001,
    group CA keys in clear, no keyring, a 0644 database in a 0755 directory."""
    config.kek_path.unlink()
    if not config.database:
        for path in config.data_dir.glob("cloud.db*"):
            path.unlink()
    engine = create_engine(config.database_url)
    alembic = AlembicConfig()
    alembic.set_main_option("script_location", str(MIGRATIONS))
    token = config.paths.admin_token.read_text().strip()
    clear: list[str] = []
    try:
        with engine.begin() as connection:
            if config.database:
                connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version CASCADE")
                for table in sa.inspect(connection).get_table_names():
                    connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}" CASCADE')
            alembic.attributes["connection"] = connection
            command.upgrade(alembic, "0001")
        repository = Repository(engine)
        repository.add_token("admin", token)
        for group in ("factory-1", "factory-2"):
            repository.create_group(group)
            issued = pki.make_ca(f"{group} Group CA 1", days=8, unit="group-ca")
            clear.append(issued.key_pem.decode())
            with engine.begin() as connection:
                connection.execute(
                    sa.text(
                        "INSERT INTO group_cas (group_id, generation, fingerprint, cert_pem,"
                        " key_pem, created_at, not_after) SELECT id, 1, :fp, :cert, :key,"
                        " :created, :after FROM groups WHERE name = :group"
                    ),
                    {
                        "fp": pki.fingerprint(issued.cert),
                        "cert": issued.cert_pem.decode(),
                        "key": issued.key_pem.decode(),
                        "created": pki.now(),
                        "after": issued.cert.not_valid_after_utc,
                        "group": group,
                    },
                )
    finally:
        engine.dispose()
    config.data_dir.chmod(0o755)
    config.paths.pki.chmod(0o755)
    if not config.database:
        config.paths.database.chmod(0o644)
    return clear


async def test_an_older_data_directory_is_migrated_to_sealed_keys(
    tmp_path: Path,
    database_url: str,
    cloud_template: Path,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = await asyncio.to_thread(clone_config, cloud_template, tmp_path / "cloud", database_url)
    clear = await asyncio.to_thread(make_old_data_dir, config)
    assert b"PRIVATE KEY" in await asyncio.to_thread(database_bytes, config, request)
    if not database_url:
        with pytest.raises(ConfigError, match=r"cloud\.db is 0644.*chmod 600"):
            async with CloudServer(config):
                pass
        config.paths.database.chmod(0o600)
    caplog.set_level(logging.INFO, logger="hedgerow.cloud")
    async with CloudServer(config) as server:
        async with await admin(server) as api:
            core = await api.post("/api/v1/cores", json={"name": "pi-1", "group": "factory-1"})
            assert core.status_code == 201
            cloud = Cloud(server, api, config.data_dir)
            cert, key = await cloud.core("pi-2", "factory-2", tmp_path)
        await sign_core_server(server, cert, key, "pi-2")  # with the migrated CA's key
    assert "group_ca_keys.sealed count=2" in caplog.text
    assert mode(config.kek_path) == 0o600
    assert any("is 0755: run `chmod 700" in r.getMessage() for r in caplog.records)
    assert opened_keys(config, "factory-1") == [clear[0]]
    assert opened_keys(config, "factory-2") == [clear[1]]
    dump = await asyncio.to_thread(database_bytes, config, request)
    assert_no_key_material(dump, clear, "the migrated database")
    keyring_before = config.kek_path.read_bytes()
    caplog.clear()
    async with CloudServer(config):  # the second start finds nothing to do
        pass
    assert "group_ca_keys.sealed" not in caplog.text
    assert config.kek_path.read_bytes() == keyring_before


async def test_a_missing_keyring_is_refused_when_keys_are_sealed(
    tmp_path: Path, cloud_template: Path
) -> None:
    config = await asyncio.to_thread(clone_config, cloud_template, tmp_path / "cloud")
    async with CloudServer(config) as server:
        await make_core(server, "factory-1", "pi-1", tmp_path)
    config.kek_path.rename(tmp_path / "elsewhere.json")
    with pytest.raises(SecretError, match="keyring .* is missing .* 2 sealed group CA key"):
        async with CloudServer(config):
            pass
    assert not config.kek_path.exists(), "no new keyring made over sealed keys"
    moved = config.replace(kek_file=str(tmp_path / "elsewhere.json"))
    async with CloudServer(moved):
        pass


# ---- rotate-kek ----------------------------------------------------------------------------


async def test_rotate_kek_rewraps_every_key_and_the_cloud_still_issues(
    tmp_path: Path, database_url: str, cloud_template: Path, request: pytest.FixtureRequest
) -> None:
    config = await asyncio.to_thread(clone_config, cloud_template, tmp_path / "cloud", database_url)
    async with CloudServer(config) as server:
        cert, key = await make_core(server, "factory-1", "pi-1", tmp_path)
    keys = opened_keys(config, "factory-1")
    old = read_keyring(config.kek_path)
    old_copy = tmp_path / "old-keyring.json"
    shutil.copy2(config.kek_path, old_copy)
    args = [HEDGEROW, "cloud", "rotate-kek", "--data", str(config.data_dir)]
    if database_url:
        args += ["--database", database_url]
    rotate = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(WAIT):
        out, err = await rotate.communicate()
    assert rotate.returncode == 0, err.decode()
    new = read_keyring(config.kek_path)
    assert new.ids == (new.current.id,) and new.current.id != old.current.id
    assert f"new key-encryption key {new.current.id}" in out.decode()
    assert "re-wrapped    2 group CA key(s)" in out.decode()
    assert f"retired keys  {old.current.id}" in out.decode()
    assert mode(config.kek_path) == 0o600
    assert {kek for _, _, kek in sealed_columns(config)} == {new.current.id}
    assert opened_keys(config, "factory-1") == keys
    with pytest.raises(SecretError, match="does not hold"):
        opened_keys(config.replace(kek_file=str(old_copy)), "factory-1")
    async with CloudServer(config) as server:
        await sign_core_server(server, cert, key, "pi-1")
        async with await admin(server) as api:  # a new CA is sealed under the new KEK
            assert (await api.post("/api/v1/groups/factory-1/cas/rotate")).status_code == 200
    assert {kek for _, _, kek in sealed_columns(config)} == {new.current.id}
    dump = await asyncio.to_thread(database_bytes, config, request)
    assert_no_key_material(dump, opened_keys(config, "factory-1"), "after rotate-kek")


async def test_an_interrupted_rotation_loses_no_key(
    tmp_path: Path, cloud_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = await asyncio.to_thread(clone_config, cloud_template, tmp_path / "cloud")
    async with CloudServer(config) as server:
        await make_core(server, "factory-1", "pi-1", tmp_path)
        await make_core(server, "factory-2", "pi-2", tmp_path)
    keys = opened_keys(config, "factory-1") + opened_keys(config, "factory-2")
    first = read_keyring(config.kek_path)
    engine = create_engine(config.database_url)
    store = SealedKeyStore(engine)
    real_store = SealedKeyStore.store_sealed
    calls = 0

    def crash_on_the_third(self: SealedKeyStore, row: object, sealed: bytes, kek: str) -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("power cut")
        return real_store(self, row, sealed, kek)  # type: ignore[arg-type]

    try:
        with monkeypatch.context() as patch:
            patch.setattr(SealedKeyStore, "store_sealed", crash_on_the_third)
            with pytest.raises(RuntimeError, match="power cut"):
                rotate_kek(config.kek_path, store)
        halfway = read_keyring(config.kek_path)
        assert first.current.id in halfway.ids and len(halfway.ids) == 2
        assert len({kek for _, _, kek in sealed_columns(config)}) == 2, "two rows re-wrapped"
        assert opened_keys(config, "factory-1") + opened_keys(config, "factory-2") == keys
        done = rotate_kek(config.kek_path, store)
    finally:
        engine.dispose()
    assert done.rewrapped == 4 and set(done.retired) == set(halfway.ids)
    assert read_keyring(config.kek_path).ids == (done.kek_id,)
    assert opened_keys(config, "factory-1") + opened_keys(config, "factory-2") == keys
    write_keyring(tmp_path / "unused.json", halfway)  # the file format round-trips


async def test_a_running_cloud_follows_a_rotation(tmp_path: Path, cloud_template: Path) -> None:
    config = await asyncio.to_thread(clone_config, cloud_template, tmp_path / "cloud")
    async with CloudServer(config) as server:
        cert, key = await make_core(server, "factory-1", "pi-1", tmp_path)
        engine = create_engine(config.database_url)
        try:
            done = await asyncio.to_thread(rotate_kek, config.kek_path, SealedKeyStore(engine))
        finally:
            engine.dispose()
        assert done.rewrapped == 2 and len(done.retired) == 1
        server.services.pki.forget("factory-1")
        await sign_core_server(server, cert, key, "pi-1")  # re-wrapped rows open
        async with await admin(server) as api:
            assert (await api.post("/api/v1/groups/factory-1/cas/rotate")).status_code == 200
        await sign_core_server(server, cert, key, "pi-1")  # with the CA made after it
    assert {kek for _, _, kek in sealed_columns(config)} == {done.kek_id}
