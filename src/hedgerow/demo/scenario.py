"""The seed's scenario on one machine, driven through the same CLI a user types.

``hedgerow demo`` creates a cloud, a core (the "Raspberry Pi") and a simulated BME680 thing,
defines the temperature-correction function in the cloud, routes the thing's readings to it
and its results to the cloud, deploys, and then shows raw and corrected readings arriving in
the cloud. ``--scenario vibration`` does the same with a simulated accelerometer and the
vibration-features function, and reports bytes sampled at the edge against bytes sent on.

Every step is a ``hedgerow`` subprocess, so the demo proves the commands in the README.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hedgerow.demo.processes import (
    DemoError,
    ProcessGroup,
    hedgerow_command,
    pick_port,
    port_free,
    wait_for_port,
)

log = logging.getLogger(__name__)

GROUP = "factory-1"
CORE = "pi-1"
#: The vibration scenario: sample rate of the simulated accelerometer, analysis window.
VIBRATION_RATE_HZ = 10_000.0
VIBRATION_WINDOW_S = 8.0
#: Seconds each server gets to start listening.
START_TIMEOUT_S = 60.0


#: the demo's servers: (field, what it is, default port); --port-base N gives them N, N+1, ...
PORT_ROLES = (
    ("api", "API", 8080),
    ("device", "discovery", 8443),
    ("mqtt", "cloud MQTT", 8884),
    ("core", "core MQTT", 8883),
)


@dataclass(frozen=True)
class Ports:
    api: int
    device: int
    mqtt: int
    core: int

    @classmethod
    def choose(
        cls,
        say: Callable[[str], None],
        explicit: dict[str, int | None] | None = None,
        base: int | None = None,
    ) -> Ports:
        """Ports given (``explicit``, or ``base`` + 0..3) are used as they are, and must be
        free; the others are the defaults, or the next free port above a taken default."""
        explicit = explicit or {}
        given = {
            field: explicit.get(field) or (base + i if base is not None else None)
            for i, (field, _, _) in enumerate(PORT_ROLES)
        }
        for field, port in given.items():
            if port is not None and not 0 < port < 65536:
                raise DemoError(f"port {port} for --{field}-port is not a TCP port (1-65535)")
        fixed = {p for p in given.values() if p is not None}
        if len(fixed) < sum(p is not None for p in given.values()):
            raise DemoError(f"the demo needs four different ports, got {sorted(given.items())}")
        taken: set[int] = set(fixed)
        chosen = {}
        for field, name, preferred in PORT_ROLES:
            port = given[field]
            if port is not None:
                if not port_free(port):
                    raise DemoError(
                        f"port {port} ({name}) is in use; choose another with --{field}-port"
                        " or --port-base"
                    )
            else:
                port = pick_port(preferred, taken)
                if port != preferred:
                    say(f"port {preferred} ({name}) is taken; using {port} instead")
            taken.add(port)
            chosen[field] = port
        return cls(**chosen)


@dataclass(frozen=True)
class DemoOptions:
    data: Path
    scenario: str = "temperature"
    duration: float = 0.0
    factor: float = 5.0
    interval: float = 1.0
    examples: Path | None = None
    ports: tuple[tuple[str, int | None], ...] = ()
    port_base: int | None = None


#: the example functions, shipped with the package (``examples/functions`` in the repository
#: links here)
PACKAGED_EXAMPLES = Path(__file__).resolve().parent / "examples" / "functions"


def find_examples(explicit: Path | None) -> Path:
    """The example functions: the ones given with ``--examples``, else the packaged ones."""
    candidate = explicit if explicit is not None else PACKAGED_EXAMPLES
    if (candidate / "temp_correct").is_dir():
        return candidate
    if explicit is not None:
        raise DemoError(
            f"--examples {explicit} has no temp_correct/ function; give the directory that holds"
            " the example functions (or leave --examples out to use the ones Hedgerow ships)"
        )
    raise DemoError(
        f"the example functions are missing from this installation ({PACKAGED_EXAMPLES});"
        " reinstall hedgerow, or pass --examples DIR"
    )


class Demo:
    """One run of the scenario; ``run()`` returns when the duration is over or on Ctrl-C."""

    def __init__(self, options: DemoOptions, say: Callable[[str], None]) -> None:
        self.options = options
        self.say = say
        self.data = options.data.resolve()
        self.examples = find_examples(options.examples)

    # ---- steps ------------------------------------------------------------------------------

    def cli(self, group: ProcessGroup, name: str, *args: str) -> str:
        return group.run(name, hedgerow_command("cloud", *args, "--data", str(self.data / "cloud")))

    def prepare_directory(self) -> None:
        if self.data.exists():
            self.say(f"recreating {self.data} (the previous demo's state)")
            shutil.rmtree(self.data)
        self.data.mkdir(parents=True)

    def start_cloud(self, group: ProcessGroup, ports: Ports) -> None:
        cloud = self.data / "cloud"
        group.run(
            "cloud-init",
            hedgerow_command(
                "cloud",
                "init",
                "--data",
                str(cloud),
                "--host",
                "localhost",
                "--host",
                "127.0.0.1",
                "--api-port",
                str(ports.api),
                "--device-port",
                str(ports.device),
                "--mqtt-port",
                str(ports.mqtt),
                "--device-host",
                "127.0.0.1",
                "--mqtt-host",
                "127.0.0.1",
            ),
        )
        group.start("cloud", hedgerow_command("cloud", "serve", "--data", str(cloud)))
        for port in (ports.api, ports.device, ports.mqtt):
            wait_for_port(port, timeout=START_TIMEOUT_S, group=group)
        token = (cloud / "admin-token").read_text().strip()
        self.say(
            f"cloud: console http://127.0.0.1:{ports.api}/console/ (token {token})  "
            f"discovery https://127.0.0.1:{ports.device}  MQTT 127.0.0.1:{ports.mqtt}"
        )

    def start_core(self, group: ProcessGroup, ports: Ports) -> None:
        self.cli(group, "group-create", "group", "create", GROUP)
        self.cli(
            group, "core-create", "core", "create", "--group", GROUP, "--out", str(self.data), CORE
        )
        bundle = self.data / f"{CORE}.tar.gz"
        group.start(
            "core",
            hedgerow_command(
                "core",
                "run",
                "--bundle",
                str(bundle),
                "--data-dir",
                str(self.data / "core"),
                "--host",
                "127.0.0.1",
                "--port",
                str(ports.core),
            ),
        )
        wait_for_port(ports.core, timeout=START_TIMEOUT_S, group=group)
        self.say(f"core {CORE}: local MQTT endpoint 127.0.0.1:{ports.core} (mutual TLS, group CA)")

    def create_thing(self, group: ProcessGroup, name: str) -> Path:
        certs = self.data / "things"
        self.cli(
            group,
            f"thing-create-{name}",
            "thing",
            "create",
            "--group",
            GROUP,
            "--out",
            str(certs),
            name,
        )
        return certs

    def deploy(
        self,
        group: ProcessGroup,
        function: str,
        code: str,
        handler: str,
        env: list[str],
        routes: list[tuple[str, str, str]],
    ) -> None:
        args = [
            "function",
            "create",
            "--group",
            GROUP,
            function,
            "--code",
            str(self.examples / code),
            "--handler",
            handler,
            "--pinned",
        ]
        for item in env:
            args += ["--env", item]
        self.cli(group, f"function-create-{function}", *args)
        for source, topic, target in routes:
            self.cli(
                group,
                "subscription-add",
                "subscription",
                "add",
                "--group",
                GROUP,
                "--source",
                source,
                "--topic",
                topic,
                "--target",
                target,
            )
        started = time.monotonic()
        self.say(f"deploying {function} to {CORE} …")
        self.cli(group, "deploy", "deploy", "--group", GROUP, "--wait", "--timeout", "60")
        self.say(f"deployed in {time.monotonic() - started:.1f} s")

    # ---- scenarios --------------------------------------------------------------------------

    def run(self) -> int:
        self.prepare_directory()
        ports = Ports.choose(self.say, dict(self.options.ports), self.options.port_base)
        with ProcessGroup(self.data / "logs") as group:
            self.start_cloud(group, ports)
            self.start_core(group, ports)
            if self.options.scenario == "vibration":
                return self.vibration(group, ports)
            return self.temperature(group, ports)

    def temperature(self, group: ProcessGroup, ports: Ports) -> int:
        thing = "bme680-1"
        certs = self.create_thing(group, thing)
        self.deploy(
            group,
            "temp-correct",
            "temp_correct",
            "temp_correct.handler",
            [f"FACTOR={self.options.factor:g}"],
            [
                (f"thing:{thing}", "sensors/#", "function:temp-correct"),
                (f"thing:{thing}", "sensors/#", "cloud"),
                ("function:temp-correct", "corrected/#", "cloud"),
            ],
        )
        group.start(
            thing,
            hedgerow_command(
                "thing",
                "run",
                "-e",
                f"127.0.0.1:{ports.device}",
                "-r",
                str(certs / "root-ca.pem"),
                "-c",
                str(certs / f"{thing}.cert.pem"),
                "-k",
                str(certs / f"{thing}.key"),
                "-id",
                thing,
                "-t",
                f"sensors/{thing}",
                "--sensor",
                "sim",
                "--interval",
                f"{self.options.interval:g}",
                "--state-dir",
                str(self.data / "thing-state"),
            ),
        )
        self.say(f"thing {thing}: simulated BME680 next to a hot CPU, publishing sensors/{thing}")
        self.say("readings arriving in the cloud (raw from the sensor, corrected at the edge):")
        raw: dict[str, dict[str, Any]] = {}
        shown = 0
        for message in self.follow(group, "#"):
            topic = str(message.get("topic", ""))
            body = _json(message)
            if body is None:
                continue
            if topic.startswith("sensors/"):
                raw[topic.split("/", 1)[1]] = body
            elif topic.startswith("corrected/"):
                name = topic.split("/", 1)[1]
                source = raw.get(name, {})
                self.say(
                    f"  {name}: sensor {body.get('raw_temperature', source.get('temperature', float('nan'))):6.2f} °C"
                    f"  cpu {body.get('cpu_temperature', float('nan')):5.1f} °C"
                    f"  -> corrected {body.get('temperature', float('nan')):6.2f} °C"
                )
                shown += 1
        if shown == 0:
            raise DemoError(
                f"no corrected reading reached the cloud; see the logs in {self.data / 'logs'}"
            )
        self.say(f"{shown} corrected readings reached the cloud. Logs: {self.data / 'logs'}")
        return 0

    def vibration(self, group: ProcessGroup, ports: Ports) -> int:
        thing = "vib-1"
        certs = self.create_thing(group, thing)
        self.deploy(
            group,
            "vibration-features",
            "vibration_features",
            "vibration_features.handler",
            [f"WINDOW_S={VIBRATION_WINDOW_S:g}", "BANDS=0-200,200-1000,1000-5000"],
            [
                (f"thing:{thing}", "vibration/#", "function:vibration-features"),
                ("function:vibration-features", "features/#", "cloud"),
            ],
        )
        group.start(
            thing,
            hedgerow_command(
                "thing", "simulate", "--count", "1", "--certs", str(certs), "--prefix", "vib",
                "--kind", "vibration", "--sample-rate", f"{VIBRATION_RATE_HZ:g}",
                "--batch", str(int(VIBRATION_RATE_HZ // 4)), "--interval", "0.25",
                "-t", "vibration/{thing}",
                "--fault", "outer", "--duration", f"{(self.options.duration or 30.0) + 60:g}",
                "-e", f"127.0.0.1:{ports.device}",
                "-r", str(certs / "root-ca.pem"), "--state-dir", str(self.data / "thing-state"),
            ),
        )  # fmt: skip
        self.say(
            f"thing {thing}: 3-axis accelerometer at {VIBRATION_RATE_HZ / 1000:g} kHz with an "
            f"outer-race bearing fault; features per {VIBRATION_WINDOW_S:g} s window at the edge"
        )
        sent = sampled = windows = 0
        for message in self.follow(group, "features/#", limit_s=self.options.duration or 30.0):
            body = _json(message)
            if body is None:
                continue
            windows += 1
            sent += len(str(message.get("payload", "")).encode())
            # what the sensor sampled for this window: float32 per sample and axis
            sampled += int(body["samples"]) * len(body["axes"]) * 4
            x = body["axes"].get("x", {})
            self.say(
                f"  window {windows}: x rms {x.get('rms', 0):.3f} g, crest {x.get('crest_factor', 0):.2f},"
                f" kurtosis {x.get('kurtosis', 0):.2f}, dominant {x.get('dominant_hz')} Hz"
            )
        if windows == 0:
            raise DemoError(f"no features reached the cloud; see the logs in {self.data / 'logs'}")
        self.say(
            f"bytes sampled at the edge: {sampled:,} (float32); bytes sent to the cloud: {sent:,}; "
            f"{sampled / max(1, sent):,.0f}x less"
        )
        return 0

    # ---- following the cloud's telemetry ----------------------------------------------------

    def follow(
        self, group: ProcessGroup, topic_filter: str, *, limit_s: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Messages arriving in the cloud, via ``hedgerow cloud tail`` (until the duration ends)."""
        duration = limit_s if limit_s is not None else self.options.duration
        tail = subprocess.Popen(
            hedgerow_command(
                "cloud", "tail", topic_filter, "--json", "--data", str(self.data / "cloud")
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        lines: list[str] = []
        lock = threading.Condition()
        reader = threading.Thread(target=_pump, args=(tail.stdout, lines, lock), daemon=True)
        reader.start()
        deadline = time.monotonic() + duration if duration else None
        try:
            while deadline is None or time.monotonic() < deadline:
                group.check_alive()
                with lock:
                    if not lines:
                        lock.wait(timeout=0.5)
                    batch, lines[:] = list(lines), []
                for line in batch:
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        continue
                if tail.poll() is not None and not batch:
                    raise DemoError("`hedgerow cloud tail` ended unexpectedly")
        finally:
            tail.terminate()
            try:
                tail.wait(timeout=5)
            except subprocess.TimeoutExpired:
                tail.kill()


def _pump(stream: IO[str] | None, lines: list[str], lock: threading.Condition) -> None:
    if stream is None:
        return
    for line in stream:
        with lock:
            lines.append(line)
            lock.notify()


def _json(message: dict[str, Any]) -> dict[str, Any] | None:
    payload = message.get("payload")
    if isinstance(payload, dict):
        return payload
    if isinstance(payload, str):
        try:
            value = json.loads(payload)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None
    return None
