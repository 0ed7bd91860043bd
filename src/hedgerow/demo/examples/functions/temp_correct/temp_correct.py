"""The seed's edge calculation: correct the BME680 temperature for the nearby CPU's heat.

The sensor sits next to the Raspberry Pi's CPU and reads high by an amount that grows with
the CPU temperature. The correction is ``corrected = raw - (cpu - raw) / FACTOR``; FACTOR
comes from the function's environment (``hedgerow cloud function create --env FACTOR=5``).

Input (topic ``sensors/<thing>``): the thing's JSON reading with ``temperature`` and,
optionally, ``cpu_temperature``. A reading without it (the seed's own device script,
``examples/greengrass_thing.py``, sends none) is corrected with the CPU temperature read on
the core, as the seed's Lambda on the Pi did: ``/sys/class/thermal/thermal_zone0/temp``
(``CPU_TEMP_PATH`` overrides it), or, on a machine without a thermal zone (a container, some
VMs), the CPU of Hedgerow's BME680 simulator. Output (topic ``corrected/<thing>``): the
reading with ``temperature`` replaced by the corrected value, ``raw_temperature`` kept
beside it, and ``cpu_source`` saying where the CPU temperature came from: ``reading``,
``core`` or ``simulated``.
"""

from __future__ import annotations

import json
import os
from typing import Any

DEFAULT_FACTOR = 5.0
OUTPUT_PREFIX = os.environ.get("OUTPUT_PREFIX", "corrected")
CPU_TEMP_PATH = os.environ.get("CPU_TEMP_PATH", "/sys/class/thermal/thermal_zone0/temp")

_simulator: Any = None


def core_cpu_temperature(path: str = CPU_TEMP_PATH) -> float | None:
    """The core's CPU temperature in °C from a thermal zone file (millidegrees), or None."""
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip()) / 1000.0
    except (OSError, ValueError):
        return None


def simulated_cpu_temperature() -> float | None:
    """The CPU temperature of Hedgerow's BME680 simulator (None without Hedgerow)."""
    global _simulator
    if _simulator is None:
        try:
            from hedgerow.thing.sensors.simulated import SimulatedBME680
        except ImportError:
            return None
        _simulator = SimulatedBME680()
    value = _simulator.read().cpu_temperature
    return None if value is None else float(value)


def cpu_temperature(reading: dict[str, Any]) -> tuple[float, str] | None:
    """The CPU temperature to correct with and where it came from: the reading's own, the
    core's thermal zone, or the simulator's (a machine without one)."""
    if reading.get("cpu_temperature") is not None:
        return float(reading["cpu_temperature"]), "reading"
    value = core_cpu_temperature()
    if value is not None:
        return value, "core"
    value = simulated_cpu_temperature()
    if value is not None:
        return value, "simulated"
    return None


def correct(raw: float, cpu: float, factor: float) -> float:
    """The seed's formula: subtract a share of the CPU's excess over the reading."""
    if factor <= 0:
        raise ValueError(f"FACTOR must be positive, got {factor}")
    return raw - (cpu - raw) / factor


def factor_from_env() -> float:
    return float(os.environ.get("FACTOR", DEFAULT_FACTOR))


def transform(
    reading: dict[str, Any], factor: float, cpu: float | None = None, source: str = "reading"
) -> dict[str, Any]:
    raw = float(reading["temperature"])
    if cpu is None:
        cpu = float(reading["cpu_temperature"])
    out = dict(reading)
    out["raw_temperature"] = raw
    out["cpu_temperature"] = cpu
    out["cpu_source"] = source
    out["temperature"] = round(correct(raw, cpu, factor), 3)
    out["correction_factor"] = factor
    return out


def handler(event: Any, context: Any) -> dict[str, Any] | None:
    """Native Hedgerow handler: publish the corrected reading and return it."""
    if not isinstance(event, dict) or event.get("temperature") is None:
        context.logger.warning("temp_correct.ignored reason=%r", "no temperature")
        return None
    cpu = cpu_temperature(event)
    if cpu is None:
        context.logger.warning(
            "temp_correct.ignored reason=%r",
            "no cpu_temperature: this machine has no thermal zone (set CPU_TEMP_PATH)"
            " and Hedgerow's simulator is not importable",
        )
        return None
    result = transform(event, factor_from_env(), *cpu)
    thing = str(event.get("thing") or context.topic.rsplit("/", 1)[-1])
    context.publish(f"{OUTPUT_PREFIX}/{thing}", json.dumps(result).encode())
    return result
