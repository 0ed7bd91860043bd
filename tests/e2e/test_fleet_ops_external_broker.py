"""Fleet operations when cores talk to an external broker (``[mqtt] broker``, the scale-out
mode), with real processes: a private TLS Mosquitto on a free port, ``hedgerow cloud serve``
linked to it, and ``hedgerow core run`` whose bundle points at it.

A function's log lines reach the cloud through Mosquitto, and when the core is killed the
broker publishes the core's will (its presence, ``connected: false``): the cloud says the
core is down and the core-offline alert reaches a real webhook, signed.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hedgerow.cloud.alerting import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.conftest import free_port
from tests.e2e.harness import (
    CORE,
    GROUP,
    System,
    add_config_settings,
    port_open,
    wait_until,
)
from tests.e2e.test_fleet_ops import SECRET, TICKER, _function, _ticks, webhook_server

pytestmark = [pytest.mark.slow, pytest.mark.mosquitto]


@contextmanager
def mosquitto(root: Path, pki: Path) -> Iterator[int]:
    """A private Mosquitto with mutual TLS against the cloud's root CA, on a free loopback
    port (never 1883), serving the cloud's server certificate."""
    port = free_port()
    conf = root / "mosquitto.conf"
    conf.write_text(
        "\n".join(
            [
                f"listener {port} 127.0.0.1",
                "user root",  # as root it would switch to "mosquitto", who cannot read pki/
                f"cafile {pki / 'root-ca.pem'}",
                f"certfile {pki / 'server.cert.pem'}",
                f"keyfile {pki / 'server.key'}",
                "require_certificate true",
                "use_identity_as_username true",
                "persistence false",
                "log_dest stdout",
                "",
            ]
        )
    )
    with (root / "mosquitto.log").open("wb") as log:
        process = subprocess.Popen(
            [shutil.which("mosquitto") or "mosquitto", "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_until(
            lambda: port_open(port) or process.poll() is not None,
            timeout=15, what="mosquitto's port",
        )  # fmt: skip
        assert process.poll() is None, (root / "mosquitto.log").read_text()
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextmanager
def system_on_an_external_broker(root: Path) -> Iterator[tuple[System, int]]:
    """A cloud whose cores talk to a private Mosquitto, the group factory-1 and its core."""
    system = System(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        system.init_cloud()
        with mosquitto(root, system.cloud_dir / "pki") as port:
            add_config_settings(
                system.cloud_dir / "config.toml", f'[mqtt]\nbroker = "mqtts://127.0.0.1:{port}"\n'
            )
            system.start(
                "cloud", system.hedgerow("cloud", "serve", "--data", str(system.cloud_dir))
            )
            for listener in (system.api_port, system.device_port):
                wait_until(functools.partial(port_open, listener), timeout=60,
                           what=f"cloud port {listener}")  # fmt: skip
            wait_until(lambda: "mqtt.external_connected" in system.procs["cloud"].output(),
                       timeout=30, what="the cloud's link to mosquitto")  # fmt: skip
            system.create_group_and_core()
            system.start_core()
            try:
                yield system, port
            finally:
                system.close()
    except BaseException:
        print(system.logs())
        print((root / "mosquitto.log").read_text(errors="replace")[-3000:])
        raise
    finally:
        system.close()


def test_logs_and_the_offline_alert_through_an_external_broker(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    with (
        webhook_server() as (hook_url, received),
        system_on_an_external_broker(tmp_path / "sys") as (system, port),
    ):
        bundle_config = (system.root / "core" / "config.toml").read_text()
        assert f"mqtts://127.0.0.1:{port}" in bundle_config  # the core talks to mosquitto
        _function(system, code, "ticker", TICKER, "--pinned")
        system.deploy()
        system.cloud("alert", "rule", "add", "offline", "--kind", "core-offline",
                     "--threshold", "1")  # fmt: skip
        system.cloud("alert", "webhook", "add", "ops", hook_url, "--secret", SECRET)

        # the function's lines reach the cloud through mosquitto
        wait_until(lambda: len(_ticks(system)) >= 10, timeout=30, what="ticks in the cloud")
        ticks = _ticks(system)
        assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), ticks
        shown = system.cloud("logs", "--group", GROUP, "--function", "ticker").stdout
        assert re.search(r"function:ticker.*tick \d+", shown), shown[-2000:]

        # the core reports its presence there: connected
        wait_until(lambda: system.api(f"/api/v1/cores/{CORE}")["connected"] is True,
                   timeout=10, what="connected: true")  # fmt: skip
        assert received.empty(), "an alert before the core went down"

        # kill -9: mosquitto publishes the core's will; down, and the alert is delivered
        killed_at = time.time()
        system.procs["core"].kill9()
        killed = time.monotonic()
        wait_until(
            lambda: system.api(f"/api/v1/cores/{CORE}")["connected"] is False,
            timeout=10, what="connected: false", interval=0.05,
        )  # fmt: skip
        down_s = time.monotonic() - killed
        headers, body = received.get(timeout=15)
        alerted_s = time.monotonic() - killed
        assert verify(SECRET, headers[TIMESTAMP_HEADER.lower()], body,
                      headers[SIGNATURE_HEADER.lower()])  # fmt: skip
        alert = json.loads(body)
        assert alert["state"] == "firing", alert
        assert alert["alert"]["subject"] == CORE and alert["alert"]["kind"] == "core-offline"
        assert alert["alert"]["fired_at"] >= killed_at
        print(f"external broker: down in the cloud {down_s:.2f} s after kill -9, "
              f"alert at the webhook after {alerted_s:.2f} s")  # fmt: skip
        assert down_s <= 3.0
        listing = system.cloud("core", "list").stdout
        assert re.search(rf"^{CORE}\s+{GROUP}\s+DOWN\s", listing, re.M), listing

        # back: connected again, and the alert resolves
        system.start_core(first=False)
        wait_until(lambda: system.api(f"/api/v1/cores/{CORE}")["connected"] is True,
                   timeout=30, what="connected again")  # fmt: skip
        headers, body = received.get(timeout=15)
        assert json.loads(body)["state"] == "resolved"
        assert verify(SECRET, headers[TIMESTAMP_HEADER.lower()], body,
                      headers[SIGNATURE_HEADER.lower()])  # fmt: skip
