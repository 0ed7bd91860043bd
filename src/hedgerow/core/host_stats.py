"""The gateway's CPU, memory and disk use, for the heartbeat (Linux ``/proc``; elsewhere
what the standard library can tell)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def _cpu_times(stat: Path) -> tuple[int, int] | None:
    """(busy, total) jiffies from the first line of ``/proc/stat``."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()[1:]
        values = [int(v) for v in fields]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


def memory_percent(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    try:
        facts = {
            line.split(":")[0]: int(line.split()[1]) for line in meminfo.read_text().splitlines()
        }
        total, available = facts["MemTotal"], facts["MemAvailable"]
    except (OSError, ValueError, KeyError, IndexError):
        return None
    return 100.0 * (total - available) / total if total else None


def disk_percent(path: Path) -> float | None:
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return 100.0 * usage.used / usage.total if usage.total else None


class HostStats:
    """``sample()`` → ``{"cpu", "memory", "disk"}`` in percent (one decimal); CPU is the
    use since the previous sample (the load average per CPU on the first)."""

    def __init__(self, data_dir: Path, stat: Path = Path("/proc/stat")) -> None:
        self.data_dir = data_dir
        self.stat = stat
        self._last = _cpu_times(stat)

    def cpu_percent(self) -> float | None:
        now = _cpu_times(self.stat)
        last, self._last = self._last, now
        if now is not None and last is not None and now[1] > last[1]:
            return 100.0 * (now[0] - last[0]) / (now[1] - last[1])
        try:
            return 100.0 * os.getloadavg()[0] / (os.cpu_count() or 1)
        except OSError:
            return None

    def sample(self) -> dict[str, float]:
        values = {
            "cpu": self.cpu_percent(),
            "memory": memory_percent(),
            "disk": disk_percent(self.data_dir),
        }
        return {k: round(v, 1) for k, v in values.items() if v is not None}
