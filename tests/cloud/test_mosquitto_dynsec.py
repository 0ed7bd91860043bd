"""Mosquitto's dynamic security kept by the cloud (``broker_login = "mosquitto-dynsec"``):
a private Mosquitto 2.0 with mutual TLS and password logins checked by the dynsec plugin,
its JSON made fresh by ``mosquitto_ctrl dynsec init`` with the cloud's user as the only
administrator; the cloud makes every core's client and role there."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hedgerow import pki
from hedgerow.client import Client, ConnectError, ProtocolVersion
from hedgerow.client.errors import PublishError, SubscribeError
from hedgerow.cloud import core_bundle
from hedgerow.cloud.broker_credentials import CLOUD_USER, load_or_create
from hedgerow.cloud.config import CloudConfig
from hedgerow.cloud.server import CloudServer
from hedgerow.mqtt.packets import Properties

from .conftest import Cloud, loopback_config, pg_url
from .test_scale_out import MosquittoTLS, wait_for_port

pytestmark = [pytest.mark.mosquitto]
WAIT = 10.0
DYNSEC_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
#: the revoked core's reconnect refused within this (measured: well under 0.1 s)
REFUSED_BOUND_S = 3.0


class MosquittoDynsec(MosquittoTLS):
    """A private Mosquitto whose logins the dynsec plugin checks: mutual TLS and the
    password (``use_identity_as_username false``)."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.dynsec = tmp_path / "dynamic-security.json"

    def init(self, data: Path, *, with_ctrl: bool = False) -> None:
        """A fresh dynsec file, the cloud's user its only client, an administrator: made by
        ``hedgerow cloud dynsec-init`` (or ``mosquitto_ctrl dynsec init``)."""
        from .test_cli import HEDGEROW

        self.dynsec.unlink(missing_ok=True)
        if with_ctrl:
            password = load_or_create(data / "broker-auth-secret").cloud_password()
            command = [shutil.which("mosquitto_ctrl") or "mosquitto_ctrl", "dynsec", "init"]
            command += [str(self.dynsec), CLOUD_USER, password]
        else:
            command = [HEDGEROW, "cloud", "dynsec-init", "--data", str(data), str(self.dynsec)]
        subprocess.run(command, check=True, capture_output=True)

    def settings(self, data: Path, port: int) -> list[str]:
        return [
            "use_identity_as_username false" if line.startswith("use_identity") else line
            for line in super().settings(data, port)
        ] + [f"plugin {DYNSEC_PLUGIN}", f"plugin_opt_config_file {self.dynsec}"]


@pytest.fixture
def mosquitto_dynsec(tmp_path: Path) -> Iterator[MosquittoDynsec]:
    starter = MosquittoDynsec(tmp_path)
    yield starter
    starter.stop()


async def dynsec_config(
    tmp_path: Path, mosquitto: MosquittoDynsec, database: str = ""
) -> tuple[CloudConfig, int]:
    config = await asyncio.to_thread(loopback_config, tmp_path / "cloud", database)
    mosquitto.init(config.data_dir)
    port = mosquitto(config.data_dir)
    await wait_for_port(port)
    return config.replace(
        broker=f"mqtts://127.0.0.1:{port}", broker_login="mosquitto-dynsec", replica_id="a"
    ), port


@asynccontextmanager
async def running(config: CloudConfig) -> AsyncIterator[Cloud]:
    """The cloud on the dynsec Mosquitto, once its link is connected."""
    async with CloudServer(config) as server, httpx.AsyncClient(
        base_url=server.api_url,
        headers={"authorization": f"Bearer {server.admin_token}"},
        timeout=10,
    ) as api:  # fmt: skip
        assert server.link is not None and server.dynsec is not None
        async with asyncio.timeout(WAIT):
            await server.link.connected.wait()
            await server.dynsec.reconciled.wait()
        yield Cloud(server, api, config.data_dir)


@dataclass
class CoreLogin:
    """What a core's bundle gives it to log in at the broker."""

    name: str
    cert: Path
    key: Path
    root_ca: Path
    password: str
    port: int

    def client(self, *, password: str | None = None) -> Client:
        return Client(
            "127.0.0.1",
            self.port,
            ssl=pki.client_context(str(self.root_ca), str(self.cert), str(self.key)),
            client_id=self.name,
            version=ProtocolVersion.V5,
            username=self.name,
            password=self.password if password is None else password,
            keepalive=30,
        )

    def paho_connack(self) -> str:
        """The CONNACK's reason as paho-mqtt reads it (a second, independent client)."""
        done: dict[str, str] = {}
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.name, protocol=paho.MQTTv5)
        client.tls_set(str(self.root_ca), str(self.cert), str(self.key))
        client.username_pw_set(self.name, self.password)
        client.on_connect = lambda _c, _u, _f, reason, _p: done.setdefault("reason", str(reason))
        client.connect("127.0.0.1", self.port)
        deadline = time.monotonic() + WAIT
        while "reason" not in done and time.monotonic() < deadline:
            client.loop(0.05)
        client.disconnect()
        return done.get("reason", "no CONNACK")


async def make_core(cloud: Cloud, name: str, group: str, port: int, directory: Path) -> CoreLogin:
    """A group and its core: its certificate, key and broker password from its bundle."""
    await cloud.ok("POST", "/api/v1/groups", json={"name": group})
    made = await cloud.ok("POST", "/api/v1/cores", json={"name": name, "group": group})
    files = core_bundle.read_bundle(base64.b64decode(made["bundle"]))
    settings = tomllib.loads(files[core_bundle.CONFIG].decode())["cloud"]
    assert settings["mqtt_username"] == name
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.cert.pem", directory / f"{name}.key"
    cert.write_bytes(files[core_bundle.CORE_CERT])
    key.write_bytes(files[core_bundle.CORE_KEY])
    return CoreLogin(name, cert, key, cloud.root_ca, settings["mqtt_password"], port)


async def revoke(cloud: Cloud, core: str) -> None:
    listed = await cloud.ok("GET", "/api/v1/certificates", params={"owner": core})
    (fingerprint,) = [c["fingerprint"] for c in listed["items"]]
    await cloud.ok("POST", f"/api/v1/certificates/{fingerprint}/revoke")


async def refused(login: CoreLogin) -> None:
    with pytest.raises(ConnectError, match="0x87"):
        async with login.client():
            pass


async def test_a_revoked_core_is_refused_by_mosquitto_and_telemetry_flows_before(
    tmp_path: Path, mosquitto_dynsec: MosquittoDynsec
) -> None:
    config, port = await dynsec_config(tmp_path, mosquitto_dynsec)
    async with running(config) as cloud:
        pi = await make_core(cloud, "pi-1", "factory-1", port, tmp_path)
        await cloud.thing("t1", ["factory-1"], tmp_path)
        await cloud.ok(
            "POST",
            "/api/v1/groups/factory-1/subscriptions",
            json={"source": "thing:t1", "topic": "plant/#", "target": "cloud"},
        )
        await refused(CoreLogin(**{**pi.__dict__, "password": "x" * 64}))
        async with pi.client() as core:
            assert await core.subscribe("$hedgerow/cores/pi-1/deployments", qos=1) == (1,)
            user = Properties(user_properties=(("core", "pi-1"),))
            await core.publish("plant/temp", b"21.5", qos=1, properties=user)
            async with asyncio.timeout(WAIT):
                while not (await cloud.ok("GET", "/api/v1/messages", params={"filter": "plant/#"}))[
                    "count"
                ]:
                    await asyncio.sleep(0.05)
            deployment = await cloud.ok("POST", "/api/v1/groups/factory-1/deployments", json={})
            async with asyncio.timeout(WAIT):
                notice = json.loads((await core.get_message()).payload)
            assert notice["deployment_id"] == deployment["deployment_id"]

            revoked_at = time.monotonic()
            await revoke(cloud, "pi-1")
            async with asyncio.timeout(WAIT):
                await asyncio.shield(core.closed)
        # the core's own reconnect, with its bundle's credentials: Mosquitto says no
        async with asyncio.timeout(REFUSED_BOUND_S):
            await refused(pi)
        took = time.monotonic() - revoked_at
        assert await asyncio.to_thread(pi.paho_connack) == "Not authorized"
        print(f"revoke API call to reconnect refused by Mosquitto: {took:.3f} s")


async def test_a_reissued_bundle_changes_the_login_and_a_deleted_core_is_refused(
    tmp_path: Path, mosquitto_dynsec: MosquittoDynsec
) -> None:
    config, port = await dynsec_config(tmp_path, mosquitto_dynsec)
    async with running(config) as cloud:
        old = await make_core(cloud, "gw", "plant", port, tmp_path / "old")
        async with old.client() as core:
            made = await cloud.ok("POST", "/api/v1/cores/gw/bundle")
            async with asyncio.timeout(WAIT):
                await asyncio.shield(core.closed)
        files = core_bundle.read_bundle(base64.b64decode(made["bundle"]))
        password = tomllib.loads(files[core_bundle.CONFIG].decode())["cloud"]["mqtt_password"]
        assert password != old.password
        new_cert, new_key = tmp_path / "gw-new.cert.pem", tmp_path / "gw-new.key"
        new_cert.write_bytes(files[core_bundle.CORE_CERT])
        new_key.write_bytes(files[core_bundle.CORE_KEY])
        new = CoreLogin("gw", new_cert, new_key, cloud.root_ca, password, port)
        await refused(old)  # the old password (Mosquitto checks no certificate revocation)
        async with new.client() as core:
            await cloud.ok("DELETE", "/api/v1/cores/gw")
            async with asyncio.timeout(WAIT):
                await asyncio.shield(core.closed)
        await refused(new)


async def test_cores_are_kept_apart_at_mosquitto_and_follow_route_changes(
    tmp_path: Path, mosquitto_dynsec: MosquittoDynsec
) -> None:
    config, port = await dynsec_config(tmp_path, mosquitto_dynsec)
    async with running(config) as cloud:
        a = await make_core(cloud, "gw-a", "group-a", port, tmp_path)
        b = await make_core(cloud, "gw-b", "group-b", port, tmp_path)
        await cloud.thing("t-a", ["group-a"], tmp_path)
        # every topic from the cloud to group A (dynsec would let a leading wildcard reach
        # the $ trees: the fence must keep B's namespace out all the same)
        await cloud.ok(
            "POST",
            "/api/v1/groups/group-a/subscriptions",
            json={"source": "cloud", "topic": "#", "target": "thing:t-a"},
        )
        async with a.client() as core_a, b.client() as core_b:
            assert await core_b.subscribe("$hedgerow/cores/gw-b/deployments", qos=1) == (1,)
            for other in ("$hedgerow/cores/gw-b/#", "$hedgerow/cores/+/deployments", "$share/x/#"):
                with pytest.raises(SubscribeError, match="135"):
                    await core_a.subscribe(other, qos=1)
            assert await core_a.subscribe("#", qos=1) == (1,)  # its route
            with pytest.raises(SubscribeError, match="135"):  # group B: no route from cloud
                await core_b.subscribe("commands/#", qos=1)
            # what the cloud sends to B reaches B only; what A forges, nobody
            await cloud.server.link.publish(  # type: ignore[union-attr]
                "$hedgerow/cores/gw-b/deployments", b"{}", retain=False
            )
            for forged in ("$hedgerow/cores/gw-b/shadow-update", "commands/a"):
                # B's namespace; a topic A's group routes nowhere (its route is from cloud)
                with pytest.raises(PublishError, match="0x87"):
                    await core_a.publish(forged, b"forged", qos=1)
            async with asyncio.timeout(WAIT):
                heard = await core_b.get_message()
            assert heard.topic == "$hedgerow/cores/gw-b/deployments"
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await core_b.get_message()

            # a route added for B holds at Mosquitto at once, without a reconnect
            await cloud.thing("t-b", ["group-b"], tmp_path)
            await cloud.ok(
                "POST",
                "/api/v1/groups/group-b/subscriptions",
                json={"source": "cloud", "topic": "commands/#", "target": "thing:t-b"},
            )
            assert await core_b.subscribe("commands/#", qos=1) == (1,)
            assert not core_b.closed.done() and not core_a.closed.done()


async def test_a_restarted_replica_reconverges_a_mosquitto_that_lost_its_dynsec_state(
    tmp_path: Path, mosquitto_dynsec: MosquittoDynsec
) -> None:
    config, port = await dynsec_config(tmp_path, mosquitto_dynsec)
    async with running(config) as cloud:
        live = await make_core(cloud, "gw-live", "plant", port, tmp_path)
        gone = await make_core(cloud, "gw-gone", "mill", port, tmp_path)
        async with live.client():
            pass
        await revoke(cloud, "gw-gone")
    mosquitto_dynsec.stop()
    mosquitto_dynsec.init(config.data_dir, with_ctrl=True)  # its state lost: the admin only
    mosquitto_dynsec(config.data_dir, port)
    await wait_for_port(port)
    await refused(live)  # the broker knows no core now
    async with running(config):
        async with live.client() as core:
            assert await core.subscribe("$hedgerow/cores/gw-live/#", qos=1) == (1,)
        await refused(gone)
    clients = {c["username"] for c in json.loads(mosquitto_dynsec.dynsec.read_text())["clients"]}
    assert clients == {CLOUD_USER, "gw-live"}


@pytest.mark.postgres
async def test_two_replicas_keep_one_dynsec_and_a_revocation_through_either_holds(
    tmp_path: Path, mosquitto_dynsec: MosquittoDynsec, pg_schema: str
) -> None:
    """Both replicas reconcile as they connect (the same commands twice: the second
    refused as done); a core made through A and revoked through B is refused."""
    config, port = await dynsec_config(tmp_path, mosquitto_dynsec, pg_url(pg_schema))
    async with running(config) as a, running(config.replace(replica_id="b")) as b:
        gw = await make_core(a, "gw", "plant", port, tmp_path)
        assert b.server.dynsec is not None
        assert await b.server.dynsec.reconcile() == 0  # A made the core: nothing to send
        async with gw.client() as core:
            await revoke(b, "gw")
            async with asyncio.timeout(WAIT):
                await asyncio.shield(core.closed)
        await refused(gw)
        for cloud in (a, b):
            assert cloud.server.dynsec is not None
            assert await cloud.server.dynsec.reconcile() == 0
            assert (await cloud.ok("GET", "/api/v1/status"))["dynsec"]["reconciles"] >= 2
            metrics = (await cloud.api.get("/metrics")).text
            assert 'hedgerow_cloud_dynsec_total{event="refused"}' in metrics
    clients = {c["username"] for c in json.loads(mosquitto_dynsec.dynsec.read_text())["clients"]}
    assert clients == {CLOUD_USER}


async def test_a_core_provisioned_by_claim_gets_its_dynsec_login_at_once(
    tmp_path: Path, mosquitto_dynsec: MosquittoDynsec
) -> None:
    """A claim's answer is a login Mosquitto accepts at once; claimed again (a new
    certificate, the old one revoked), the old login is refused and the new one works."""
    from hedgerow import claimclient
    from hedgerow.contract.provisioning import ClaimCredential, ProvisionRequest

    config, port = await dynsec_config(tmp_path, mosquitto_dynsec)
    async with running(config) as cloud:
        template = {
            "name": "gws",
            "kind": "core",
            "group": "site-{serial}",
            "name_pattern": "gw-{serial}",
        }
        await cloud.ok("POST", "/api/v1/claim-templates", json=template)
        created = await cloud.ok(
            "POST", "/api/v1/claims", json={"template": "gws", "count": 1, "expires": "1h"}
        )
        credential = ClaimCredential.from_tar(base64.b64decode(created["bundle"]))

        async def claim(directory: Path) -> CoreLogin:
            key = pki.new_key()
            request = ProvisionRequest("SN7", pki.make_csr(key, "ignored").decode())
            answer = await claimclient.provision(credential, request, timeout=30)
            directory.mkdir()
            (directory / "core.key").write_bytes(pki.key_to_pem(key))
            (directory / "core.cert.pem").write_text(answer.certificate)
            password = tomllib.loads(answer.config)["cloud"]["mqtt_password"]
            return CoreLogin(
                "gw-SN7", directory / "core.cert.pem", directory / "core.key",
                cloud.root_ca, password, port,
            )  # fmt: skip

        first = await claim(tmp_path / "first")
        async with first.client() as core:  # no reconcile in between: made at the claim
            assert await core.subscribe("$hedgerow/cores/gw-SN7/deployments", qos=1) == (1,)
            again = await claim(tmp_path / "again")
            async with asyncio.timeout(WAIT):
                await asyncio.shield(core.closed)
        assert again.password != first.password
        await refused(first)
        async with again.client() as core:
            assert await core.subscribe("$hedgerow/cores/gw-SN7/deployments", qos=1) == (1,)
