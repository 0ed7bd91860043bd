"""CPU temperature from the kernel's thermal zones (``/sys/class/thermal/thermal_zone*/temp``).

The files hold millidegrees Celsius. The zone whose ``type`` names the CPU is preferred
(``cpu-thermal`` on a Raspberry Pi, ``x86_pkg_temp`` on a PC); otherwise the first zone that
reads. Machines without thermal zones (containers, some VMs) give None.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

THERMAL_ROOT = Path("/sys/class/thermal")
CPU_ZONE_TYPES = ("cpu-thermal", "cpu_thermal", "x86_pkg_temp", "soc_thermal", "cpu")


def parse_millidegrees(text: str) -> float:
    """``"48312\\n"`` → ``48.312``; ``ValueError`` if it is not a number."""
    return int(text.strip()) / 1000.0


def _zone_type(zone: Path) -> str:
    try:
        return (zone / "type").read_text().strip().lower()
    except OSError:
        return ""


def find_thermal_zone(root: Path = THERMAL_ROOT) -> Path | None:
    """The ``temp`` file of the CPU's thermal zone, or of the first readable zone."""
    zones = sorted(root.glob("thermal_zone*"), key=lambda p: (len(p.name), p.name))
    readable = []
    for zone in zones:
        temp = zone / "temp"
        try:
            parse_millidegrees(temp.read_text())
        except (OSError, ValueError):
            continue
        if any(kind in _zone_type(zone) for kind in CPU_ZONE_TYPES):
            return temp
        readable.append(temp)
    return readable[0] if readable else None


class CpuThermal:
    """Reads the CPU temperature; ``read_celsius()`` is None when there is no zone."""

    def __init__(self, path: Path | None = None, *, root: Path = THERMAL_ROOT) -> None:
        self.path = path if path is not None else find_thermal_zone(root)

    def read_celsius(self) -> float | None:
        if self.path is None:
            return None
        try:
            return parse_millidegrees(self.path.read_text())
        except (OSError, ValueError) as exc:
            log.debug("thing.cpu.unreadable path=%s error=%s", self.path, exc)
            return None
