"""The provisioning bundle a core starts from (``NAME.tar.gz``), built in memory."""

from __future__ import annotations

import io
import tarfile
import time

import tomli_w

#: Files in a bundle, as ``docs/architecture.md`` lists them.
CONFIG = "config.toml"
CORE_CERT = "core.cert.pem"
CORE_KEY = "core.key"
ROOT_CA = "root-ca.pem"
VERIFY_KEY = "deploy-verify.pem"


def core_config(
    core: str, group: str, https_url: str, mqtt_url: str, local_port: int = 8883
) -> str:
    return tomli_w.dumps(
        {
            "core": {"name": core, "group": group},
            "cloud": {"https": https_url, "mqtt": mqtt_url},
            "local": {"host": "0.0.0.0", "port": local_port, "hosts": []},
        }
    )


def build_bundle(files: dict[str, bytes], private: frozenset[str] = frozenset({CORE_KEY})) -> bytes:
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = now
            info.mode = 0o600 if name in private else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def read_bundle(data: bytes) -> dict[str, bytes]:
    """The bundle's files by name (used by tests and by ``core create --extract``)."""
    result: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                handle = tar.extractfile(member)
                if handle is not None:
                    result[member.name] = handle.read()
    return result
