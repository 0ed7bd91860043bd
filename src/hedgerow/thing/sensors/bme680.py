"""The Bosch BME680 on I2C, through Pimoroni's maintained ``bme680`` driver (the seed's).

Used only when the driver is installed (``pip install hedgerow[sensors]``) and an I2C bus
exists (``/dev/i2c-*``). Setup follows the seed: primary address, falling back to the
secondary; 8x temperature oversampling, filter size 3; the gas heater at 320 °C for 150 ms.
The CPU temperature comes from the kernel's thermal zone, so the edge function can correct
for the CPU's heat.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
from typing import Any

from ..errors import SensorError
from .base import Reading
from .cpu import CpuThermal

DEFAULT_BUS = 1


def i2c_buses() -> list[str]:
    return sorted(glob.glob("/dev/i2c-*"))


def driver_installed() -> bool:
    return (
        importlib.util.find_spec("bme680") is not None
        and importlib.util.find_spec("smbus2") is not None
    )


def available() -> bool:
    """True when the driver is installed and the machine has an I2C bus."""
    return driver_installed() and bool(i2c_buses())


class BME680Sensor:
    name = "bme680"

    def __init__(self, bus: int = DEFAULT_BUS, *, cpu: CpuThermal | None = None) -> None:
        if not driver_installed():
            raise SensorError(
                "the BME680 driver is not installed",
                sensor=self.name,
                hint="pip install 'hedgerow[sensors]' (or use --sensor sim)",
            )
        driver: Any = importlib.import_module("bme680")
        smbus2: Any = importlib.import_module("smbus2")
        try:
            self._bus = smbus2.SMBus(bus)
        except OSError as exc:
            raise SensorError(
                f"cannot open I2C bus {bus}: {exc}",
                sensor=self.name,
                hint="enable I2C (raspi-config) and run as a user in the i2c group, or use --sensor sim",
            ) from exc
        try:
            try:
                device = driver.BME680(driver.I2C_ADDR_PRIMARY, self._bus)
            except OSError:
                device = driver.BME680(driver.I2C_ADDR_SECONDARY, self._bus)
            device.set_humidity_oversample(driver.OS_2X)
            device.set_pressure_oversample(driver.OS_4X)
            device.set_temperature_oversample(driver.OS_8X)
            device.set_filter(driver.FILTER_SIZE_3)
            device.set_gas_status(driver.ENABLE_GAS_MEAS)
            device.set_gas_heater_temperature(320)
            device.set_gas_heater_duration(150)
            device.select_gas_heater_profile(0)
        except (OSError, RuntimeError) as exc:
            self._bus.close()
            raise SensorError(
                f"no BME680 answers on I2C bus {bus}: {exc}",
                sensor=self.name,
                hint="check the wiring (address 0x76 or 0x77), or use --sensor sim",
            ) from exc
        self._device = device
        self._cpu = cpu or CpuThermal()

    def read(self) -> Reading:
        try:
            ok = self._device.get_sensor_data()
        except OSError as exc:
            raise SensorError(
                f"BME680 read failed: {exc}", sensor=self.name, hint="check the wiring"
            ) from exc
        cpu = self._cpu.read_celsius()
        if not ok:
            return Reading(cpu_temperature=cpu)
        data = self._device.data
        gas = float(data.gas_resistance) if getattr(data, "heat_stable", False) else None
        return Reading(
            temperature=float(data.temperature),
            humidity=float(data.humidity),
            pressure=float(data.pressure),
            gas_resistance=gas,
            cpu_temperature=cpu,
        )

    def close(self) -> None:
        self._bus.close()
