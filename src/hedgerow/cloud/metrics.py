"""The cloud's Prometheus text (pure): fleet gauges, ingest counters, API latency, which
background jobs this replica holds, change notifications heard from other replicas.

``LatencyHistogram`` counts request durations per route in fixed buckets (the API's
``endpoint`` wrapper observes every request); ``render`` writes the exposition text from
the fleet, the ingest's counters and the histogram.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

#: Upper bounds (seconds) of the API latency buckets.
BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class _Series:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    n: int = 0


class LatencyHistogram:
    def __init__(self) -> None:
        self._series: dict[tuple[str, str], _Series] = {}

    def observe(self, method: str, route: str, seconds: float) -> None:
        series = self._series.setdefault((method, route), _Series())
        series.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        series.total += seconds
        series.n += 1

    def lines(self) -> list[str]:
        out = ["# TYPE hedgerow_cloud_api_request_seconds histogram"]
        for (method, route), s in sorted(self._series.items()):
            labels = f'method="{_label(method)}",route="{_label(route)}"'
            running = 0
            for bound, count in zip(BUCKETS, s.counts, strict=False):
                running += count
                out.append(
                    f'hedgerow_cloud_api_request_seconds_bucket{{{labels},le="{bound}"}} {running}'
                )
            out.append(f'hedgerow_cloud_api_request_seconds_bucket{{{labels},le="+Inf"}} {s.n}')
            out.append(f"hedgerow_cloud_api_request_seconds_sum{{{labels}}} {s.total:.6f}")
            out.append(f"hedgerow_cloud_api_request_seconds_count{{{labels}}} {s.n}")
        return out


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(
    cores: Sequence[Mapping[str, Any]],
    status: Mapping[str, Any],
    latency: LatencyHistogram,
    *,
    active_alerts: int = 0,
    exports: Sequence[Mapping[str, Any]] = (),
) -> str:
    """``cores`` as ``Core.to_json()``; ``status`` as ``CloudServer.status()``; ``exports``
    as ``ExportService.status()``."""
    lines = ["# TYPE hedgerow_cloud_cores gauge"]
    connected = sum(1 for c in cores if c.get("connected"))
    lines.append(f'hedgerow_cloud_cores{{state="connected"}} {connected}')
    lines.append(f'hedgerow_cloud_cores{{state="disconnected"}} {len(cores) - connected}')
    per_core = [
        ("hedgerow_cloud_core_connected", "gauge"),
        ("hedgerow_cloud_core_uptime_seconds", "gauge"),
        ("hedgerow_cloud_core_spool_depth", "gauge"),
        ("hedgerow_cloud_core_spool_age_seconds", "gauge"),
        ("hedgerow_cloud_core_cpu_percent", "gauge"),
        ("hedgerow_cloud_core_memory_percent", "gauge"),
        ("hedgerow_cloud_core_disk_percent", "gauge"),
        ("hedgerow_cloud_core_logs_dropped_total", "counter"),
    ]
    values: dict[str, list[str]] = {name: [] for name, _ in per_core}
    errors: list[str] = []
    for core in cores:
        beat = core.get("heartbeat") or {}
        host = beat.get("host") or {}
        counters = beat.get("counters") or {}
        labels = f'core="{_label(str(core["name"]))}",group="{_label(str(core["group"]))}"'
        facts = {
            "hedgerow_cloud_core_connected": int(bool(core.get("connected"))),
            "hedgerow_cloud_core_uptime_seconds": beat.get("uptime", 0),
            "hedgerow_cloud_core_spool_depth": beat.get("spool", 0),
            "hedgerow_cloud_core_spool_age_seconds": beat.get("spool_age", 0),
            "hedgerow_cloud_core_cpu_percent": host.get("cpu"),
            "hedgerow_cloud_core_memory_percent": host.get("memory"),
            "hedgerow_cloud_core_disk_percent": host.get("disk"),
            "hedgerow_cloud_core_logs_dropped_total": counters.get("logs_dropped", 0),
        }
        for name, value in facts.items():
            if value is not None:
                values[name].append(f"{name}{{{labels}}} {value}")
        for function, e in sorted((beat.get("function_errors") or {}).items()):
            failed = int(e.get("failed", 0) or 0) + int(e.get("crashes", 0) or 0)
            errors.append(
                f'hedgerow_cloud_function_errors_total{{{labels},function="{_label(function)}"}} '
                f"{failed}"
            )
    for name, kind in per_core:
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(values[name])
    lines.append("# TYPE hedgerow_cloud_function_errors_total counter")
    lines.extend(errors)
    for worker in ("ingest", "log_ingest"):
        stats = status.get(worker) or {}
        lines.append(f"# TYPE hedgerow_cloud_{worker}_total counter")
        for key in ("received", "stored", "dropped", "failures"):
            if key in stats:
                lines.append(f'hedgerow_cloud_{worker}_total{{result="{key}"}} {stats[key]}')
    jobs = status.get("jobs") or {}
    for name, kind, key in (
        ("hedgerow_cloud_job_held", "gauge", "held"),
        ("hedgerow_cloud_job_ticks_total", "counter", "ticks"),
        ("hedgerow_cloud_job_taken_total", "counter", "taken"),
    ):
        lines.append(f"# TYPE {name} {kind}")
        for job, state in sorted(jobs.items()):
            lines.append(f'{name}{{job="{_label(job)}"}} {int(state.get(key, 0))}')
    lines.append("# TYPE hedgerow_cloud_changes_heard_total counter")
    for topic, count in sorted((status.get("changes_heard") or {}).items()):
        lines.append(f'hedgerow_cloud_changes_heard_total{{topic="{_label(topic)}"}} {count}')
    dynsec = status.get("dynsec")
    if dynsec is not None:  # broker_login = "mosquitto-dynsec"
        lines.append("# TYPE hedgerow_cloud_dynsec_total counter")
        for key in ("reconciles", "refused"):
            lines.append(f'hedgerow_cloud_dynsec_total{{event="{key}"}} {int(dynsec.get(key, 0))}')
    lines.extend(export_lines(exports))
    device = status.get("device_server") or {}
    lines.append("# TYPE hedgerow_cloud_device_connections_total counter")
    for key in ("accepted", "handshakes", "resumed", "handshake_failures", "shed"):
        if key in device:
            lines.append(f'hedgerow_cloud_device_connections_total{{event="{key}"}} {device[key]}')
    if "pending" in device:
        lines.append("# TYPE hedgerow_cloud_device_pending gauge")
        lines.append(f"hedgerow_cloud_device_pending {device['pending']}")
    cache = device.get("discovery_cache") or {}
    lines.append("# TYPE hedgerow_cloud_discovery_cache_total counter")
    for key in ("hits", "misses", "invalidations", "evictions", "stale_refused"):
        if key in cache:
            lines.append(f'hedgerow_cloud_discovery_cache_total{{event="{key}"}} {cache[key]}')
    lines.append("# TYPE hedgerow_cloud_alerts_active gauge")
    lines.append(f"hedgerow_cloud_alerts_active {active_alerts}")
    lines.extend(latency.lines())
    return "\n".join(lines) + "\n"


def export_lines(exports: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per telemetry export target: lag, exported and lost messages, failures."""
    lines = ["# TYPE hedgerow_cloud_export_lag_messages gauge"]
    for e in exports:
        if e.get("lag") is not None:
            lines.append(
                f'hedgerow_cloud_export_lag_messages{{target="{_label(e["name"])}"}} {e["lag"]}'
            )
    lines.append("# TYPE hedgerow_cloud_export_messages_total counter")
    for e in exports:
        for result in ("exported", "lost"):
            target = _label(e["name"])
            lines.append(
                f'hedgerow_cloud_export_messages_total{{target="{target}",result="{result}"}} '
                f"{e.get(result, 0)}"
            )
    for name, kind, key in (
        ("hedgerow_cloud_export_failures_total", "counter", "failures"),
        ("hedgerow_cloud_export_failing", "gauge", "failing"),
    ):
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f'{name}{{target="{_label(e["name"])}"}} {e.get(key, 0)}' for e in exports)
    return lines
