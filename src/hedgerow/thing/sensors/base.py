"""What every environmental sensor offers: ``read()`` returning a ``Reading``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Reading:
    """One environmental reading; None where the sensor could not measure.

    Units: °C, % relative humidity, hPa, Ω (gas resistance of the BME680's hot plate).
    """

    temperature: float | None = None
    humidity: float | None = None
    pressure: float | None = None
    gas_resistance: float | None = None
    cpu_temperature: float | None = None


class Sensor(Protocol):
    """A source of readings (blocking; a read takes milliseconds)."""

    name: str

    def read(self) -> Reading: ...

    def close(self) -> None: ...
