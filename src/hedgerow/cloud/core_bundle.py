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


#: Files a bundle holds owner-only (``config.toml`` too when it holds a broker password).
PRIVATE = frozenset({CORE_KEY})


def core_config(
    core: str,
    group: str,
    https_url: str,
    mqtt_url: str,
    local_port: int = 8883,
    *,
    mqtt_protocol: str = "5",
    mqtt_password: str | None = None,
) -> str:
    """The core's ``config.toml``; an external broker that speaks only MQTT 3.1.1 or asks
    the cloud who logs in adds ``mqtt_protocol`` and the core's ``mqtt_username`` and
    ``mqtt_password`` (older cores never see these keys: the defaults stay out)."""
    cloud = {"https": https_url, "mqtt": mqtt_url}
    if mqtt_protocol != "5":
        cloud["mqtt_protocol"] = mqtt_protocol
    if mqtt_password is not None:
        cloud["mqtt_username"] = core
        cloud["mqtt_password"] = mqtt_password
    return tomli_w.dumps(
        {
            "core": {"name": core, "group": group},
            "cloud": cloud,
            "local": {"host": "0.0.0.0", "port": local_port, "hosts": []},
        }
    )


def build_bundle(files: dict[str, bytes], private: frozenset[str] = PRIVATE) -> bytes:
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
