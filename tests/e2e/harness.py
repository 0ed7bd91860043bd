"""A whole Hedgerow system on loopback: a cloud, a core and things as real processes.

Everything is driven through the ``hedgerow`` CLI as a user would, on free ports, with
logs in the test's temporary directory. ``System.close()`` ends every process it started.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import tomli_w
from awscrt import io as crt_io
from awsiot.greengrass_discovery import DiscoverResponse, DiscoveryClient
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "functions"
GROUP = "factory-1"
CORE = "pi-1"


#: how long a device waits for one answer (discovery, CONNACK, PUBACK)
WAIT = 15.0


def hedgerow(*args: str) -> list[str]:
    return [sys.executable, "-m", "hedgerow", *args]


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill9(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill9()


#: Core settings for tests: a metrics port of its own (the default, 9108, is one port for every
#: core on the machine, so two cores at once would collide), a short reconnect backoff
#: towards the cloud so that a test does not wait up to 30 s after the cloud comes back, and
#: a certificate check every 5 s instead of every 300 s (group-CA rotation tests).
CORE_TEST_SETTINGS = """
[connector]
backoff_base = 0.2
backoff_cap = 2.0

[certificates]
check_interval = 5

[status]
heartbeat_interval = 5
metrics_host = "127.0.0.1"
metrics_port = {metrics_port}
"""


@dataclass
class System:
    root: Path
    api_port: int = field(default_factory=free_port)
    device_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    core_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    procs: dict[str, Proc] = field(default_factory=dict)
    #: the interpreter whose ``hedgerow`` runs the cloud and core (a fresh virtualenv's, to
    #: test an installed wheel); its processes then run outside the repository
    python: str = sys.executable
    #: TOML merged into the core's config.toml after the test defaults
    core_settings: str = ""

    def hedgerow(self, *args: str) -> list[str]:
        return [self.python, "-m", "hedgerow", *args]

    @property
    def cwd(self) -> Path | None:
        return None if self.python == sys.executable else self.root

    @property
    def cloud_dir(self) -> Path:
        return self.root / "cloud"

    @property
    def certs(self) -> Path:
        return self.root / "things"

    @property
    def token(self) -> str:
        return (self.cloud_dir / "admin-token").read_text().strip()

    # ---- processes ------------------------------------------------------------------------

    def start(self, name: str, argv: Sequence[str], *, cwd: Path | None = None) -> Proc:
        log = self.root / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=cwd or self.cwd,
            )
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        return proc

    def run(
        self, *args: str, check: bool = True, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.hedgerow(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.cwd,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"hedgerow {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done

    def cloud(
        self, *args: str, check: bool = True, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        return self.run("cloud", *args, "--data", str(self.cloud_dir), check=check, timeout=timeout)

    def close(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"===== {p.name}\n{p.output()[-3000:]}" for p in self.procs.values())

    # ---- the pieces -----------------------------------------------------------------------

    def start_cloud(self) -> None:
        self.init_cloud()
        self.start("cloud", self.hedgerow("cloud", "serve", "--data", str(self.cloud_dir)))
        for port in (self.api_port, self.device_port, self.mqtt_port):
            wait_until(functools.partial(port_open, port), timeout=60, what=f"cloud port {port}")

    def init_cloud(self) -> None:
        if not self.cloud_dir.exists():
            self.run(
                "cloud",
                "init",
                "--data",
                str(self.cloud_dir),
                "--host",
                "localhost",
                "--host",
                "127.0.0.1",
                "--api-port",
                str(self.api_port),
                "--device-port",
                str(self.device_port),
                "--mqtt-port",
                str(self.mqtt_port),
                "--device-host",
                "127.0.0.1",
                "--mqtt-host",
                "127.0.0.1",
            )

    def stop_cloud(self, *, kill: bool = False) -> None:
        proc = self.procs["cloud"]
        if kill:
            proc.kill9()
        else:
            proc.stop()
        wait_until(lambda: not port_open(self.api_port), timeout=20, what="the cloud to stop")

    def create_group_and_core(self, *group_flags: str) -> Path:
        self.cloud("group", "create", GROUP, *group_flags)
        return self.create_core(GROUP, CORE, self.metrics_port)

    def create_core(
        self, group: str, core: str, metrics_port: int, settings: str = "", *, api: bool = False
    ) -> Path:
        """The bundle of a new core of ``group``, with the test settings merged in (made
        by ``hedgerow cloud core create``, or with ``api`` by the REST API: many cores
        without a CLI process each)."""
        bundle = self.root / f"{core}.tar.gz"
        if api:
            with self._http() as http:
                response = http.post("/api/v1/cores", json={"name": core, "group": group})
                response.raise_for_status()
                bundle.write_bytes(base64.b64decode(response.json()["bundle"]))
        else:
            self.cloud("core", "create", "--group", group, "--out", str(self.root), core)
        _add_settings(bundle, CORE_TEST_SETTINGS.format(metrics_port=metrics_port))
        for extra in (self.core_settings, settings):
            if extra:
                _add_settings(bundle, extra)
        return bundle

    def start_core(self, *, first: bool = True) -> Proc:
        return self.start_named_core(CORE, self.core_port, first=first, data_dir=self.root / "core")

    def start_named_core(
        self,
        core: str,
        port: int,
        *,
        first: bool = True,
        data_dir: Path | None = None,
        wait: bool = True,
    ) -> Proc:
        """``hedgerow core run`` for ``core`` (its bundle at the first start) on ``port``."""
        source = ["--bundle", str(self.root / f"{core}.tar.gz")] if first else []
        proc = self.start(
            core if core != CORE else "core",
            self.hedgerow(
                "core",
                "run",
                *source,
                "--data-dir",
                str(data_dir or self.root / core),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ),
        )
        if wait:
            self.wait_core(proc, port)
        return proc

    def wait_core(self, proc: Proc, port: int) -> None:
        wait_until(
            lambda: port_open(port) or proc.popen.poll() is not None,
            timeout=60,
            what=f"{proc.name} port",
        )
        assert proc.popen.poll() is None, proc.output()

    def create_thing(self, name: str) -> None:
        self.cloud("thing", "create", "--group", GROUP, "--out", str(self.certs), name)

    def create_things(self, names: Sequence[str]) -> None:
        """Many things at once through the REST API (one CLI process per thing is slow)."""
        self.certs.mkdir(parents=True, exist_ok=True)
        with self._http() as http:
            for name in names:
                response = http.post("/api/v1/things", json={"name": name, "group": GROUP})
                response.raise_for_status()
                created = response.json()
                (self.certs / f"{name}.cert.pem").write_text(created["certificate"])
                key = self.certs / f"{name}.key"
                key.write_text(created["private_key"])
                key.chmod(0o600)
                (self.certs / "root-ca.pem").write_text(created["root_ca"])

    def routes(self, subscriptions: Sequence[tuple[str, str, str]]) -> None:
        """Many subscriptions at once through the REST API."""
        with self._http() as http:
            for source, topic, target in subscriptions:
                response = http.post(
                    f"/api/v1/groups/{GROUP}/subscriptions",
                    json={"source": source, "topic": topic, "target": target},
                )
                response.raise_for_status()

    def thing_args(self, name: str) -> list[str]:
        return [
            "-e",
            f"127.0.0.1:{self.device_port}",
            "-r",
            str(self.certs / "root-ca.pem"),
            "-c",
            str(self.certs / f"{name}.cert.pem"),
            "-k",
            str(self.certs / f"{name}.key"),
        ]

    def function(self, name: str, code: Path, handler: str, *extra: str) -> None:
        self.cloud(
            "function",
            "create",
            "--group",
            GROUP,
            name,
            "--code",
            str(code),
            "--handler",
            handler,
            *extra,
        )

    def route(self, source: str, topic: str, target: str) -> None:
        self.cloud(
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

    def deploy(self, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cloud("deploy", "--group", GROUP, "--wait", "--timeout", "60", check=check)

    # ---- the core from outside -----------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """The core's Prometheus metrics as ``{"name{labels}": value}`` (empty if unreachable)."""
        try:
            response = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
        except httpx.HTTPError:
            return {}
        values: dict[str, float] = {}
        for line in response.text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    def core_maps(self, fragment: str) -> bool:
        """Whether the running core process has a file whose path contains ``fragment``
        mapped (a loaded extension module shows here, whoever imported it)."""
        pid = self.procs["core"].popen.pid
        return fragment in Path(f"/proc/{pid}/maps").read_text()

    def devices_connected(self) -> int:
        return int(self.metrics().get("hedgerow_core_devices_connected", -1))

    def core_server_certificate(self, thing: str) -> bytes:
        """The DER server certificate the core presents (handshake with ``thing``'s identity)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(self.certs / f"{thing}.cert.pem", self.certs / f"{thing}.key")
        with (
            socket.create_connection(("127.0.0.1", self.core_port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der

    # ---- the API ----------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.api_port}",
            headers={"authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(
            f"http://127.0.0.1:{self.api_port}{path}",
            params=params,
            headers={"authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def publish(self, topic: str, payload: str) -> None:
        """Publish from the cloud (cores whose group routes ``topic`` from ``cloud`` get it)."""
        with self._http() as http:
            response = http.post(
                "/api/v1/messages/publish", json={"topic": topic, "payload": payload}
            )
            response.raise_for_status()

    def messages(self, topic_filter: str, limit: int = 10000) -> list[dict[str, Any]]:
        """Stored telemetry matching ``topic_filter``, oldest first (every page of it)."""
        found: list[dict[str, Any]] = []
        while True:
            params = {"filter": topic_filter, "limit": str(limit), "order": "asc"}
            if found:
                params["after_id"] = str(found[-1]["id"])
            page = list(self.api("/api/v1/messages", **params)["items"])
            found += page
            if len(page) < limit:
                return found

    def payloads(self, topic_filter: str) -> list[dict[str, Any]]:
        return [json.loads(m["payload"]) for m in self.messages(topic_filter) if "payload" in m]


def discover(system: System, thing: str) -> DiscoverResponse:
    certs = system.certs
    options = crt_io.TlsContextOptions.create_client_with_mtls_from_path(
        str(certs / f"{thing}.cert.pem"), str(certs / f"{thing}.key")
    )
    options.override_default_trust_store_from_path(None, str(certs / "root-ca.pem"))
    client = DiscoveryClient(
        crt_io.ClientBootstrap.get_or_create_static_default(),
        crt_io.SocketOptions(),
        crt_io.ClientTlsContext(options),
        "us-east-1",
        gg_server_name="localhost",
    )
    client.port = system.device_port
    response: DiscoverResponse = client.discover(thing).result(timeout=WAIT)
    return response


def core_endpoint(system: System, thing: str, tmp_path: Path) -> tuple[str, int, Path]:
    """Discover like the SDK's sample: the first group's CA, the first core's first endpoint."""
    response = discover(system, thing)
    group = response.gg_groups[0]
    core = group.cores[0]
    assert core.thing_arn.endswith(f"/{CORE}"), core.thing_arn
    connectivity = core.connectivity[0]
    assert (connectivity.host_address, connectivity.port) == ("127.0.0.1", system.core_port)
    ca = tmp_path / f"{thing}-group-ca.pem"
    ca.write_text(group.certificate_authorities[0])
    return connectivity.host_address, connectivity.port, ca


def v5_connack(system: System, thing: str, certs: Path | None = None) -> tuple[int, str]:
    """CONNACK reason code and reason string a paho-mqtt MQTT 5 client gets from the core
    (``thing``'s certificate and key from ``certs``, default ``system.certs``)."""
    done = threading.Event()
    result: dict[str, object] = {}

    def on_connect(
        client: mqtt.Client, userdata: object, flags: object, rc: ReasonCode,
        properties: Properties | None,
    ) -> None:  # fmt: skip
        result["rc"] = rc.value
        result["reason"] = getattr(properties, "ReasonString", "") if properties else ""
        done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=thing, protocol=mqtt.MQTTv5)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the group CA is not what this test is about
    certs = certs or system.certs
    context.load_cert_chain(certs / f"{thing}.cert.pem", certs / f"{thing}.key")
    client.tls_set_context(context)
    client.on_connect = on_connect
    client.connect("127.0.0.1", system.core_port)
    client.loop_start()
    try:
        assert done.wait(30), "no CONNACK from the core"
    finally:
        client.loop_stop()
        client.disconnect()
    return int(result["rc"]), str(result["reason"])  # type: ignore[call-overload]


def merged_settings(config_text: str, settings: str) -> bytes:
    """A core's ``config.toml`` text with the TOML ``settings`` merged in, table by table."""
    config = tomllib.loads(config_text)
    for section, values in tomllib.loads(settings).items():
        config.setdefault(section, {}).update(values)
    return tomli_w.dumps(config).encode()


def add_config_settings(config: Path, settings: str) -> None:
    """Merge TOML settings into a provisioned core's ``config.toml``."""
    config.write_bytes(merged_settings(config.read_text(), settings))


def _add_settings(bundle: Path, settings: str) -> None:
    """Merge TOML settings into the ``config.toml`` inside a provisioning bundle."""
    with tarfile.open(bundle, "r:gz") as tar:
        members = [(m, tar.extractfile(m)) for m in tar.getmembers() if m.isfile()]
        files = [(m, f.read() if f else b"") for m, f in members]
    with tarfile.open(bundle, "w:gz") as tar:
        for member, data in files:
            if Path(member.name).name == "config.toml":
                data = merged_settings(data.decode(), settings)
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


@contextmanager
def running_cloud(
    root: Path, *, python: str = sys.executable, core_settings: str = "", cloud_settings: str = ""
) -> Iterator[System]:
    """A running cloud (``cloud_settings``: TOML merged into its ``config.toml`` after
    ``init``); every process is stopped on exit, and the logs are printed if the test failed."""
    s = System(root, python=python, core_settings=core_settings)
    try:
        if cloud_settings:
            s.init_cloud()
            add_config_settings(s.cloud_dir / "config.toml", cloud_settings)
        s.start_cloud()
        yield s
    except BaseException:
        print(s.logs())
        raise
    finally:
        s.close()


@contextmanager
def running_system(
    root: Path, *group_flags: str, python: str = sys.executable, core_settings: str = ""
) -> Iterator[System]:
    """A cloud, the group ``factory-1`` (``group_flags`` to ``group create``) and its core,
    running (``python``'s ``hedgerow``; ``core_settings``, TOML merged into the core's
    config); every process is stopped on exit, and the logs are printed if the test failed."""
    with running_cloud(root, python=python, core_settings=core_settings) as s:
        s.create_group_and_core(*group_flags)
        s.start_core()
        yield s


def thing_readings_through_external_broker(
    system: System, state_dir: Path, thing: str, broker: str
) -> list[dict[str, Any]]:
    """The started core's link up through an external ``broker``, a deployment with a
    thing routed to the cloud answered back through it, and the thing's readings stored
    in the cloud: what they were (at least five)."""
    wait_until(
        lambda: system.metrics().get("hedgerow_core_cloud_connected") == 1,
        timeout=60,
        what=f"the core's link through {broker}",
    )
    system.create_thing(thing)
    system.route(f"thing:{thing}", "sensors/#", "cloud")
    deployed = system.deploy()  # --wait: the core's Success came back through the broker
    assert "Success" in deployed.stdout, deployed.stdout
    system.start(
        thing,
        [
            sys.executable, "-m", "hedgerow", "thing", "run", *system.thing_args(thing),
            "-id", thing, "-t", f"sensors/{thing}", "--sensor", "sim",
            "--interval", "0.2", "--quiet", "--state-dir", str(state_dir),
        ],
    )  # fmt: skip
    readings: list[dict[str, Any]] = wait_until(
        lambda: len(found := system.messages("sensors/#")) >= 5 and found,
        timeout=60,
        what="readings in the cloud's store",
    )
    return readings
