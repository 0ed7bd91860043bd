"""Reading payloads: the JSON the demo's edge function reads.

Keys (keep them: ``examples/functions/temp_correct`` reads ``temperature`` and
``cpu_temperature``): ``thing``, ``timestamp`` (Unix seconds), ``sequence``,
``temperature`` (°C), ``humidity`` (%), ``pressure`` (hPa), ``gas_resistance`` (Ω),
``cpu_temperature`` (°C). A value the sensor could not measure is ``null``.
"""

from __future__ import annotations

import json
from typing import Any

from .sensors.base import Reading

FIELDS = ("temperature", "humidity", "pressure", "gas_resistance", "cpu_temperature")


def reading_document(
    thing: str, reading: Reading, timestamp: float, sequence: int | None = None
) -> dict[str, Any]:
    doc: dict[str, Any] = {"thing": thing, "timestamp": round(timestamp, 3)}
    if sequence is not None:
        doc["sequence"] = sequence
    for name in FIELDS:
        doc[name] = getattr(reading, name)
    return doc


def reading_payload(
    thing: str, reading: Reading, timestamp: float, sequence: int | None = None
) -> bytes:
    return json.dumps(
        reading_document(thing, reading, timestamp, sequence), separators=(",", ":")
    ).encode()


def parse_reading(payload: bytes | str) -> tuple[str, float, Reading]:
    """Back from JSON: ``(thing, timestamp, reading)``; ``ValueError`` if it is not one."""
    doc = json.loads(payload)
    if not isinstance(doc, dict) or "thing" not in doc or "timestamp" not in doc:
        raise ValueError("not a reading: thing and timestamp are required")
    values = {name: (float(doc[name]) if doc.get(name) is not None else None) for name in FIELDS}
    return str(doc["thing"]), float(doc["timestamp"]), Reading(**values)
