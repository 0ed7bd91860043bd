"""Creating a data directory: ``config.toml``, root CA, keyring, database, admin token.

The directory is 0700; every secret in it is 0600 from its creation (``config.py``)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from pathlib import Path

from hedgerow.cloud import config as config_module
from hedgerow.cloud.config import CloudConfig, Listen, create_private, write_private
from hedgerow.cloud.errors import Conflict
from hedgerow.cloud.keyring import create_keyring
from hedgerow.cloud.pki_service import create_pki
from hedgerow.cloud.storage.database import create_engine, migrate
from hedgerow.cloud.storage.repository import Repository

log = logging.getLogger(__name__)


def new_admin_token() -> str:
    """A fresh admin token. Never starts with "-", so ``--token VALUE`` always parses
    (a bare URL-safe token did one time in 64, and argparse took it for an option)."""
    return "hr-" + secrets.token_urlsafe(32)


def init_data_dir(
    data_dir: Path,
    *,
    hosts: Sequence[str] = (),
    database: str = "",
    api: Listen | None = None,
    device: Listen | None = None,
    mqtt: Listen | None = None,
    broker: str = "",
    advertise: str | None = None,
    rotation_days: int = 7,
    retention_days: float = 7.0,
    kek_file: str = "",
) -> tuple[CloudConfig, str]:
    """Create everything a cloud needs in ``data_dir``; returns the config and admin token."""
    data_dir = data_dir.resolve()
    if (data_dir / config_module.CONFIG_FILE).exists():
        raise Conflict(f"{data_dir} is already initialised (config.toml exists)")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.chmod(0o700)
    base = CloudConfig(data_dir)
    cfg = CloudConfig(
        data_dir=data_dir,
        database=database,
        advertise=advertise or (hosts[0] if hosts else base.advertise),
        hosts=tuple(hosts),
        api=api or base.api,
        device=device or base.device,
        mqtt=mqtt or base.mqtt,
        broker=broker,
        group_ca_rotation_days=rotation_days,
        retention_days=retention_days,
        kek_file=kek_file,
    )
    paths = cfg.paths
    create_pki(paths, [*hosts, cfg.advertise])
    if cfg.kek_path.exists():  # shared by several servers: made by the first one
        log.info("cloud.keyring_reused path=%s", cfg.kek_path)
    else:
        create_keyring(cfg.kek_path)
    paths.artifacts.mkdir(exist_ok=True)
    if not cfg.database:
        create_private(paths.database)
    engine = create_engine(cfg.database_url)
    try:
        migrate(engine)
        token = new_admin_token()
        Repository(engine).add_token("admin", token)
    finally:
        engine.dispose()
    write_private(paths.admin_token, (token + "\n").encode())
    config_module.save(cfg)
    log.info("cloud.initialised dir=%s", data_dir)
    return cfg, token


def read_admin_token(data_dir: Path) -> str | None:
    path = data_dir / "admin-token"
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
