"""systemd integration: the unit file, install/uninstall, and sd_notify.

``hedgerow core install-service`` writes ``/etc/systemd/system/hedgerow-core.service``
(``Type=notify``, ``Restart=always``, ``WatchdogSec``) and runs ``systemctl daemon-reload``
and ``enable``. Its ``ExecStart`` is the launcher's copy in the data directory
(``core/launcher.py``), which starts the release the ``current`` pointer names and rolls
back an update that did not commit; it relays the core's notifications (``READY=1``,
``WATCHDOG=1``) as the unit's main process (``NotifyAccess=main``). The core tells systemd ``READY=1`` once it serves, and pings
``WATCHDOG=1`` at half the interval systemd gives in ``WATCHDOG_USEC``.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

UNIT_PATH = Path("/etc/systemd/system/hedgerow-core.service")
UNIT_NAME = "hedgerow-core.service"
WATCHDOG_SEC = 60


def unit_text(
    command: Sequence[str], *, user: str | None = None, working_dir: Path | None = None
) -> str:
    lines = [
        "[Unit]",
        "Description=Hedgerow core (edge daemon)",
        "Wants=network-online.target",
        "After=network-online.target time-sync.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={shlex.join(command)}",
        "Restart=always",
        "RestartSec=2",
        f"WatchdogSec={WATCHDOG_SEC}",
        "TimeoutStopSec=30",
        "KillMode=mixed",
        "LimitNOFILE=65536",
    ]
    if user:
        lines.append(f"User={user}")
    if working_dir:
        lines.append(f"WorkingDirectory={working_dir}")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def _systemctl(*args: str) -> None:
    subprocess.run(["systemctl", *args], check=True, capture_output=True, timeout=30)


def install(text: str, path: Path = UNIT_PATH, *, systemctl: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if systemctl:
        _systemctl("daemon-reload")
        _systemctl("enable", path.name)


def uninstall(path: Path = UNIT_PATH, *, systemctl: bool = True) -> bool:
    if systemctl:
        subprocess.run(
            ["systemctl", "disable", "--now", path.name], capture_output=True, timeout=30
        )
    existed = path.exists()
    path.unlink(missing_ok=True)
    if systemctl:
        _systemctl("daemon-reload")
    return existed


def sd_notify(message: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``message`` (e.g. ``READY=1``) to ``NOTIFY_SOCKET``; False when not under systemd."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None."""
    value = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not value or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(value) / 2_000_000
    except ValueError:
        return None
