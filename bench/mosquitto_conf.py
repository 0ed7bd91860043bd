"""The one Mosquitto launcher of the benches (``broker.py``, ``hostile.py``).

Mosquitto's defaults (``max_inflight_messages 20``, ``max_queued_messages 1000``) drop
QoS 1 under load; the benches raise them (1000 / 100000) and say so in their results.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

MAX_INFLIGHT = 1000
MAX_QUEUED = 100_000


def config(
    port: int,
    *,
    log: Path | None = None,
    persist_dir: Path | None = None,
    max_queued_bytes: int | None = None,
    tls: tuple[Path, Path, Path] | None = None,
) -> str:
    """A ``mosquitto.conf`` for one loopback listener; ``tls`` = (ca, cert, key) with
    client certificates required."""
    lines = [
        "per_listener_settings false",
        "allow_anonymous true",
        f"persistence {'true' if persist_dir else 'false'}",
    ]
    if persist_dir is not None:
        lines.append(f"persistence_location {persist_dir}/")
    if log is None:
        lines.append("log_dest none")
    else:
        lines += [f"log_dest file {log}", "log_type notice", "log_type warning", "log_type error"]
    lines += [f"max_inflight_messages {MAX_INFLIGHT}", f"max_queued_messages {MAX_QUEUED}"]
    if max_queued_bytes is not None:
        lines.append(f"max_queued_bytes {max_queued_bytes}")
    lines.append(f"listener {port} 127.0.0.1")
    if tls is not None:
        ca, cert, key = tls
        lines += [
            f"cafile {ca}",
            f"certfile {cert}",
            f"keyfile {key}",
            "require_certificate true",
            "use_identity_as_username true",
        ]
    return "\n".join(lines) + "\n"


def command(conf_path: Path, conf_text: str) -> list[str]:
    """Write the configuration and return the command that runs Mosquitto with it."""
    conf_path.write_text(conf_text)
    return [shutil.which("mosquitto") or "mosquitto", "-c", str(conf_path)]


def version() -> str:
    out = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout
    return out.splitlines()[0].strip() if out else "mosquitto ?"
