"""Sensors: the BME680 (real, through its driver), the CPU's thermal zone, and simulators.

``open_sensor("auto")`` picks the real BME680 when its driver and an I2C bus are present,
the simulator otherwise.
"""

from __future__ import annotations

import logging

from .base import Reading, Sensor
from .cpu import CpuThermal
from .simulated import BME680Model, SimulatedBME680

log = logging.getLogger(__name__)

SENSOR_KINDS = ("auto", "bme680", "sim")


def open_sensor(
    kind: str = "auto", *, seed: int | None = None, model: BME680Model | None = None
) -> Sensor:
    """Open a sensor by kind; ``SensorError`` if ``bme680`` was asked for and is not there."""
    from . import bme680

    if kind == "bme680" or (kind == "auto" and bme680.available()):
        return bme680.BME680Sensor()
    if kind not in SENSOR_KINDS:
        raise ValueError(f"unknown sensor kind {kind!r}; choose one of {', '.join(SENSOR_KINDS)}")
    if kind == "auto":
        log.info("thing.sensor.simulated reason=%r", "no BME680 driver or I2C bus")
    return SimulatedBME680(model, seed=seed)


__all__ = [
    "BME680Model",
    "CpuThermal",
    "Reading",
    "Sensor",
    "SimulatedBME680",
    "open_sensor",
    "SENSOR_KINDS",
]
