"""A three-axis accelerometer on a bearing housing, simulated, batched into messages.

The signal per axis (acceleration in g) at sample ``i``, ``t = i / sample_rate``:

* shaft rotation ``f_r``: ``shaft_amplitude * Σ_h sin(2π h f_r t + φ_h) / h`` for
  ``h = 1..harmonics`` (imbalance and misalignment);
* a bearing fault, when ``fault`` is set: impacts at the defect frequency, modelled as its
  harmonics ``fault_amplitude * Σ_h sin(2π h f_d t) / h``; an inner-race defect rotates with
  the shaft, so its train is amplitude-modulated at ``f_r`` (sidebands at ``f_d ± f_r``).
  ``f_d`` is BPFO (outer race) or BPFI (inner race) from the bearing's geometry:
  ``BPFO = n/2 f_r (1 - d/D cos θ)``, ``BPFI = n/2 f_r (1 + d/D cos θ)``
  (defaults: a 6205 deep-groove bearing, 9 balls, so BPFO ≈ 3.585 f_r, BPFI ≈ 5.415 f_r);
* white Gaussian noise of σ ``noise``;
* axes differ by gain (``axis_gains``, radial x and y, axial z) and y lags x by 90°.

Samples come in batches (``batch_size`` per message, e.g. 1000 at 10 kHz = 10 messages/s)
encoded as JSON lists or a compact binary frame (``encode_binary``/``decode_binary``:
a 32-byte header and float32 x, y, z interleaved, little-endian). numpy speeds generation
up when installed; without it the same model runs in plain Python. The JSON form is what
``examples/functions/vibration_features`` reads: ``{"thing", "sample_rate", "t0", "axes":
{"x": [...], "y": [...], "z": [...]}}`` (plus ``timestamp`` = ``t0`` and ``start``).
"""

from __future__ import annotations

import array
import enum
import json
import math
import random
import struct
import sys
from dataclasses import dataclass, field
from typing import Any


def _load_numpy() -> Any:
    """numpy when installed (it makes 10 kHz cheap), imported only when a simulator needs it:
    the SDK must import without it, and a core or CLI that never simulates should not pay
    for it."""
    try:
        import numpy
    except ImportError:  # pragma: no cover - exercised only where numpy is absent
        return None
    return numpy


MAGIC = b"HRV1"
#: magic, sample rate (Hz), index of the first sample, timestamp of the first sample, count
HEADER = struct.Struct("<4sdQdI")
MAX_SAMPLE_RATE = 50_000.0


class Fault(enum.Enum):
    NONE = "none"
    OUTER = "outer"
    INNER = "inner"


@dataclass(frozen=True, slots=True)
class Bearing:
    balls: int = 9
    ball_diameter: float = 7.94
    pitch_diameter: float = 39.04
    contact_angle: float = 0.0  # radians

    def _ratio(self) -> float:
        return self.ball_diameter / self.pitch_diameter * math.cos(self.contact_angle)

    def bpfo(self, shaft_hz: float) -> float:
        """Ball pass frequency, outer race."""
        return self.balls / 2 * shaft_hz * (1 - self._ratio())

    def bpfi(self, shaft_hz: float) -> float:
        """Ball pass frequency, inner race."""
        return self.balls / 2 * shaft_hz * (1 + self._ratio())


@dataclass(frozen=True, slots=True)
class VibrationModel:
    sample_rate: float = 10_000.0
    shaft_hz: float = 29.95  # 1797 rpm
    bearing: Bearing = field(default_factory=Bearing)
    fault: Fault = Fault.NONE
    shaft_amplitude: float = 0.2
    fault_amplitude: float = 0.3
    harmonics: int = 3
    noise: float = 0.05
    axis_gains: tuple[float, float, float] = (1.0, 0.8, 0.3)
    batch_size: int = 1000

    def __post_init__(self) -> None:
        if not 0 < self.sample_rate <= MAX_SAMPLE_RATE:
            raise ValueError(f"sample_rate must be in (0, {MAX_SAMPLE_RATE:g}] Hz")
        if self.batch_size < 1 or self.harmonics < 1:
            raise ValueError("batch_size and harmonics must be at least 1")

    @property
    def fault_hz(self) -> float | None:
        if self.fault is Fault.OUTER:
            return self.bearing.bpfo(self.shaft_hz)
        if self.fault is Fault.INNER:
            return self.bearing.bpfi(self.shaft_hz)
        return None


@dataclass(frozen=True, slots=True)
class VibrationBatch:
    sample_rate: float
    start: int  #: index of the first sample since the simulator started
    timestamp: float  #: wall-clock time of the first sample
    x: tuple[float, ...]
    y: tuple[float, ...]
    z: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.x)


class VibrationSimulator:
    """Successive batches of the model's signal (deterministic for a seed)."""

    name = "vibration"

    def __init__(
        self,
        model: VibrationModel | None = None,
        *,
        seed: int | None = None,
        start_time: float = 0.0,
    ) -> None:
        self.model = model or VibrationModel()
        self._rng = random.Random(seed)
        self._phases = [self._rng.uniform(0, 2 * math.pi) for _ in range(self.model.harmonics)]
        _np = self._np = _load_numpy()
        self._numpy_rng = _np.random.default_rng(seed) if _np is not None else None
        self._index = 0
        self.start_time = start_time

    def next_batch(self, count: int | None = None) -> VibrationBatch:
        n = count or self.model.batch_size
        start = self._index
        self._index += n
        if self._np is not None:
            x, y, z = self._numpy(start, n)
        else:  # pragma: no cover - exercised only where numpy is absent
            x, y, z = self._python(start, n)
        timestamp = self.start_time + start / self.model.sample_rate
        return VibrationBatch(self.model.sample_rate, start, timestamp, x, y, z)

    def _numpy(
        self, start: int, n: int
    ) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
        _np = self._np
        assert _np is not None and self._numpy_rng is not None
        m = self.model
        t = (start + _np.arange(n)) / m.sample_rate
        two_pi = 2 * math.pi
        fault_hz = m.fault_hz
        axes = []
        for axis, gain in enumerate(m.axis_gains):
            lag = math.pi / 2 if axis == 1 else 0.0
            signal = _np.zeros(n)
            for h in range(1, m.harmonics + 1):
                signal += (
                    m.shaft_amplitude
                    / h
                    * _np.sin(two_pi * h * m.shaft_hz * t + self._phases[h - 1] + lag)
                )
                if fault_hz is not None:
                    signal += m.fault_amplitude / h * _np.sin(two_pi * h * fault_hz * t + lag)
            if m.fault is Fault.INNER:
                signal *= 1.0 + 0.5 * _np.cos(two_pi * m.shaft_hz * t)
            signal = gain * signal + self._numpy_rng.normal(0.0, m.noise, n)
            axes.append(tuple(float(v) for v in signal))
        return axes[0], axes[1], axes[2]

    def _python(
        self, start: int, n: int
    ) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
        m = self.model
        two_pi = 2 * math.pi
        fault_hz = m.fault_hz
        axes: list[tuple[float, ...]] = []
        for axis, gain in enumerate(m.axis_gains):
            lag = math.pi / 2 if axis == 1 else 0.0
            values = []
            for i in range(start, start + n):
                t = i / m.sample_rate
                v = 0.0
                for h in range(1, m.harmonics + 1):
                    v += (
                        m.shaft_amplitude
                        / h
                        * math.sin(two_pi * h * m.shaft_hz * t + self._phases[h - 1] + lag)
                    )
                    if fault_hz is not None:
                        v += m.fault_amplitude / h * math.sin(two_pi * h * fault_hz * t + lag)
                if m.fault is Fault.INNER:
                    v *= 1.0 + 0.5 * math.cos(two_pi * m.shaft_hz * t)
                values.append(gain * v + self._rng.gauss(0.0, m.noise))
            axes.append(tuple(values))
        return axes[0], axes[1], axes[2]


def encode_json(batch: VibrationBatch, thing: str, digits: int = 4) -> bytes:
    doc: dict[str, Any] = {
        "thing": thing,
        "timestamp": round(batch.timestamp, 6),
        "t0": round(batch.timestamp, 6),
        "sample_rate": batch.sample_rate,
        "start": batch.start,
        "axes": {
            name: [round(v, digits) for v in values]
            for name, values in zip("xyz", (batch.x, batch.y, batch.z), strict=True)
        },
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def encode_binary(batch: VibrationBatch) -> bytes:
    """32-byte header then float32 x, y, z interleaved, little-endian (12 bytes a sample)."""
    samples = array.array(
        "f", (v for triple in zip(batch.x, batch.y, batch.z, strict=True) for v in triple)
    )
    if sys.byteorder != "little":  # pragma: no cover
        samples.byteswap()
    return (
        HEADER.pack(MAGIC, batch.sample_rate, batch.start, batch.timestamp, len(batch))
        + samples.tobytes()
    )


def decode_binary(data: bytes) -> VibrationBatch:
    if len(data) < HEADER.size:
        raise ValueError("vibration frame shorter than its header")
    magic, rate, start, timestamp, count = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError("not a hedgerow vibration frame")
    body = data[HEADER.size :]
    if len(body) != count * 12:
        raise ValueError(f"vibration frame holds {len(body)} bytes, expected {count * 12}")
    samples = array.array("f")
    samples.frombytes(body)
    if sys.byteorder != "little":  # pragma: no cover
        samples.byteswap()
    values = samples.tolist()
    return VibrationBatch(
        rate, start, timestamp, tuple(values[0::3]), tuple(values[1::3]), tuple(values[2::3])
    )
