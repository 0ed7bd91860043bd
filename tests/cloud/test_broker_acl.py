"""The rules an external broker's questions are answered by (pure: no broker, no HTTP)."""

from __future__ import annotations

from pathlib import Path

from hedgerow.cloud.broker_acl import (
    Access,
    CoreStanding,
    Routes,
    core_login_allowed,
    may_publish,
    resource_allowed,
    topic_allowed,
)
from hedgerow.cloud.broker_credentials import CLOUD_USER, BrokerSecret, load_or_create
from hedgerow.cloud.routing_keys import routing_key_from_topic, topic_from_routing_key
from hedgerow.contract.topics import parse_routed_topic, routed_topic

GW = CoreStanding("gw", "plant", "ab" * 32)
ROUTES = Routes(to_cloud=("plant/#",), from_cloud=("commands/plant/+",))


def test_routed_topics_name_their_core() -> None:
    assert routed_topic("gw", "plant/1") == "$hedgerow/cores/gw/routed/plant/1"
    parsed = parse_routed_topic("$hedgerow/cores/gw/routed/plant/1")
    assert parsed is not None and (parsed.core, parsed.topic) == ("gw", "plant/1")
    for other in (
        "$hedgerow/cores/gw/routed",
        "$hedgerow/cores/gw/routed/",
        "$hedgerow/cores/gw/heartbeat",
        "$hedgerow/cores/+/routed/x",
        "$hedgerow/cores/gw/routed/$SYS/x",
        "plant/1",
    ):
        assert parse_routed_topic(other) is None, other


def test_rabbitmq_routing_keys_read_back_as_topics_and_filters() -> None:
    assert topic_from_routing_key("$hedgerow.cores.gw.routed.plant.1") == (
        "$hedgerow/cores/gw/routed/plant/1"
    )
    assert topic_from_routing_key("commands.*.x.#") == "commands/+/x/#"


def test_topics_are_written_as_routing_keys_the_way_they_are_read_back() -> None:
    assert routing_key_from_topic("$hedgerow/cores/gw/routed/plant/1") == (
        "$hedgerow.cores.gw.routed.plant.1"
    )
    assert routing_key_from_topic("commands/+/x/#") == "commands.*.x.#"
    for topic in ("a/b/c", "sensors/+/t", "#", "a//b"):
        assert topic_from_routing_key(routing_key_from_topic(topic)) == topic


def test_a_core_publishes_its_own_routed_telemetry_and_status_only() -> None:
    def publish(topic: str, client_id: str = "gw") -> bool:
        return topic_allowed(GW, ROUTES, client_id, Access.WRITE, topic)

    assert publish("$hedgerow/cores/gw/routed/plant/1")
    assert publish("$hedgerow/cores/gw/heartbeat")
    assert publish("plant/1")  # MQTT 5 cores send it plain
    assert not publish("$hedgerow/cores/other/routed/plant/1")
    assert not publish("$hedgerow/cores/other/heartbeat")
    # its own prefix whatever the routes (RabbitMQ refuses only by closing the connection,
    # which would stall a spool holding a record whose route was removed since)
    assert publish("$hedgerow/cores/gw/routed/elsewhere/1")
    assert not may_publish("gw", ROUTES.to_cloud, "$hedgerow/cores/gw/routed/elsewhere/1")
    assert not publish("$hedgerow/cores/gw/deployments")  # the cloud's to publish
    assert not publish("$hedgerow/cores/gw/heartbeat", client_id="other")
    assert may_publish("gw", ROUTES.to_cloud, "$hedgerow/cores/gw/routed/plant/x")


def test_a_core_subscribes_to_its_own_namespace_and_its_routes_from_the_cloud() -> None:
    def subscribe(topic_filter: str) -> bool:
        return topic_allowed(GW, ROUTES, "gw", Access.READ, topic_filter)

    assert subscribe("$hedgerow/cores/gw/deployments")
    assert subscribe("commands/plant/reboot")
    assert not subscribe("$hedgerow/cores/other/deployments")
    assert not subscribe("$hedgerow/cores/+/routed/#")
    assert not subscribe("#")
    assert not subscribe("$share/g/#")


def test_no_standing_no_topic() -> None:
    assert not topic_allowed(None, ROUTES, "gw", Access.READ, "$hedgerow/cores/gw/deployments")


def test_logins_and_resources() -> None:
    assert core_login_allowed(GW, "gw", True)
    assert not core_login_allowed(GW, "gw", False)
    assert not core_login_allowed(GW, "someone-else", True)
    assert not core_login_allowed(None, "gw", True)
    assert resource_allowed("gw", "queue", "mqtt-subscription-gwqos1")
    assert resource_allowed("gw", "exchange", "amq.topic")
    assert not resource_allowed("gw", "queue", "mqtt-subscription-otherqos1")
    assert not resource_allowed("gw", "exchange", "amq.direct")
    assert resource_allowed(CLOUD_USER, "queue", "anything")


def test_credentials_derive_from_one_secret(tmp_path: Path) -> None:
    secret = load_or_create(tmp_path / "secret")
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
    again = load_or_create(tmp_path / "secret")
    assert again == secret
    assert secret.token_matches(secret.path_token())
    assert not secret.token_matches(secret.path_token()[:-1] + "x")
    passwords = {
        secret.cloud_password(),
        secret.core_password("gw", "aa"),
        secret.core_password("gw", "bb"),  # a new identity: a new password
        secret.core_password("gx", "aa"),
        BrokerSecret(b"other").core_password("gw", "aa"),
    }
    assert len(passwords) == 5
