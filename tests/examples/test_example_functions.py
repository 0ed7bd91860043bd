"""Unit tests of the example functions, loaded from their bundle directories as the runtime would."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "functions"


def load(name: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> ModuleType:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    path = EXAMPLES / name / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


class Context:
    """What the native runtime hands a handler, recording what it publishes."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.published: list[tuple[str, Any]] = []
        self.logger = __import__("logging").getLogger("example")

    def publish(self, topic: str, payload: bytes) -> None:
        self.published.append((topic, json.loads(payload)))


def test_temp_correct_applies_the_seed_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = load("temp_correct", monkeypatch, FACTOR="4")
    ctx = Context("sensors/bme680-1")
    out = mod.handler({"thing": "bme680-1", "temperature": 30.0, "cpu_temperature": 50.0}, ctx)
    assert out["temperature"] == pytest.approx(30.0 - (50.0 - 30.0) / 4)
    assert out["raw_temperature"] == 30.0
    assert ctx.published == [("corrected/bme680-1", out)]


def test_temp_correct_recovers_ambient_under_the_seeds_heating_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A sensor at ambient + k * (cpu - ambient) is corrected exactly when FACTOR = (1 - k) / k.
    mod = load("temp_correct", monkeypatch)
    k = 0.2
    for ambient, cpu in [(20.0, 45.0), (22.5, 70.0), (18.0, 38.0)]:
        raw = ambient + k * (cpu - ambient)
        assert mod.correct(raw, cpu, (1 - k) / k) == pytest.approx(ambient)


def test_temp_correct_ignores_readings_without_temperature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mod = load("temp_correct", monkeypatch)
    ctx = Context("sensors/x")
    assert mod.handler({"humidity": 40.0}, ctx) is None
    assert mod.handler({"temperature": None, "cpu_temperature": 50.0}, ctx) is None
    assert ctx.published == []
    with pytest.raises(ValueError, match="FACTOR"):
        mod.correct(20.0, 40.0, 0.0)


def test_temp_correct_reads_the_cores_cpu_when_the_reading_has_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The seed's device script sends no cpu_temperature: the seed's Lambda read the Pi's.
    zone = tmp_path / "temp"
    zone.write_text("52000\n")
    mod = load("temp_correct", monkeypatch, CPU_TEMP_PATH=str(zone), FACTOR="4")
    ctx = Context("sensors/bme680-1")
    out = mod.handler({"temperature": 30.0}, ctx)
    assert out["cpu_temperature"] == 52.0
    assert out["cpu_source"] == "core"
    assert out["temperature"] == pytest.approx(30.0 - (52.0 - 30.0) / 4)
    # the reading's own value wins when it has one
    own = mod.handler({"temperature": 30.0, "cpu_temperature": 50.0}, ctx)
    assert own["cpu_source"] == "reading" and own["cpu_temperature"] == 50.0


def test_temp_correct_uses_the_simulators_cpu_on_a_machine_without_a_thermal_zone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mod = load("temp_correct", monkeypatch, CPU_TEMP_PATH=str(tmp_path / "absent"))
    ctx = Context("sensors/bme680-1")
    out = mod.handler({"temperature": 30.0}, ctx)
    assert out["cpu_source"] == "simulated"
    # the simulator's CPU idles 15 °C above a ~21 °C room and heats up under load
    assert 30.0 < out["cpu_temperature"] < 80.0
    assert out["temperature"] == pytest.approx(30.0 - (out["cpu_temperature"] - 30.0) / 5, abs=1e-3)
    assert ctx.published == [("corrected/bme680-1", out)]


def test_window_aggregate_closes_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = load("window_aggregate", monkeypatch, WINDOW_S="10")
    ctx = Context("sensors/t1")
    for i, temp in enumerate([20.0, 22.0, 24.0]):
        assert (
            mod.handler(
                {"thing": "t1", "timestamp": 100.0 + i, "temperature": temp, "ok": True}, ctx
            )
            is None
        )
    closed = mod.handler({"thing": "t1", "timestamp": 111.0, "temperature": 30.0}, ctx)
    assert closed["fields"]["temperature"] == {"min": 20.0, "max": 24.0, "mean": 22.0, "count": 3}
    assert "ok" not in closed["fields"] and "timestamp" not in closed["fields"]
    assert ctx.published == [("aggregates/t1", closed)]
    # what the window's readings weighed as they arrived (compact JSON): the bytes saved
    assert closed["readings"] == 3
    assert closed["bytes_in"] == sum(
        len(json.dumps({"thing": "t1", "timestamp": 100.0 + i, "temperature": t, "ok": True},
                       separators=(",", ":")))
        for i, t in enumerate([20.0, 22.0, 24.0])
    )  # fmt: skip


def test_the_industrial_example_reports_the_bytes_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "industrial" / "bytes_saved.py"
    spec = importlib.util.spec_from_file_location("bytes_saved", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bytes_saved", module)  # its dataclass looks itself up
    spec.loader.exec_module(module)
    aggregate = json.dumps({"thing": "power", "readings": 60, "bytes_in": 6000, "fields": {}})
    stored = [
        {"id": 1, "topic": "aggregates/power", "payload": aggregate},
        {"id": 2, "topic": "aggregates/power", "payload": aggregate},
        {"id": 3, "topic": "aggregates/x", "payload_base64": "AAE="},  # binary: not counted
        {"id": 4, "topic": "aggregates/y", "payload": "not json"},
    ]
    saved = module.bytes_saved(stored)
    assert (saved.windows, saved.readings, saved.bytes_read) == (2, 120, 12000)
    assert saved.bytes_sent == 2 * len(aggregate)
    assert saved.ratio == pytest.approx(12000 / (2 * len(aggregate)))
    assert f"{saved.ratio:,.1f}x less" in saved.text()
    assert module.bytes_saved([]).windows == 0


def test_window_aggregate_keeps_things_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = load("window_aggregate", monkeypatch)
    agg = mod.Aggregator(5.0)
    agg.add("a", {"v": 1}, 0.0)
    agg.add("b", {"v": 100}, 1.0)
    closed = agg.add("a", {"v": 2}, 6.0)
    assert closed["fields"]["v"]["count"] == 1 and closed["fields"]["v"]["max"] == 1.0
    with pytest.raises(ValueError):
        mod.Aggregator(0)


def test_vibration_features_find_the_fault_frequency(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = load("vibration_features", monkeypatch, BANDS="0-100,100-1000", PEAKS="2")
    rate, n = 5000.0, 4096
    t = np.arange(n) / rate
    rng = np.random.default_rng(7)
    x = (
        np.sin(2 * math.pi * 160.0 * t)
        + 0.3 * np.sin(2 * math.pi * 25.0 * t)
        + 0.01 * rng.normal(size=n)
    )
    event = {
        "thing": "mill-1",
        "sample_rate": rate,
        "t0": 0,
        "axes": {"x": x.tolist(), "y": (0.1 * x).tolist()},
    }
    ctx = Context("vibration/mill-1")
    out = mod.handler(event, ctx)
    fx = out["axes"]["x"]
    assert abs(fx["dominant_hz"][0] - 160.0) < rate / n * 2
    assert abs(fx["dominant_hz"][1] - 25.0) < rate / n * 2
    assert fx["rms"] == pytest.approx(math.sqrt(0.5 + 0.045), rel=0.02)
    assert fx["crest_factor"] > 1.0
    assert fx["band_energy"]["100-1000"] > fx["band_energy"]["0-100"]
    assert out["axes"]["y"]["rms"] == pytest.approx(0.1 * fx["rms"], rel=1e-4)
    sent = len(json.dumps(ctx.published[0][1]).encode())
    sampled = len(json.dumps(event).encode())
    assert sent * 50 < sampled


def test_vibration_features_kurtosis_detects_impacts(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = load("vibration_features", monkeypatch)
    rng = np.random.default_rng(1)
    smooth = rng.normal(size=2048)
    impacts = smooth.copy()
    impacts[::256] += 25.0
    bands = mod.parse_bands("0-500")
    k_smooth = mod.axis_features(smooth, 2000.0, bands, 1)["kurtosis"]
    k_impacts = mod.axis_features(impacts, 2000.0, bands, 1)["kurtosis"]
    assert 2.5 < k_smooth < 3.5
    assert k_impacts > 3 * k_smooth


def test_vibration_features_rejects_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = load("vibration_features", monkeypatch)
    with pytest.raises(ValueError, match="bad band"):
        mod.parse_bands("500-100")
    with pytest.raises(ValueError, match="at least 8"):
        mod.features({"sample_rate": 100, "samples": [[0, 0, 0]] * 4}, mod.BANDS)
    samples = [[math.sin(i / 3), 0.0, 1.0] for i in range(64)]
    assert set(mod.features({"sample_rate": 100, "samples": samples}, mod.BANDS)["axes"]) == {
        "x",
        "y",
        "z",
    }


def test_vibration_features_collects_batches_into_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = load("vibration_features", monkeypatch, WINDOW_S="1.0")
    rate = 1000.0
    ctx = Context("vibration/v1")
    t = np.arange(1000) / rate
    signal = np.sin(2 * math.pi * 50.0 * t)
    results = []
    for i in range(4):  # four batches of 250 samples make one 1 s window
        chunk = signal[i * 250 : (i + 1) * 250].tolist()
        event = {"thing": "v1", "sample_rate": rate, "t0": i, "axes": {"x": chunk, "y": chunk}}
        results.append(mod.handler(event, ctx))
    assert results[:3] == [None, None, None]
    assert results[3]["samples"] == 1000 and results[3]["t0"] == 0
    assert abs(results[3]["axes"]["x"]["dominant_hz"][0] - 50.0) <= 1.0
    assert len(ctx.published) == 1
