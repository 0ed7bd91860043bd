from __future__ import annotations

import importlib.machinery
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from examples.functions.temp_correct.temp_correct import correct as demo_correct

from hedgerow.thing import SensorError
from hedgerow.thing.readings import FIELDS, parse_reading, reading_payload
from hedgerow.thing.sensors import BME680Model, SimulatedBME680, open_sensor
from hedgerow.thing.sensors.base import Reading
from hedgerow.thing.sensors.cpu import CpuThermal, find_thermal_zone, parse_millidegrees
from hedgerow.thing.sensors.simulated import correct
from hedgerow.thing.sensors.vibration import (
    Bearing,
    Fault,
    VibrationModel,
    VibrationSimulator,
    decode_binary,
    encode_binary,
    encode_json,
)


def run_simulation(model: BME680Model, seconds: int = 900) -> list:  # type: ignore[type-arg]
    sim = SimulatedBME680(model, seed=3)
    return [sim.sample(float(t)) for t in range(0, seconds, 5)]


def test_correction_recovers_ambient_with_the_right_factor() -> None:
    model = BME680Model(factor=5.0, noise=0.05)
    samples = run_simulation(model)
    excess = [s.reading.temperature - s.ambient for s in samples]
    assert min(excess) > 2.0  # the sensor really reads high next to the CPU
    errors = [
        abs(demo_correct(s.reading.temperature, s.reading.cpu_temperature, 5.0) - s.ambient)
        for s in samples
    ]
    assert max(errors) < 0.3
    assert sum(errors) / len(errors) < 0.08
    wrong = [
        abs(correct(s.reading.temperature, s.reading.cpu_temperature, 2.0) - s.ambient)
        for s in samples
    ]
    assert sum(wrong) / len(wrong) > 2.0


def test_cpu_follows_the_load_with_a_lag() -> None:
    model = BME680Model(load_burst_every=120, load_burst_len=20, cpu_time_constant=20, noise=0)
    sim = SimulatedBME680(model, seed=1)
    before = sim.sample(115.0).reading.cpu_temperature
    during = sim.sample(139.0).reading.cpu_temperature  # 19 s into a full-load burst
    after = sim.sample(230.0).reading.cpu_temperature
    assert before is not None and during is not None and after is not None
    assert during > before + 10
    assert after < during
    assert model.load_at(125.0) == 1.0


def test_simulation_is_deterministic_for_a_seed() -> None:
    a = [s.reading for s in run_simulation(BME680Model(), 100)]
    b = [s.reading for s in run_simulation(BME680Model(), 100)]
    assert a == b
    reading = a[0]
    assert reading.humidity is not None and 0 < reading.humidity < 100
    assert reading.pressure is not None and 1000 < reading.pressure < 1030
    assert reading.gas_resistance is not None and reading.gas_resistance > 1000


def test_read_uses_the_clock() -> None:
    now = [100.0]
    sim = SimulatedBME680(seed=1, clock=lambda: now[0])
    first = sim.read()
    now[0] += 60.0
    second = sim.read()
    assert first != second
    with pytest.raises(ValueError):
        BME680Model(factor=0)


def test_cpu_thermal_zone(tmp_path: Path) -> None:
    for i, (kind, temp) in enumerate(
        [("acpitz", "27800"), ("x86_pkg_temp", "48312\n"), ("broken", "x")]
    ):
        zone = tmp_path / f"thermal_zone{i}"
        zone.mkdir()
        (zone / "type").write_text(kind)
        (zone / "temp").write_text(temp)
    assert find_thermal_zone(tmp_path) == tmp_path / "thermal_zone1" / "temp"
    assert CpuThermal(root=tmp_path).read_celsius() == 48.312
    assert CpuThermal(root=tmp_path / "none").read_celsius() is None
    assert parse_millidegrees("-1500") == -1.5
    (tmp_path / "thermal_zone1" / "temp").write_text("garbage")
    assert CpuThermal(tmp_path / "thermal_zone1" / "temp").read_celsius() is None


def test_open_sensor_without_hardware() -> None:
    sensor = open_sensor("auto", seed=1)
    assert sensor.name == "sim"
    assert sensor.read().temperature is not None
    with pytest.raises(SensorError) as info:
        open_sensor("bme680")
    assert "--sensor sim" in info.value.hint
    with pytest.raises(ValueError):
        open_sensor("thermocouple")


def test_payload_keys_are_what_the_demo_function_reads() -> None:
    reading = Reading(
        temperature=25.1, humidity=40.0, pressure=1010.0, gas_resistance=None, cpu_temperature=55.0
    )
    payload = reading_payload("bme680-1", reading, 1767225600.1234, sequence=7)
    doc = json.loads(payload)
    assert set(doc) == {"thing", "timestamp", "sequence", *FIELDS}
    assert doc["gas_resistance"] is None
    assert doc["timestamp"] == 1767225600.123
    assert parse_reading(payload) == ("bme680-1", 1767225600.123, reading)
    with pytest.raises(ValueError):
        parse_reading(b'{"temperature": 1}')


def test_bearing_frequencies_of_a_6205() -> None:
    bearing = Bearing()
    assert bearing.bpfo(1.0) == pytest.approx(3.585, abs=0.01)
    assert bearing.bpfi(1.0) == pytest.approx(5.415, abs=0.01)


def spectrum_peak(values: tuple[float, ...], rate: float, low: float) -> float:
    spectrum = np.abs(np.fft.rfft(np.asarray(values) * np.hanning(len(values))))
    freqs = np.fft.rfftfreq(len(values), 1 / rate)
    mask = freqs > low
    return float(freqs[mask][np.argmax(spectrum[mask])])


@pytest.mark.parametrize("fault", [Fault.OUTER, Fault.INNER])
def test_a_bearing_fault_shows_at_its_frequency(fault: Fault) -> None:
    model = VibrationModel(
        sample_rate=10_000, fault=fault, shaft_amplitude=0.2, fault_amplitude=0.4, batch_size=10_000
    )
    batch = VibrationSimulator(model, seed=1).next_batch()
    assert len(batch) == 10_000
    peak = spectrum_peak(batch.x, model.sample_rate, low=model.shaft_hz * 2)
    assert model.fault_hz is not None
    assert peak == pytest.approx(model.fault_hz, abs=1.5)


def test_healthy_bearing_shows_only_the_shaft() -> None:
    model = VibrationModel(fault=Fault.NONE, batch_size=10_000)
    batch = VibrationSimulator(model, seed=1).next_batch()
    assert spectrum_peak(batch.x, model.sample_rate, low=1.0) == pytest.approx(
        model.shaft_hz, abs=1.5
    )
    assert np.std(batch.z) < np.std(batch.x)  # the axial axis is quieter


def test_batches_are_continuous_and_encode_both_ways() -> None:
    sim = VibrationSimulator(VibrationModel(batch_size=500), seed=2, start_time=1000.0)
    first, second = sim.next_batch(), sim.next_batch()
    assert (first.start, second.start) == (0, 500)
    assert second.timestamp == pytest.approx(1000.05)
    frame = encode_binary(second)
    assert len(frame) == 32 + 500 * 12
    back = decode_binary(frame)
    assert back.start == 500 and back.sample_rate == 10_000
    assert np.allclose(back.y, second.y, atol=1e-5)
    doc = json.loads(encode_json(second, "vib-1"))
    assert doc["thing"] == "vib-1" and len(doc["axes"]["z"]) == 500
    with pytest.raises(ValueError):
        decode_binary(frame[:-1])
    with pytest.raises(ValueError):
        decode_binary(b"XXXX" + frame[4:])
    with pytest.raises(ValueError):
        VibrationModel(sample_rate=100_000)


def test_package_imports_without_numpy(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "import hedgerow.thing\n"
        "from hedgerow.thing.sensors.vibration import VibrationSimulator, VibrationModel, Fault\n"
        "b = VibrationSimulator(VibrationModel(batch_size=64, fault=Fault.OUTER), seed=1).next_batch()\n"
        "assert len(b) == 64 and 'numpy' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def fake_module(name: str, **attrs: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


class FakeBus:
    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeBME680:
    """Pimoroni's driver's surface, as the seed uses it."""

    def __init__(self, address: int, bus: FakeBus) -> None:
        if address == 0x76:
            raise OSError("no device at the primary address")
        self.address = address
        self.settings: dict[str, object] = {}
        self.data = types.SimpleNamespace(
            temperature=27.5,
            humidity=38.0,
            pressure=1009.5,
            gas_resistance=98765.0,
            heat_stable=True,
        )

    def __getattr__(self, name: str) -> object:
        if name.startswith(("set_", "select_")):
            return lambda value: self.settings.__setitem__(name, value)
        raise AttributeError(name)

    def get_sensor_data(self) -> bool:
        return True


def test_the_real_driver_path_with_a_fake_bme680(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    buses: list[FakeBus] = []

    def smbus(number: int) -> FakeBus:
        buses.append(FakeBus(number))
        return buses[-1]

    consts = {"I2C_ADDR_PRIMARY": 0x76, "I2C_ADDR_SECONDARY": 0x77, "OS_2X": 2, "OS_4X": 3, "OS_8X": 4,
              "FILTER_SIZE_3": 2, "ENABLE_GAS_MEAS": 1}  # fmt: skip
    monkeypatch.setitem(sys.modules, "bme680", fake_module("bme680", BME680=FakeBME680, **consts))
    monkeypatch.setitem(sys.modules, "smbus2", fake_module("smbus2", SMBus=smbus))
    from hedgerow.thing.sensors import bme680 as driver

    assert driver.driver_installed()
    zone = tmp_path / "thermal_zone0"
    zone.mkdir()
    (zone / "type").write_text("cpu-thermal")
    (zone / "temp").write_text("61250")
    sensor = driver.BME680Sensor(cpu=CpuThermal(root=tmp_path))
    reading = sensor.read()
    assert reading == Reading(27.5, 38.0, 1009.5, 98765.0, 61.25)
    assert sensor._device.address == 0x77  # fell back to the secondary address, as the seed does
    assert sensor._device.settings["set_temperature_oversample"] == 4
    sensor.close()
    assert buses[0].closed
