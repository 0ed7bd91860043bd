"""A core's side of the contract: device HTTPS (/core/v1) and the cloud MQTT endpoint."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from hedgerow import pki
from hedgerow.client import Client, ConnectError, ProtocolVersion, SubscribeError
from hedgerow.contract import DeploymentNotification
from hedgerow.mqtt.packets import Properties

from .conftest import Cloud
from .test_api import code_zip, upload

WAIT = 5.0


@asynccontextmanager
async def core_client(
    cloud: Cloud,
    cert: Path,
    key: Path,
    name: str = "pi-1",
    version: ProtocolVersion = ProtocolVersion.V5,
) -> AsyncIterator[Client]:
    ctx = pki.client_context(str(cloud.root_ca), str(cert), str(key))
    async with Client(
        "127.0.0.1", cloud.mqtt_port, ssl=ctx, client_id=name, version=version
    ) as client:
        yield client


async def setup_group(cloud: Cloud, tmp_path: Path) -> tuple[Path, Path, str]:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "factory-1"})
    cert, key = await cloud.core("pi-1", "factory-1", tmp_path)
    await cloud.ok("POST", "/api/v1/things", json={"name": "bme680-1", "groups": ["factory-1"]})
    sha = await upload(cloud)
    await cloud.ok(
        "POST",
        "/api/v1/groups/factory-1/functions",
        json={
            "name": "temp-correct",
            "handler": "temp_correct.handler",
            "artifact": sha,
            "pinned": True,
        },
    )
    await cloud.ok(
        "POST",
        "/api/v1/groups/factory-1/subscriptions",
        json={"source": "function:temp-correct", "topic": "corrected/#", "target": "cloud"},
    )
    await cloud.ok(
        "POST",
        "/api/v1/groups/factory-1/subscriptions",
        json={"source": "cloud", "topic": "commands/pi-1/#", "target": "function:temp-correct"},
    )
    return cert, key, sha


async def test_core_certificate_connectivity_and_revocations(cloud: Cloud, tmp_path: Path) -> None:
    cert, key, _ = await setup_group(cloud, tmp_path)
    server_key = pki.new_key()
    csr = pki.make_csr(server_key, "pi-1").decode()
    async with cloud.device_client(cert, key) as device:
        no_hosts = await device.post("/core/v1/certificate", json={"csr": csr})
        assert no_hosts.status_code == 400 and "hosts" in no_hosts.json()["message"]
        assert (
            await device.put(
                "/core/v1/connectivity",
                json={"endpoints": [{"host": "192.168.1.20", "port": 8883}]},
            )
        ).json() == {}
        signed = (
            await device.post("/core/v1/certificate", json={"csr": csr, "hosts": ["pi-1.local"]})
        ).json()
        server_cert = pki.cert_from_pem(signed["certificate"].encode())
        assert sorted(pki.server_hosts_of(server_cert)) == ["192.168.1.20", "pi-1.local"]
        group_ca = pki.cert_from_pem(signed["group_cas"][0].encode())
        assert pki.is_signed_by(server_cert, group_ca)
        assert server_cert.public_key() == server_key.public_key()
        assert (await device.get("/core/v1/revocations")).json() == {"fingerprints": []}
        latest = await device.get("/core/v1/deployments/latest")
        assert latest.status_code == 404 and "no deployment" in latest.json()["message"]
        malformed = await device.put("/core/v1/connectivity", content=b"{")
        assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["message"]
        nowhere = await device.get("/core/v1/nowhere")
        assert nowhere.status_code == 404
        huge = await device.put("/core/v1/connectivity", content=b" " * (1024 * 1024 + 10))
        assert huge.status_code == 413 and "over" in huge.json()["message"]
    core = await cloud.ok("GET", "/api/v1/cores/pi-1")
    assert core["endpoints"] == [{"host": "192.168.1.20", "port": 8883, "metadata": ""}]

    thing_cert, thing_key = await cloud.thing("sensor-9", ["factory-1"], tmp_path)
    async with cloud.device_client(thing_cert, thing_key) as device:
        refused = await device.get("/core/v1/revocations")
    assert refused.status_code == 403 and "thing certificate" in refused.json()["message"]


async def test_deployment_over_mqtt_and_https(cloud: Cloud, tmp_path: Path) -> None:
    cert, key, sha = await setup_group(cloud, tmp_path)
    async with core_client(cloud, cert, key) as core:
        await core.subscribe("$hedgerow/cores/pi-1/deployments", qos=1)
        deployment = await cloud.ok("POST", "/api/v1/groups/factory-1/deployments", json={})
        async with asyncio.timeout(WAIT):
            notice = await core.get_message()
        assert json.loads(notice.payload) == {
            "schema": 1,
            "deployment_id": deployment["deployment_id"],
        }

        async with cloud.device_client(cert, key) as device:
            latest = (await device.get("/core/v1/deployments/latest")).json()
            assert latest == {"deployment_id": deployment["deployment_id"]}
            signed = (
                await device.get(f"/core/v1/deployments/{deployment['deployment_id']}")
            ).json()
            verify = pki.verify_key_from_pem(
                (cloud.data / "pki" / "deploy-verify.pem").read_bytes()
            )
            verify.verify(base64.b64decode(signed["signature"]), signed["document"].encode())
            document = json.loads(signed["document"])
            assert (
                document["core"] == "pi-1" and document["functions"][0]["artifact"]["sha256"] == sha
            )
            artifact = await device.get(f"/core/v1/artifacts/{sha}")
            assert artifact.headers["content-type"] == "application/zip"
            assert (
                hashlib.sha256(artifact.content).hexdigest() == sha
                and artifact.content == code_zip()
            )

        for status, detail in (("InProgress", ""), ("Success", "1 function running")):
            await core.publish(
                "$hedgerow/cores/pi-1/deployment-status",
                json.dumps(
                    {
                        "deployment_id": deployment["deployment_id"],
                        "status": status,
                        "detail": detail,
                    }
                ),
                qos=1,
            )
        async with asyncio.timeout(WAIT):
            while (await cloud.ok("GET", f"/api/v1/deployments/{deployment['deployment_id']}"))[
                "status"
            ] != "Success":
                await asyncio.sleep(0.05)
        shown = await cloud.ok("GET", f"/api/v1/deployments/{deployment['deployment_id']}")
        assert [e["status"] for e in shown["events"]] == ["Pending", "InProgress", "Success"]
        assert shown["detail"] == "1 function running"

    # a core that connects later still gets the notice (retained)
    async with core_client(cloud, cert, key) as core:
        await core.subscribe("$hedgerow/cores/pi-1/deployments", qos=1)
        async with asyncio.timeout(WAIT):
            assert (
                json.loads((await core.get_message()).payload)["deployment_id"]
                == deployment["deployment_id"]
            )

    # another group's core sees neither the document nor the artifact
    await cloud.ok("POST", "/api/v1/groups", json={"name": "other"})
    other_cert, other_key = await cloud.core("other-core", "other", tmp_path)
    async with cloud.device_client(other_cert, other_key) as device:
        assert (
            await device.get(f"/core/v1/deployments/{deployment['deployment_id']}")
        ).status_code == 404
        assert (await device.get(f"/core/v1/artifacts/{sha}")).status_code == 404


async def test_telemetry_is_stored_and_namespaces_are_enforced(
    cloud: Cloud, tmp_path: Path
) -> None:
    cert, key, _ = await setup_group(cloud, tmp_path)
    async with core_client(cloud, cert, key) as core:
        with pytest.raises(SubscribeError):
            await core.subscribe("$hedgerow/cores/other/deployments", qos=1)
        with pytest.raises(SubscribeError):
            await core.subscribe("#", qos=1)
        await core.subscribe("commands/pi-1/#", qos=1)
        await cloud.ok(
            "POST",
            "/api/v1/messages/publish",
            json={"topic": "commands/pi-1/led", "payload": {"on": True}},
        )
        async with asyncio.timeout(WAIT):
            command = await core.get_message()
        assert command.topic == "commands/pi-1/led" and json.loads(command.payload) == {"on": True}
        refused = await cloud.api.post(
            "/api/v1/messages/publish", json={"topic": "$hedgerow/cores/pi-1/deployments"}
        )
        assert refused.status_code == 400
        await core.publish("secret/not-routed", b"nope", qos=0)
        await core.publish("$hedgerow/cores/other/heartbeat", b"{}", qos=0)
        user = Properties(user_properties=(("core", "pi-1"),))
        for index in range(5):
            await core.publish(
                f"corrected/bme680-1/{index}", json.dumps({"t": 20 + index}), qos=1, properties=user
            )
        await core.publish(
            "$hedgerow/cores/pi-1/heartbeat", json.dumps({"version": "0.1.0", "uptime": 3}), qos=0
        )
        await cloud.server.ingest.flushed()
        async with asyncio.timeout(WAIT):
            while (await cloud.ok("GET", "/api/v1/cores/pi-1"))["heartbeat"] is None:
                await asyncio.sleep(0.05)
    stored = await cloud.ok("GET", "/api/v1/messages", params={"limit": "100"})
    topics = sorted(m["topic"] for m in stored["items"])
    assert topics == [f"corrected/bme680-1/{i}" for i in range(5)]
    assert {m["core"] for m in stored["items"]} == {"pi-1"}
    assert stored["items"][0]["payload"] == json.dumps({"t": 24})
    heartbeat = (await cloud.ok("GET", "/api/v1/cores/pi-1"))["heartbeat"]
    # an old core's heartbeat (no schema, fewer fields) is read as the contract's version 1
    assert heartbeat == {
        "schema": 1,
        "version": "0.1.0",
        "uptime": 3,
        "devices": 0,
        "functions": {},
        "spool": 0,
        "deployment": None,
        "health": None,  # not said by cores before lifecycle health
        "counters": {},
    }

    filtered = await cloud.ok("GET", "/api/v1/messages", params={"filter": "corrected/+/3"})
    assert [m["topic"] for m in filtered["items"]] == ["corrected/bme680-1/3"]
    limited = await cloud.ok("GET", "/api/v1/messages", params={"limit": "2", "order": "asc"})
    assert [m["topic"] for m in limited["items"]] == [
        "corrected/bme680-1/0",
        "corrected/bme680-1/1",
    ]
    future = await cloud.ok("GET", "/api/v1/messages", params={"since": "2999-01-01T00:00:00"})
    assert future["items"] == []
    bad = await cloud.api.get("/api/v1/messages", params={"filter": "a/#/b"})
    assert bad.status_code == 400
    # a group's messages are those its core sent: none for a group whose core sent nothing
    mine = await cloud.ok("GET", "/api/v1/messages", params={"group": "factory-1"})
    assert len(mine["items"]) == 5
    await cloud.ok("POST", "/api/v1/groups", json={"name": "quiet"})
    await cloud.core("quiet-core", "quiet", tmp_path)
    assert (await cloud.ok("GET", "/api/v1/messages", params={"group": "quiet"}))["items"] == []
    unknown = await cloud.api.get("/api/v1/messages", params={"group": "nowhere"})
    assert unknown.status_code == 404


async def test_revocation_reaches_the_core_without_a_deployment(
    cloud: Cloud, tmp_path: Path
) -> None:
    cert, key, _ = await setup_group(cloud, tmp_path)
    made = await cloud.ok(
        "POST", "/api/v1/things", json={"name": "stolen", "groups": ["factory-1"]}
    )
    fingerprint = pki.fingerprint(pki.cert_from_pem(made["certificate"].encode()))
    async with core_client(cloud, cert, key) as core:
        await core.subscribe("$hedgerow/cores/pi-1/revocations", qos=1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await cloud.ok("POST", "/api/v1/things/stolen/revoke")
        async with asyncio.timeout(WAIT):
            message = await core.get_message()
        assert loop.time() - started < 2.0
        assert fingerprint in json.loads(message.payload)["fingerprints"]
        async with cloud.device_client(cert, key) as device:
            assert fingerprint in (await device.get("/core/v1/revocations")).json()["fingerprints"]


async def test_group_ca_rotation_reaches_the_core(cloud: Cloud, tmp_path: Path) -> None:
    cert, key, _ = await setup_group(cloud, tmp_path)
    topic = "$hedgerow/cores/pi-1/group-cas"
    async with cloud.device_client(cert, key) as device:
        before = (await device.get("/core/v1/group-cas")).json()["group_cas"]
    assert len(before) == 1
    async with core_client(cloud, cert, key) as core:
        await core.subscribe(topic, qos=1)
        async with asyncio.timeout(WAIT):  # the group's first CA was announced when made
            first = await core.get_message()
        assert first.retain and json.loads(first.payload)["group_cas"] == before
        loop = asyncio.get_running_loop()
        started = loop.time()
        rotated = await cloud.ok("POST", "/api/v1/groups/factory-1/cas/rotate")
        async with asyncio.timeout(WAIT):
            message = await core.get_message()
        assert loop.time() - started < 2.0
        announced = json.loads(message.payload)["group_cas"]
    # newest first, the previous CA still listed for the overlap
    assert announced == [ca["certificate"] for ca in rotated["items"]]
    assert len(announced) == 2 and announced[1] == before[0]
    # retained: a core that was not connected gets it when it subscribes
    async with core_client(cloud, cert, key) as core:
        await core.subscribe(topic, qos=1)
        async with asyncio.timeout(WAIT):
            message = await core.get_message()
        assert message.retain and json.loads(message.payload)["group_cas"] == announced
        # a rotation found due (here: in a worker thread, as discovery does) is announced too
        services = cloud.server.services
        future = pki.now() + dt.timedelta(days=8)
        await asyncio.to_thread(services.pki.group_cas, "factory-1", None, at=future)
        await services.groups.rotate_due_cas()
        async with asyncio.timeout(WAIT):
            message = await core.get_message()
        latest = json.loads(message.payload)["group_cas"]
        assert latest[0] not in announced and latest[1] == announced[0]
    # the poll answers the same list
    async with cloud.device_client(cert, key) as device:
        assert (await device.get("/core/v1/group-cas")).json() == {"group_cas": latest}
    thing_cert, thing_key = await cloud.thing("sensor-3", ["factory-1"], tmp_path)
    async with cloud.device_client(thing_cert, thing_key) as device:
        refused = await device.get("/core/v1/group-cas")
    assert refused.status_code == 403 and "thing certificate" in refused.json()["message"]


async def test_revoked_core_is_disconnected_and_refused(cloud: Cloud, tmp_path: Path) -> None:
    cert, key, _ = await setup_group(cloud, tmp_path)
    fingerprint = pki.fingerprint(pki.cert_from_pem(cert.read_bytes()))
    async with core_client(cloud, cert, key) as core:
        assert [name for name in (await cloud.ok("GET", "/api/v1/status"))["connected_cores"]] == [
            "pi-1"
        ]
        core_info = await cloud.ok("GET", "/api/v1/cores/pi-1")
        assert core_info["last_seen"] is not None, "connecting counts as being seen"
        await cloud.ok("POST", f"/api/v1/certificates/{fingerprint}/revoke")
        async with asyncio.timeout(WAIT):
            await core.closed
    with pytest.raises(ConnectError):
        async with core_client(cloud, cert, key):
            pass
    thing_cert, thing_key = await cloud.thing("sensor-1", ["factory-1"], tmp_path)
    with pytest.raises(ConnectError):
        async with core_client(cloud, thing_cert, thing_key, "sensor-1"):
            pass


async def test_live_stream_sends_new_messages(cloud: Cloud, tmp_path: Path) -> None:
    cert, key, _ = await setup_group(cloud, tmp_path)
    async with core_client(cloud, cert, key) as core:
        await core.publish("corrected/old", b"before", qos=1)
        await cloud.server.ingest.flushed()
        async with cloud.api.stream(
            "GET", "/api/v1/messages/stream", params={"filter": "corrected/#"}
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith(":")
            await core.publish("corrected/new", b"after", qos=1)
            async with asyncio.timeout(WAIT):
                async for line in lines:
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        break
    assert (
        event["topic"] == "corrected/new"
        and event["payload"] == "after"
        and event["core"] == "pi-1"
    )


async def test_a_refusal_in_the_heartbeat_brings_the_latest_deployment_again(
    cloud: Cloud, tmp_path: Path
) -> None:
    """The core refused its deployment on disk at restart (it did not verify) and runs an
    older one: the cloud announces its latest deployment again — the same id it announced
    before — so the core fetches it afresh."""
    cert, key, _ = await setup_group(cloud, tmp_path)
    first = await cloud.ok("POST", "/api/v1/groups/factory-1/deployments", json={})
    latest = await cloud.ok("POST", "/api/v1/groups/factory-1/deployments", json={})
    async with core_client(cloud, cert, key) as core:
        await core.subscribe("$hedgerow/cores/pi-1/deployments", qos=1)
        async with asyncio.timeout(WAIT):
            retained = await core.get_message()
        assert retained.retain
        assert DeploymentNotification.from_json(retained.payload) == DeploymentNotification(
            latest["deployment_id"]
        )
        refusal = {
            "deployment_id": latest["deployment_id"],
            "file": f"{latest['deployment_id']}.json",
            "reason": "the signature does not verify",
        }
        beat = {"version": "0.1.0", "deployment": first["deployment_id"], "refused": [refusal]}
        await core.publish("$hedgerow/cores/pi-1/heartbeat", json.dumps(beat), qos=0)
        async with asyncio.timeout(WAIT):
            again = await core.get_message()
        assert not again.retain  # sent now, not the retained copy
        assert DeploymentNotification.from_json(again.payload) == DeploymentNotification(
            latest["deployment_id"]
        )
    heartbeat = (await cloud.ok("GET", "/api/v1/cores/pi-1"))["heartbeat"]
    assert heartbeat["refused"] == [refusal]


async def test_group_membership_reaches_the_core_without_a_deployment(
    cloud: Cloud, tmp_path: Path
) -> None:
    cert, key, _ = await setup_group(cloud, tmp_path)
    topic = "$hedgerow/cores/pi-1/things"
    async with core_client(cloud, cert, key) as core:
        await core.subscribe(topic, qos=1)
        async with asyncio.timeout(WAIT):  # retained: the list as it stands
            first = await core.get_message()
        assert first.retain
        before = json.loads(first.payload)["things"]
        await cloud.ok("POST", "/api/v1/things", json={"name": "newcomer", "group": "factory-1"})
        async with asyncio.timeout(WAIT):
            joined = json.loads((await core.get_message()).payload)["things"]
        assert joined == sorted([*before, "newcomer"])
        await cloud.ok("DELETE", "/api/v1/groups/factory-1/things/newcomer")
        async with asyncio.timeout(WAIT):
            left = json.loads((await core.get_message()).payload)["things"]
        assert left == before
        await cloud.ok("POST", "/api/v1/groups/factory-1/things", json={"thing": "newcomer"})
        async with asyncio.timeout(WAIT):
            back = json.loads((await core.get_message()).payload)["things"]
        assert "newcomer" in back
    # the same list over HTTPS, for a core that reconnects
    async with cloud.device_client(cert, key) as device:
        assert (await device.get("/core/v1/things")).json() == {"schema": 1, "things": back}
        # every response carries the cloud's clock (core check compares with it)
        assert (await device.get("/core/v1/things")).headers["date"].endswith(" GMT")


async def test_an_mqtt_311_core_names_itself_in_the_topic(cloud: Cloud, tmp_path: Path) -> None:
    """No user properties over 3.1.1: routed telemetry comes under the core's own
    ``routed/`` prefix; under another core's, or off the group's routes, it is dropped."""
    cert, key, _ = await setup_group(cloud, tmp_path)
    async with core_client(cloud, cert, key, version=ProtocolVersion.V311) as core:
        await core.publish("$hedgerow/cores/pi-1/routed/corrected/bme680-1/0", b"20.5", qos=1)
        await core.publish("$hedgerow/cores/other/routed/corrected/bme680-1/1", b"x", qos=1)
        await core.publish("$hedgerow/cores/pi-1/routed/secret/not-routed", b"x", qos=1)
        await core.publish("$hedgerow/cores/pi-1/routed/corrected/bme680-1/2", b"21.5", qos=1)
    await cloud.server.ingest.flushed()
    stored = await cloud.ok("GET", "/api/v1/messages", params={"order": "asc"})
    assert [(m["topic"], m["core"], m["payload"]) for m in stored["items"]] == [
        ("corrected/bme680-1/0", "pi-1", "20.5"),
        ("corrected/bme680-1/2", "pi-1", "21.5"),
    ]
