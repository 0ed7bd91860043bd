"""The current AWS IoT Device SDK (awsiotsdk on awscrt) as a device of a Hedgerow core.

Discovery with ``awsiot.greengrass_discovery.DiscoveryClient`` against the Hedgerow cloud
(``gg_server_name`` and ``port`` set, as compat.md says), then the group CA and endpoint it
returned, and the SDK's own MQTT client publishing through the core to the cloud: MQTT 5
(the current sample) and MQTT 3.1.1 with a persistent session (the older sample).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from awscrt import mqtt, mqtt5
from awsiot import mqtt5_client_builder, mqtt_connection_builder

from tests.e2e.harness import CORE, WAIT, System, core_endpoint, running_system, wait_until

pytestmark = pytest.mark.slow


def stored(system: System, thing: str) -> list[dict[str, object]]:
    return system.messages(f"sensors/{thing}")


def test_awsiotsdk_mqtt5_device_publishes_through_the_core_and_survives_its_restart(
    tmp_path: Path,
) -> None:
    thing = "crt-5"
    with running_system(tmp_path) as system:
        system.create_thing(thing)
        system.route(f"thing:{thing}", "sensors/#", "cloud")
        system.deploy()
        host, port, ca = core_endpoint(system, thing, tmp_path)

        connections = threading.Semaphore(0)
        stopped = threading.Event()
        failures: list[str] = []
        client = mqtt5_client_builder.mtls_from_path(
            endpoint=host,
            port=port,
            cert_filepath=str(system.certs / f"{thing}.cert.pem"),
            pri_key_filepath=str(system.certs / f"{thing}.key"),
            ca_filepath=str(ca),
            client_id=thing,
            on_lifecycle_connection_success=lambda data: connections.release(),
            on_lifecycle_connection_failure=lambda data: failures.append(str(data.exception)),
            on_lifecycle_stopped=lambda data: stopped.set(),
        )

        def publish(seqs: range) -> None:
            for seq in seqs:
                payload = json.dumps({"thing": thing, "seq": seq, "sdk": "awsiotsdk-mqtt5"})
                result = client.publish(
                    mqtt5.PublishPacket(
                        topic=f"sensors/{thing}", payload=payload, qos=mqtt5.QoS.AT_LEAST_ONCE
                    )
                ).result(WAIT)
                assert result.puback.reason_code == mqtt5.PubackReasonCode.SUCCESS

        client.start()
        try:
            assert connections.acquire(timeout=WAIT), f"the client did not connect: {failures}"
            publish(range(5))
            # the core restarts under the device; the SDK reconnects on its own
            system.procs["core"].kill9()
            system.start_core(first=False)
            assert connections.acquire(timeout=60), f"the client did not reconnect: {failures}"
            publish(range(5, 10))
        finally:
            client.stop()
            assert stopped.wait(WAIT)

        def seqs_of(messages: list[dict[str, object]]) -> list[int]:
            return sorted(json.loads(str(m["payload"]))["seq"] for m in messages)

        messages = wait_until(
            lambda: (m := stored(system, thing)) and set(seqs_of(m)) == set(range(10)) and m,
            timeout=30,
            what="the MQTT 5 device's ten readings in the cloud",
        )
        # at least once: a reading the core had sent but not yet seen acknowledged when it
        # was killed is sent again after the restart; only those five can repeat
        seqs = seqs_of(messages)
        duplicates = len(seqs) - len(set(seqs))
        assert set(seqs) == set(range(10)) and duplicates <= 5, seqs
        assert all(seqs.count(n) == 1 for n in range(5, 10)), seqs
        assert {m["core"] for m in messages} == {CORE}


def test_awsiotsdk_mqtt311_persistent_session_device_publishes_through_the_core(
    tmp_path: Path,
) -> None:
    thing = "crt-311"
    with running_system(tmp_path) as system:
        system.create_thing(thing)
        system.route(f"thing:{thing}", "sensors/#", "cloud")
        system.deploy()
        host, port, ca = core_endpoint(system, thing, tmp_path)

        connection = mqtt_connection_builder.mtls_from_path(
            endpoint=host,
            port=port,
            cert_filepath=str(system.certs / f"{thing}.cert.pem"),
            pri_key_filepath=str(system.certs / f"{thing}.key"),
            ca_filepath=str(ca),
            client_id=thing,
            clean_session=False,
            keep_alive_secs=30,
        )
        connection.connect().result(WAIT)
        try:
            for seq in range(5):
                payload = json.dumps({"thing": thing, "seq": seq, "sdk": "awsiotsdk-mqtt311"})
                future, _ = connection.publish(
                    topic=f"sensors/{thing}", payload=payload, qos=mqtt.QoS.AT_LEAST_ONCE
                )
                future.result(WAIT)  # resolved on PUBACK
        finally:
            connection.disconnect().result(WAIT)

        messages = wait_until(
            lambda: (m := stored(system, thing)) and len(m) >= 5 and m,
            timeout=30,
            what="the MQTT 3.1.1 device's five readings in the cloud",
        )
        assert sorted(json.loads(m["payload"])["seq"] for m in messages) == [0, 1, 2, 3, 4]
        assert {m["core"] for m in messages} == {CORE}
