"""A BME680 next to a busy CPU, simulated: the seed's physics, so the correction has work to do.

The model (all parameters in ``BME680Model``; times in seconds, temperatures in °C):

* ambient ``A(t) = ambient + ambient_swing * sin(2π t / ambient_period)`` — the room;
* CPU load ``L(t)`` in [0, 1]: ``load_base`` plus a sine of ``load_period`` and, with
  ``load_burst_every`` > 0, square bursts to full load for ``load_burst_len`` seconds;
* the CPU's temperature follows the load with a first-order lag: its target is
  ``A + cpu_idle_rise + L * cpu_load_rise`` and it moves towards it with time constant
  ``cpu_time_constant``;
* the BME680 sits next to the CPU and reads high: ``raw = A + k * (cpu - A) + noise`` with
  ``k = 1 / (factor + 1)``.

That coupling is exactly the one the demo's correction inverts:
``corrected = raw - (cpu - raw) / factor`` gives back ``A`` (solve the line above for ``A``),
so with the right ``factor`` the corrected temperature matches the ambient within the sensor
noise (``noise`` σ, times ``1 + 1/factor``). With a wrong factor the error grows with the
CPU's excess heat, which is what a user tuning ``FACTOR`` sees.

Relative humidity is the ambient's, lowered by the sensor's extra warmth (about 6 % per °C,
the Magnus slope near room temperature); pressure drifts slowly around ``pressure``; the gas
resistance drifts around ``gas_resistance`` and drops when the (simulated) air is worse.

The simulation is deterministic for a given ``seed`` and sequence of read times; it never
looks at the wall clock unless no time is passed.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from .base import Reading

#: relative humidity falls by about this fraction per °C of warming (constant dew point)
RH_PER_DEGREE = 0.06


@dataclass(frozen=True, slots=True)
class BME680Model:
    ambient: float = 21.0
    ambient_swing: float = 1.5
    ambient_period: float = 86_400.0
    ambient_humidity: float = 45.0
    pressure: float = 1013.25
    gas_resistance: float = 120_000.0
    cpu_idle_rise: float = 15.0
    cpu_load_rise: float = 35.0
    cpu_time_constant: float = 20.0
    load_base: float = 0.3
    load_swing: float = 0.25
    load_period: float = 300.0
    load_burst_every: float = 120.0
    load_burst_len: float = 20.0
    #: the demo function's FACTOR this sensor's placement corresponds to
    factor: float = 5.0
    #: σ of the BME680's temperature noise (°C)
    noise: float = 0.05

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise ValueError("factor must be positive")
        if self.cpu_time_constant <= 0:
            raise ValueError("cpu_time_constant must be positive")

    @property
    def coupling(self) -> float:
        """``k``: the share of the CPU's excess heat the sensor picks up, ``1/(factor+1)``."""
        return 1.0 / (self.factor + 1.0)

    def ambient_at(self, t: float) -> float:
        return self.ambient + self.ambient_swing * math.sin(2 * math.pi * t / self.ambient_period)

    def load_at(self, t: float) -> float:
        load = self.load_base + self.load_swing * math.sin(2 * math.pi * t / self.load_period)
        if self.load_burst_every > 0 and (t % self.load_burst_every) < self.load_burst_len:
            load = 1.0
        return min(1.0, max(0.0, load))

    def cpu_target(self, t: float) -> float:
        return self.ambient_at(t) + self.cpu_idle_rise + self.load_at(t) * self.cpu_load_rise

    def sensor_temperature(self, ambient: float, cpu: float) -> float:
        """The noiseless BME680 reading next to a CPU at ``cpu``."""
        return ambient + self.coupling * (cpu - ambient)


def correct(raw: float, cpu: float, factor: float) -> float:
    """The demo function's correction (examples/functions/temp_correct)."""
    return raw - (cpu - raw) / factor


@dataclass(frozen=True, slots=True)
class SimulatedSample:
    """A reading with the truth behind it (for tests and demos)."""

    t: float
    reading: Reading
    ambient: float
    load: float


class SimulatedBME680:
    """Readings from ``BME680Model``; ``read()`` uses the clock, ``sample(t)`` a given time."""

    name = "sim"

    def __init__(
        self,
        model: BME680Model | None = None,
        *,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        start: float = 0.0,
    ) -> None:
        self.model = model or BME680Model()
        self._rng = random.Random(seed)
        self._clock = clock
        self._origin = clock()
        self._start = start
        self._t = start
        self._cpu = self.model.cpu_target(start)
        self._pressure = self.model.pressure
        self._gas = self.model.gas_resistance

    def advance(self, t: float) -> None:
        """Integrate the CPU's temperature up to time ``t`` (exact for piecewise-constant load)."""
        m = self.model
        step = 1.0
        while self._t < t:
            dt = min(step, t - self._t)
            target = m.cpu_target(self._t + dt)
            self._cpu += (target - self._cpu) * (1.0 - math.exp(-dt / m.cpu_time_constant))
            self._t += dt

    def sample(self, t: float) -> SimulatedSample:
        m = self.model
        self.advance(t)
        ambient = m.ambient_at(t)
        cpu = round(self._cpu, 3)
        raw = m.sensor_temperature(ambient, cpu) + self._rng.gauss(0.0, m.noise)
        humidity = m.ambient_humidity * math.exp(-RH_PER_DEGREE * (raw - ambient))
        self._pressure += self._rng.gauss(0.0, 0.02) + (m.pressure - self._pressure) * 0.01
        self._gas += (
            self._rng.gauss(0.0, m.gas_resistance * 0.002) + (m.gas_resistance - self._gas) * 0.02
        )
        reading = Reading(
            temperature=round(raw, 3),
            humidity=round(min(100.0, max(0.0, humidity + self._rng.gauss(0.0, 0.2))), 3),
            pressure=round(self._pressure, 3),
            gas_resistance=round(max(1.0, self._gas), 1),
            cpu_temperature=cpu,
        )
        return SimulatedSample(t, reading, ambient, m.load_at(t))

    def read(self) -> Reading:
        return self.sample(self._start + self._clock() - self._origin).reading

    def close(self) -> None:
        return None
