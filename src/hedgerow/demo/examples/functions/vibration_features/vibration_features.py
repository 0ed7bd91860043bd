"""Vibration features at the edge: raw accelerometer windows in, a few numbers out.

An accelerometer sampling thousands of times a second would flood the cloud; what
predictive maintenance needs are features of each window. Per axis this computes RMS,
peak, crest factor, kurtosis, the dominant frequencies and the energy in frequency bands,
and publishes only those to ``features/<thing>``.

Input: JSON ``{"thing", "sample_rate", "t0", "axes": {"x": [...], "y": [...], "z": [...]}}``
(``samples: [[x, y, z], ...]`` is accepted too). A sensor batches samples by what suits its
transport; the analysis window is the function's: with ``WINDOW_S`` set, batches are
collected per thing until the window is full (default 0: each message is a window).
Environment: ``BANDS`` as ``"0-200,200-1000,1000-5000"`` (Hz), ``PEAKS`` (how many dominant
frequencies, default 3), ``WINDOW_S``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

OUTPUT_PREFIX = os.environ.get("OUTPUT_PREFIX", "features")
DEFAULT_BANDS = "0-200,200-1000,1000-5000"


def parse_bands(text: str) -> list[tuple[float, float]]:
    bands = []
    for part in text.split(","):
        low, high = (float(x) for x in part.strip().split("-"))
        if not 0 <= low < high:
            raise ValueError(f"bad band {part!r}: want LOW-HIGH with 0 <= LOW < HIGH")
        bands.append((low, high))
    return bands


def axis_features(
    signal: np.ndarray, sample_rate: float, bands: Sequence[tuple[float, float]], peaks: int
) -> dict[str, Any]:
    x = signal - signal.mean()
    rms = float(np.sqrt(np.mean(x**2)))
    peak = float(np.max(np.abs(x)))
    variance = float(np.mean(x**2))
    kurtosis = float(np.mean(x**4) / variance**2) if variance > 0 else 0.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), d=1.0 / sample_rate)
    # Dominant frequencies are local maxima of the spectrum (a Hann window spreads one
    # tone over neighbouring bins, which must not count as further peaks).
    inner = spectrum[1:-1]
    local = np.flatnonzero((inner > spectrum[:-2]) & (inner >= spectrum[2:])) + 1
    order = local[np.argsort(spectrum[local])[::-1][:peaks]]
    band_energy = {
        f"{low:g}-{high:g}": float(spectrum[(freqs >= low) & (freqs < high)].sum() / len(x))
        for low, high in bands
    }
    return {
        "rms": round(rms, 6),
        "peak": round(peak, 6),
        "crest_factor": round(peak / rms, 6) if rms > 0 else 0.0,
        "kurtosis": round(kurtosis, 6),
        "dominant_hz": [round(float(freqs[i]), 2) for i in order],
        "band_energy": band_energy,
    }


def axes_of(event: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if "axes" in event:
        return {name: np.asarray(values, dtype=float) for name, values in event["axes"].items()}
    samples = np.asarray(event["samples"], dtype=float)
    return {name: samples[:, i] for i, name in enumerate("xyz"[: samples.shape[1]])}


def features(
    event: Mapping[str, Any], bands: Sequence[tuple[float, float]], peaks: int = 3
) -> dict[str, Any]:
    rate = float(event["sample_rate"])
    axes = axes_of(event)
    count = min(len(v) for v in axes.values())
    if count < 8:
        raise ValueError("a window needs at least 8 samples per axis")
    return {
        "thing": event.get("thing"),
        "t0": event.get("t0"),
        "sample_rate": rate,
        "samples": count,
        "axes": {name: axis_features(v[:count], rate, bands, peaks) for name, v in axes.items()},
    }


class Windows:
    """Collects batches per thing until a window of ``window_s`` seconds is full."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.pending: dict[str, tuple[dict[str, Any], dict[str, list[np.ndarray]], int]] = {}

    def add(self, thing: str, event: Mapping[str, Any]) -> dict[str, Any] | None:
        """The full window as one event once enough samples arrived, else None."""
        if self.window_s <= 0:
            return dict(event)
        axes = axes_of(event)
        head, parts, count = self.pending.get(thing) or (dict(event), {k: [] for k in axes}, 0)
        if float(event["sample_rate"]) != float(head["sample_rate"]) or set(axes) != set(parts):
            head, parts, count = (
                dict(event),
                {k: [] for k in axes},
                0,
            )  # the sensor changed: restart
        for name, values in axes.items():
            parts[name].append(values)
        count += min(len(v) for v in axes.values())
        if count < self.window_s * float(head["sample_rate"]):
            self.pending[thing] = (head, parts, count)
            return None
        self.pending.pop(thing, None)
        window = {k: v for k, v in head.items() if k not in ("axes", "samples")}
        window["axes"] = {name: np.concatenate(chunks) for name, chunks in parts.items()}
        return window


BANDS = parse_bands(os.environ.get("BANDS", DEFAULT_BANDS))
PEAKS = int(os.environ.get("PEAKS", "3"))
WINDOWS = Windows(float(os.environ.get("WINDOW_S", "0")))


def handler(event: Any, context: Any) -> dict[str, Any] | None:
    if not isinstance(event, dict):
        context.logger.warning("vibration_features.ignored reason=%r", "not JSON")
        return None
    thing = str(event.get("thing") or context.topic.rsplit("/", 1)[-1])
    window = WINDOWS.add(thing, event)
    if window is None:
        return None
    result = features(window, BANDS, PEAKS)
    context.publish(f"{OUTPUT_PREFIX}/{thing}", json.dumps(result, separators=(",", ":")).encode())
    return result
