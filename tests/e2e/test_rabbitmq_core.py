"""A real core process whose cloud runs on RabbitMQ 3.10 (MQTT 3.1.1 only, the HTTP auth
backend asking the cloud): a deployment reaches the core, a thing's readings travel
thing → core → RabbitMQ → cloud store, named by the core in their topic, and once the core
is revoked its link is cut and its reconnects are refused at RabbitMQ."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import (
    CORE,
    System,
    add_config_settings,
    thing_readings_through_external_broker,
    wait_until,
)
from tests.rabbitmq import BROKER_URL, TEST_TIMEOUT_S, rabbitmq_turn

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.timeout(TEST_TIMEOUT_S)]

THING = "bme-1"
#: the revoked core's link ends within this (the cloud takes its client id over at once)
REVOCATION_BOUND_S = 15.0
CLOUD_ON_RABBITMQ = f"""
[mqtt]
broker = "{BROKER_URL}"
broker_protocol = "3.1.1"
broker_login = "password"
"""


def test_a_core_on_rabbitmq_deploys_sends_telemetry_and_is_cut_off_when_revoked(
    tmp_path: Path,
) -> None:
    system = System(tmp_path)
    system.init_cloud()
    add_config_settings(system.cloud_dir / "config.toml", CLOUD_ON_RABBITMQ)
    with rabbitmq_turn(system.cloud_dir, f"http://127.0.0.1:{system.api_port}") as rabbit:
        try:
            cloud = system.start(
                "cloud",
                system.hedgerow(
                    "cloud", "serve", "--data", str(system.cloud_dir),
                    "--replica-id", rabbit.replica("e2e"),
                ),
            )  # fmt: skip
            wait_until(
                lambda: "mqtt.external_connected" in cloud.output() or cloud.popen.poll(),
                timeout=60,
                what="the cloud's link to RabbitMQ",
            )
            assert cloud.popen.poll() is None, cloud.output()

            # serve prints where the broker asks (the URLs RabbitMQ was given)
            token = rabbit.secret.path_token()
            assert f"/api/v1/broker-auth/{token}/{{user,vhost,resource,topic}}" in cloud.output()
            system.create_group_and_core()
            system.start_core()
            config = tmp_path / "core" / "config.toml"
            assert "mqtt_password" in config.read_text()
            assert config.stat().st_mode & 0o777 == 0o600, "the broker password is owner-only"
            readings = thing_readings_through_external_broker(
                system, tmp_path / "thing-state", THING, "RabbitMQ"
            )
            assert {m["topic"] for m in readings} == {f"sensors/{THING}"}
            assert {m["core"] for m in readings} == {CORE}

            # revoked in the cloud: cut off at RabbitMQ, and its reconnects refused there
            (fingerprint,) = [
                c["fingerprint"]
                for c in system.api("/api/v1/certificates", owner=CORE, kind="core")["items"]
            ]
            refused = f"broker_auth.denied question=user user={CORE} "
            refused_before = cloud.output().count(refused)
            with system._http() as http:
                http.post(f"/api/v1/certificates/{fingerprint}/revoke").raise_for_status()
            wait_until(
                lambda: system.metrics().get("hedgerow_core_cloud_connected") == 0,
                timeout=REVOCATION_BOUND_S,
                what="the revoked core's link to end",
            )
            wait_until(
                lambda: cloud.output().count(refused) > refused_before,
                timeout=60,
                what="RabbitMQ to ask about the revoked core's reconnect (and be refused)",
            )
            assert system.metrics().get("hedgerow_core_cloud_connected") == 0
        except BaseException:
            print(system.logs())
            raise
        finally:
            system.close()
