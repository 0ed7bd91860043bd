"""The seed's edge calculation: correct the BME680 temperature for the nearby CPU's heat.

The sensor sits next to the Raspberry Pi's CPU and reads high by an amount that grows with
the CPU temperature. The correction is ``corrected = raw - (cpu - raw) / FACTOR``; FACTOR
comes from the function's environment (``hedgerow cloud function create --env FACTOR=5``).

Input (topic ``sensors/<thing>``): the thing's JSON reading with ``temperature`` and
``cpu_temperature``. Output (topic ``corrected/<thing>``): the reading with ``temperature``
replaced by the corrected value and ``raw_temperature`` kept beside it.
"""

from __future__ import annotations

import json
import os
from typing import Any

DEFAULT_FACTOR = 5.0
OUTPUT_PREFIX = os.environ.get("OUTPUT_PREFIX", "corrected")


def correct(raw: float, cpu: float, factor: float) -> float:
    """The seed's formula: subtract a share of the CPU's excess over the reading."""
    if factor <= 0:
        raise ValueError(f"FACTOR must be positive, got {factor}")
    return raw - (cpu - raw) / factor


def factor_from_env() -> float:
    return float(os.environ.get("FACTOR", DEFAULT_FACTOR))


def transform(reading: dict[str, Any], factor: float) -> dict[str, Any]:
    raw = float(reading["temperature"])
    cpu = float(reading["cpu_temperature"])
    out = dict(reading)
    out["raw_temperature"] = raw
    out["temperature"] = round(correct(raw, cpu, factor), 3)
    out["correction_factor"] = factor
    return out


def handler(event: Any, context: Any) -> dict[str, Any] | None:
    """Native Hedgerow handler: publish the corrected reading and return it."""
    if not isinstance(event, dict) or "temperature" not in event or "cpu_temperature" not in event:
        context.logger.warning("ignoring a message without temperature and cpu_temperature")
        return None
    result = transform(event, factor_from_env())
    thing = str(event.get("thing") or context.topic.rsplit("/", 1)[-1])
    context.publish(f"{OUTPUT_PREFIX}/{thing}", json.dumps(result).encode())
    return result
