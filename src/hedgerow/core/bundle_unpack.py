"""Unpack a provisioning bundle (``hedgerow cloud core create`` → ``NAME.tar.gz``).

The bundle holds ``config.toml``, ``core.cert.pem``, ``core.key``, ``root-ca.pem`` and
``deploy-verify.pem``; they are written into the data directory (the key with mode 0600).
Members with other names, paths or links are refused.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from .certificates import write_atomic
from .config import CONFIG_FILE, CORE_CERT, CORE_KEY, DEPLOY_VERIFY, ROOT_CA
from .errors import ConfigError

BUNDLE_FILES = (CONFIG_FILE, CORE_CERT, CORE_KEY, ROOT_CA, DEPLOY_VERIFY)
MAX_MEMBER_BYTES = 1024 * 1024


def unpack_bundle(bundle: Path, data_dir: Path) -> Path:
    """Write the bundle's files into ``data_dir``; returns the path of ``config.toml``."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(bundle, "r:*") as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isdir():
                    continue
                if (
                    not member.isfile()
                    or name not in BUNDLE_FILES
                    or member.size > MAX_MEMBER_BYTES
                ):
                    raise ConfigError("bundle", f"unexpected member {member.name!r}")
                extracted = tar.extractfile(member)
                if extracted is None:
                    raise ConfigError("bundle", f"cannot read {member.name!r}")
                found[name] = extracted.read()
    except FileNotFoundError as exc:
        raise ConfigError("bundle", f"no bundle at {bundle}") from exc
    except (tarfile.TarError, OSError) as exc:
        raise ConfigError("bundle", f"{bundle} is not a readable tar archive: {exc}") from exc
    missing = [n for n in BUNDLE_FILES if n not in found]
    if missing:
        raise ConfigError("bundle", f"missing {', '.join(missing)}")
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, data in found.items():
        write_atomic(data_dir / name, data, 0o600 if _private(name, data) else 0o644)
    return data_dir / CONFIG_FILE


def _private(name: str, data: bytes) -> bool:
    """The key, and ``config.toml`` when it holds the core's broker password."""
    return name == CORE_KEY or (name == CONFIG_FILE and b"mqtt_password" in data)
