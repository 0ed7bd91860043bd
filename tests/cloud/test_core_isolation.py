"""One core cannot hear another (issue 12, item 5), against the real cloud MQTT endpoint.

Two groups, each with its core. ``factory-1`` routes ``#`` from the cloud to a thing, the
widest route a group can have; its core ``pi-1`` then tries to reach ``pi-2`` of
``factory-2``: its ``$hedgerow`` topics (refused at SUBSCRIBE: v5 0x87, 3.1.1 0x80) and its
telemetry (granted ``#``, but a core hears only what the cloud publishes).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from hedgerow.client import ProtocolVersion, PublishError, SubscribeError
from hedgerow.contract import DeploymentNotification
from hedgerow.mqtt.packets import Properties
from hedgerow.mqtt.reasons import ReasonCode

from .conftest import Cloud
from .test_core_link import WAIT, core_client

NOT_AUTHORIZED_V311 = 0x80


async def two_groups(cloud: Cloud, tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    certs: dict[str, tuple[Path, Path]] = {}
    for group, core, thing in (("factory-1", "pi-1", "t-1"), ("factory-2", "pi-2", "t-2")):
        await cloud.ok("POST", "/api/v1/groups", json={"name": group})
        certs[core] = await cloud.core(core, group, tmp_path)
        await cloud.ok("POST", "/api/v1/things", json={"name": thing, "groups": [group]})
    await cloud.ok(
        "POST",
        "/api/v1/groups/factory-1/subscriptions",
        json={"source": "cloud", "topic": "#", "target": "thing:t-1"},
    )
    await cloud.ok(
        "POST",
        "/api/v1/groups/factory-2/subscriptions",
        json={"source": "thing:t-2", "topic": "plant-2/#", "target": "cloud"},
    )
    await cloud.server.routes.refresh()
    return certs


async def test_a_core_cannot_subscribe_to_another_cores_topics(
    cloud: Cloud, tmp_path: Path
) -> None:
    certs = await two_groups(cloud, tmp_path)
    deployment = await cloud.ok("POST", "/api/v1/groups/factory-2/deployments", json={})
    async with core_client(cloud, *certs["pi-1"], name="pi-1") as pi1:
        for topic_filter in (
            "$hedgerow/cores/pi-2/#",
            "$hedgerow/cores/pi-2/deployments",
            "$hedgerow/cores/+/deployments",
            "$hedgerow/#",
            "$share/g/$hedgerow/cores/pi-2/deployments",
        ):
            with pytest.raises(SubscribeError) as refused:
                await pi1.subscribe(topic_filter, qos=1)
            assert refused.value.reason_codes == (ReasonCode.NOT_AUTHORIZED,), topic_filter
        # its own namespace stays open: the retained notice of its own group arrives
        await pi1.subscribe("$hedgerow/cores/pi-1/#", qos=1)
        mine = await cloud.ok("POST", "/api/v1/groups/factory-1/deployments", json={})
        async with asyncio.timeout(WAIT):  # its group's member list may come first
            own = await pi1.get_message()
            while own.topic != "$hedgerow/cores/pi-1/deployments":
                assert own.topic.startswith("$hedgerow/cores/pi-1/"), own.topic
                own = await pi1.get_message()
        notice = DeploymentNotification.from_json(own.payload)
        assert notice.deployment_id == mine["deployment_id"] != deployment["deployment_id"]

    # the same with MQTT 3.1.1: SUBACK 0x80
    async with core_client(
        cloud, *certs["pi-1"], name="pi-1-v311", version=ProtocolVersion.V311
    ) as pi1:
        with pytest.raises(SubscribeError) as refused:
            await pi1.subscribe("$hedgerow/cores/pi-2/#", qos=1)
        assert refused.value.reason_codes == (NOT_AUTHORIZED_V311,)


async def test_a_core_granted_hash_hears_the_cloud_and_no_other_core(
    cloud: Cloud, tmp_path: Path
) -> None:
    certs = await two_groups(cloud, tmp_path)
    await cloud.ok("POST", "/api/v1/groups/factory-2/deployments", json={})
    async with (
        core_client(cloud, *certs["pi-1"], name="pi-1") as pi1,
        core_client(cloud, *certs["pi-2"], name="pi-2") as pi2,
    ):
        await pi1.subscribe("#", qos=1)  # covered by factory-1's route from the cloud
        # pi-2's telemetry (routed to the cloud) is stored, and pi-1 does not hear it
        user = Properties(user_properties=(("core", "pi-2"),))
        await pi2.publish("plant-2/line/temp", b'{"t": 21}', qos=1, properties=user)
        await pi2.publish("$hedgerow/cores/pi-2/heartbeat", b'{"uptime": 5}', qos=1)
        await cloud.server.ingest.flushed()
        stored = await cloud.ok("GET", "/api/v1/messages", params={"filter": "plant-2/#"})
        assert [m["topic"] for m in stored["items"]] == ["plant-2/line/temp"]
        # what the cloud publishes reaches pi-1: the first message it gets is the cloud's
        await cloud.ok(
            "POST",
            "/api/v1/messages/publish",
            json={"topic": "plant-2/line/setpoint", "payload": {"t": 20}},
        )
        async with asyncio.timeout(WAIT):
            heard = await pi1.get_message()
        # (pi-2's message went through the broker first: had it been delivered, it would
        # have been the first message in pi-1's inbox)
        assert heard.topic == "plant-2/line/setpoint" and json.loads(heard.payload) == {"t": 20}


async def test_a_core_hears_no_retained_message_of_another_core(
    cloud: Cloud, tmp_path: Path
) -> None:
    """A retained message goes to later subscribers from the broker's store, not from the
    publish: it must be asked about like any other core-to-core delivery."""
    certs = await two_groups(cloud, tmp_path)
    async with core_client(cloud, *certs["pi-2"], name="pi-2") as pi2:
        await pi2.publish("plant-2/setpoint", b"from pi-2", qos=1, retain=True)
    await cloud.ok(  # the cloud's own retained message is for every core its routes reach
        "POST",
        "/api/v1/messages/publish",
        json={"topic": "plant-2/mode", "payload": "from the cloud", "retain": True},
    )
    async with core_client(cloud, *certs["pi-1"], name="pi-1") as pi1:
        await pi1.subscribe("plant-2/#", qos=1)
        async with asyncio.timeout(WAIT):
            heard = await pi1.get_message()
        # retained messages are sent in one go on SUBACK: pi-2's would come with it
        await pi1.subscribe("plant-2/mode", qos=1)
        async with asyncio.timeout(WAIT):
            again = await pi1.get_message()
    assert (heard.topic, heard.payload, heard.retain) == ("plant-2/mode", b"from the cloud", True)
    assert again.topic == "plant-2/mode"


async def test_a_core_publishes_only_its_own_reports_under_hedgerow(
    cloud: Cloud, tmp_path: Path
) -> None:
    certs = await two_groups(cloud, tmp_path)
    async with core_client(cloud, *certs["pi-1"], name="pi-1") as pi1:
        for topic in (
            "$hedgerow/cores/pi-1/deployments",  # the cloud's topic, even in its own namespace
            "$hedgerow/cores/pi-1/other",
            "$hedgerow/cores/pi-2/heartbeat",
            "$hedgerow/cores/pi-2/deployment-status",
            "$SYS/broker/x",
        ):
            with pytest.raises(PublishError) as refused:
                await pi1.publish(topic, b"{}", qos=1)
            assert refused.value.reason_code == ReasonCode.NOT_AUTHORIZED, topic
        await pi1.publish("$hedgerow/cores/pi-1/heartbeat", b'{"uptime": 1}', qos=1)
        async with asyncio.timeout(WAIT):
            while (await cloud.ok("GET", "/api/v1/cores/pi-1"))["heartbeat"] is None:
                await asyncio.sleep(0.05)
    assert (await cloud.ok("GET", "/api/v1/cores/pi-2"))["heartbeat"] is None
