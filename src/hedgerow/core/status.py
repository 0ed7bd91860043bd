"""Status: the heartbeat payload and its pacing (pure), Prometheus text (pure), and a tiny
metrics server.

The heartbeat is small JSON sent at QoS 0 every ``status.heartbeat_interval`` (default
10 minutes: about 150 KB a day with the TLS and MQTT framing) and soon after every change
the cloud should see (a deployment applied, a function started, stopped or failed, the
certificate renewed), at most one per ``HEARTBEAT_MIN_GAP_S`` so a crash loop cannot flood
the link. Prometheus metrics are served on ``http://127.0.0.1:<status.metrics_port>/metrics``
(loopback only by default).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from hedgerow import __version__, http11
from hedgerow.contract.heartbeat import Heartbeat

log = logging.getLogger(__name__)

#: The metrics listener takes only small GETs from a scraper.
METRICS_LIMITS = http11.Limits(
    max_header_bytes=8 * 1024, max_body_bytes=0, idle_timeout=30.0, request_timeout=10.0
)


@dataclass(frozen=True)
class Snapshot:
    core: str
    uptime: float
    devices: int
    functions: Mapping[str, str]
    spool: Mapping[str, int]
    counters: Mapping[str, int]
    subscriptions: tuple[tuple[str, str, str, int], ...] = ()
    deployment: str | None = None
    cloud_connected: bool = False
    #: Deployments refused at the last start (``Refusal.as_dict()``): the cloud redeploys.
    refused: tuple[Mapping[str, str], ...] = ()
    #: The core's own health (``hedgerow.lifecycle.Health``) and its components' states.
    health: str = "healthy"
    components: Mapping[str, str] = field(default_factory=dict)
    version: str = field(default=__version__)
    #: per stream of the stream manager: newest sequence number, bytes, export backlog
    streams: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    #: Each industrial connector's kind, version, state and counters (``ConnectorHost.report``).
    connectors: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    #: functions that failed: ``{"failed", "crashes", "timeouts", "last_error"}`` each
    function_errors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: the things seen since start: ``{"connected", "last_activity"}`` each (``DeviceActivity``)
    things: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: the gateway's CPU, memory and disk use in percent (``HostStats.sample``)
    host: Mapping[str, float] = field(default_factory=dict)
    #: seconds the oldest spooled record may have waited
    spool_age: float = 0.0
    spool_max_bytes: int = 0


#: the shortest time between two heartbeats sent for changes (the periodic one aside)
HEARTBEAT_MIN_GAP_S: Final = 1.0
#: how long after the first change of a burst the heartbeat waits, so what changed
#: together (three devices connecting, a deployment's functions starting) goes in one
#: heartbeat and a device's connection is complete when counted
HEARTBEAT_SETTLE_S: Final = 0.25


@dataclass
class HeartbeatPacer:
    """When the next heartbeat is due (pure: the caller passes the clock's time).

    Periodic every ``interval`` seconds; after ``changed(now)`` once ``settle`` has passed
    since the first change of a burst and ``min_gap`` since the last heartbeat, so bursts
    of changes cost one heartbeat a second at most.
    """

    interval: float
    min_gap: float = HEARTBEAT_MIN_GAP_S
    settle: float = HEARTBEAT_SETTLE_S
    last_sent: float | None = None
    first_change: float | None = None  # the first change not yet sent

    @property
    def pending(self) -> bool:
        return self.first_change is not None

    def changed(self, now: float) -> None:
        if self.first_change is None:
            self.first_change = now

    def delay(self, now: float) -> float:
        """Seconds until the next heartbeat is due (0: send it now)."""
        if self.first_change is not None:
            due = self.first_change + self.settle
            if self.last_sent is not None:
                due = max(due, self.last_sent + self.min_gap)
        elif self.last_sent is None:
            return self.interval
        else:
            due = self.last_sent + self.interval
        return max(0.0, due - now)

    def sent(self, now: float) -> None:
        self.last_sent = now
        self.first_change = None


#: a thing's publishes ask for a heartbeat only when the activity the cloud last heard of
#: is older than this (connects and disconnects always do)
ACTIVITY_REPORT_S: Final = 60.0
#: at most this many things in one heartbeat: the connected ones first, then the most
#: recently active
MAX_THINGS_REPORTED: Final = 500


@dataclass
class DeviceActivity:
    """Each device's last activity (connect, publish, disconnect), in wall-clock seconds
    (pure: the caller passes the time). Whether a device is connected now is the broker's
    to say; this only remembers when each was last heard of."""

    last: dict[str, float] = field(default_factory=dict)
    #: when a publish last asked for a heartbeat, per device
    reported: dict[str, float] = field(default_factory=dict)

    def seen(self, name: str, now: float) -> None:
        """A connect or a disconnect (the caller asks for a heartbeat)."""
        self.last[name] = now
        self.reported[name] = now

    def published(self, name: str, now: float) -> bool:
        """A publish: True when the cloud's view of it is older than ``ACTIVITY_REPORT_S``."""
        self.last[name] = now
        if now - self.reported.get(name, float("-inf")) < ACTIVITY_REPORT_S:
            return False
        self.reported[name] = now
        return True

    def report(self, connected: set[str]) -> dict[str, dict[str, Any]]:
        """``name → {"connected", "last_activity"}``, at most ``MAX_THINGS_REPORTED``."""
        names = set(self.last) | connected
        chosen = sorted(names, key=lambda n: (n not in connected, -self.last.get(n, 0.0), n))[
            :MAX_THINGS_REPORTED
        ]
        return {
            name: {
                "connected": name in connected,
                "last_activity": round(self.last.get(name, 0.0), 3),
            }
            for name in sorted(chosen)
        }


def heartbeat(s: Snapshot) -> bytes:
    """The heartbeat JSON (``hedgerow.contract.heartbeat``): version, uptime, devices,
    functions, spool depth, the core's health, non-zero counters, ``refused`` (deployments
    on disk that did not verify at start), ``function_errors`` (per failing function: counts
    and the last error's text) and ``streams`` when there are any."""
    return Heartbeat(
        version=s.version,
        uptime=round(s.uptime),
        devices=s.devices,
        functions=s.functions,
        spool=s.spool.get("depth", 0),
        deployment=s.deployment,
        health=s.health,
        counters=s.counters,
        refused=s.refused,
        function_errors=s.function_errors,
        streams={
            name: {"newest": p.get("newest", -1), "backlog": p.get("backlog", 0)}
            for name, p in s.streams.items()
        },
        connectors=s.connectors,
        things=s.things,
        host=s.host,
        spool_age=round(s.spool_age),
        spool_bytes=s.spool.get("bytes", 0),
        spool_max_bytes=s.spool_max_bytes,
    ).to_json()


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(s: Snapshot) -> str:
    lines = [
        "# TYPE hedgerow_core_uptime_seconds gauge",
        f"hedgerow_core_uptime_seconds {s.uptime:.3f}",
        "# TYPE hedgerow_core_devices_connected gauge",
        f"hedgerow_core_devices_connected {s.devices}",
        "# TYPE hedgerow_core_cloud_connected gauge",
        f"hedgerow_core_cloud_connected {int(s.cloud_connected)}",
        "# TYPE hedgerow_core_spool gauge",
    ]
    for key, value in sorted(s.spool.items()):
        lines.append(f'hedgerow_core_spool{{field="{_label(key)}"}} {value}')
    lines.append("# TYPE hedgerow_core_events_total counter")
    for key, value in sorted(s.counters.items()):
        lines.append(f'hedgerow_core_events_total{{event="{_label(key)}"}} {value}')
    lines.append("# TYPE hedgerow_core_function_up gauge")
    for name, state in sorted(s.functions.items()):
        up = int(state.lower() == "running")
        lines.append(
            f'hedgerow_core_function_up{{function="{_label(name)}",state="{_label(state)}"}} {up}'
        )
    lines.append("# TYPE hedgerow_core_component_up gauge")
    for name, state in sorted(s.components.items()):
        up = int(state == "RUNNING")
        lines.append(
            f'hedgerow_core_component_up{{component="{_label(name)}",state="{_label(state)}"}} {up}'
        )
    lines.append("# TYPE hedgerow_core_subscription_messages_total counter")
    for source, topic, target, count in s.subscriptions:
        lines.append(
            f'hedgerow_core_subscription_messages_total{{source="{_label(source)}",'
            f'topic="{_label(topic)}",target="{_label(target)}"}} {count}'
        )
    if s.streams:
        lines.append("# TYPE hedgerow_core_stream gauge")
        for name, fields in sorted(s.streams.items()):
            for key, value in sorted(fields.items()):
                lines.append(
                    f'hedgerow_core_stream{{stream="{_label(name)}",field="{_label(key)}"}} {value}'
                )
    return "\n".join(lines) + "\n"


class MetricsServer:
    """GET /metrics (Prometheus text) and GET /health on a local port (``hedgerow.http11``)."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot
        self._server = http11.Server(self._answer, limits=METRICS_LIMITS, name="core.metrics")

    async def start(self, host: str, port: int) -> tuple[str, int]:
        return await self._server.start(host, port)

    async def close(self) -> None:
        await self._server.close()

    async def _answer(self, request: http11.Request) -> http11.Response:
        if request.method != "GET":
            return http11.Response(405, b"method not allowed\n", "text/plain")
        if request.target == "/metrics":
            body = prometheus(self.snapshot()).encode()
            return http11.Response(200, body, "text/plain; version=0.0.4")
        if request.target == "/health":
            return http11.Response(200, heartbeat(self.snapshot()), "application/json")
        return http11.Response(404, b"not found\n", "text/plain")
