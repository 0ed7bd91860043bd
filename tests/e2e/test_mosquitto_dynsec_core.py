"""A real core process whose cloud runs on a private Mosquitto 2.0 with the dynamic
security plugin kept by the cloud (``broker_login = "mosquitto-dynsec"``): a deployment
reaches the core, a thing's readings travel thing → core → Mosquitto → cloud store, and
once the core is revoked its link is cut and Mosquitto itself refuses its reconnects."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cloud.test_mosquitto_dynsec import MosquittoDynsec
from tests.e2e.harness import (
    CORE,
    System,
    add_config_settings,
    port_open,
    thing_readings_through_external_broker,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.mosquitto]

THING = "bme-1"
#: the revoked core's link ends within this
REVOCATION_BOUND_S = 15.0


def test_a_core_on_dynsec_mosquitto_deploys_sends_telemetry_and_is_refused_when_revoked(
    tmp_path: Path,
) -> None:
    system = System(tmp_path)
    system.init_cloud()
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    mosquitto = MosquittoDynsec(broker_dir)
    mosquitto.init(system.cloud_dir)  # hedgerow cloud dynsec-init
    port = mosquitto(system.cloud_dir)
    wait_until(lambda: port_open(port), timeout=20, what="Mosquitto")
    add_config_settings(
        system.cloud_dir / "config.toml",
        f'[mqtt]\nbroker = "mqtts://127.0.0.1:{port}"\nbroker_login = "mosquitto-dynsec"\n',
    )
    log = broker_dir / "mosquitto.log"
    try:
        cloud = system.start(
            "cloud", system.hedgerow("cloud", "serve", "--data", str(system.cloud_dir))
        )
        wait_until(
            lambda: "mqtt.external_connected" in cloud.output() or cloud.popen.poll(),
            timeout=60,
            what="the cloud's link to Mosquitto",
        )
        assert cloud.popen.poll() is None, cloud.output()
        assert "Mosquitto dynamic security, kept by the cloud" in cloud.output()

        system.create_group_and_core()
        system.start_core()
        assert "mqtt_password" in (tmp_path / "core" / "config.toml").read_text()
        readings = thing_readings_through_external_broker(
            system, tmp_path / "thing-state", THING, "Mosquitto"
        )
        assert {m["core"] for m in readings} == {CORE}

        # revoked in the cloud: cut off at Mosquitto, and its reconnects refused there
        (fingerprint,) = [
            c["fingerprint"]
            for c in system.api("/api/v1/certificates", owner=CORE, kind="core")["items"]
        ]
        # (Mosquitto names no client id it refused: count the refusals from now)
        refused = "disconnected, not authorised."
        refused_before = log.read_text().count(refused)
        with system._http() as http:
            http.post(f"/api/v1/certificates/{fingerprint}/revoke").raise_for_status()
        wait_until(
            lambda: system.metrics().get("hedgerow_core_cloud_connected") == 0,
            timeout=REVOCATION_BOUND_S,
            what="the revoked core's link to end",
        )
        wait_until(
            lambda: log.read_text().count(refused) >= refused_before + 2,
            timeout=60,
            what="Mosquitto to refuse the revoked core's reconnect",
        )
        assert system.metrics().get("hedgerow_core_cloud_connected") == 0
    except BaseException:
        print(system.logs())
        print(log.read_text()[-3000:])
        raise
    finally:
        system.close()
        mosquitto.stop()
