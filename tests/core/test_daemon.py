"""The core in-process against the fake cloud: real TLS, real broker, real client, real spool."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from hedgerow import certinfo, pki
from hedgerow.client import Client, ClientError, ConnectError, PublishError
from hedgerow.contract.logs import LogLevels
from hedgerow.contract.support import SupportBundleRequest
from hedgerow.core.config import load_config
from hedgerow.core.daemon import CoreDaemon
from hedgerow.core.status import heartbeat, prometheus

from ..conftest import free_port
from .fakecloud import CORE, FakeCloud
from .helpers import document, function_entry, function_zip, sign


class FakeRuntime:
    """An in-process function host: 'upper' functions republish the payload upper-cased."""

    def __init__(
        self, work_dir: Path, publish: Any, shadow: Any, thing_name: str, **options: Any
    ) -> None:
        self.publish = publish
        self.specs: list[Any] = []
        self.delivered: list[tuple[str, str, bytes, str]] = []
        self.broken: set[str] = set()

    async def __aenter__(self) -> FakeRuntime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def apply(self, specs: Sequence[Any], artifacts: Mapping[str, Path]) -> None:
        for spec in specs:
            assert artifacts[spec.name].exists()
        self.specs = list(specs)

    async def deliver(self, name: str, topic: str, payload: bytes, source: str) -> None:
        self.delivered.append((name, topic, payload, source))
        self.publish(name, "corrected/" + topic, payload.upper())

    def states(self) -> Mapping[str, str]:
        return {s.name: ("broken" if s.name in self.broken else "running") for s in self.specs}


@pytest.fixture
async def cloud(tmp_path: Path, test_pki: Any) -> AsyncIterator[FakeCloud]:
    async with FakeCloud(tmp_path / "cloud", test_pki.root) as c:
        yield c


@contextlib.asynccontextmanager
async def running_core(
    cloud: FakeCloud, data_dir: Path, extra: str = "", local_extra: str = ""
) -> AsyncIterator[CoreDaemon]:
    config = load_config(
        cloud.provision(data_dir, free_port(), extra + "[spool]\nfsync = 'normal'\n", local_extra)
    )
    async with CoreDaemon(config, runtime_factory=FakeRuntime) as core:
        yield core


def root_of(cloud: FakeCloud) -> pki.Issued:
    return cloud.root


def thing_client(cloud: FakeCloud, core: CoreDaemon, thing: pki.Issued, **kw: Any) -> Client:
    assert core.local_address is not None
    return Client("127.0.0.1", core.local_address[1], client_id=kw.pop("client_id", pki.name_of(thing.cert)),
                  ssl=cloud.thing_context(thing), server_hostname="127.0.0.1", **kw)  # fmt: skip


async def deployed(cloud: FakeCloud, core: CoreDaemon, deployment_id: str) -> None:
    await cloud.wait_for(lambda: any(s["deployment_id"] == deployment_id and s["status"] in
                                     ("Success", "Failure", "RolledBack") for s in cloud.statuses()))  # fmt: skip


async def test_end_to_end_routing_through_functions_to_the_cloud(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    sensor = cloud.thing("bme680-1")
    art = function_zip("upper")
    async with running_core(cloud, tmp_path / "core") as core:
        # first start: server certificate for the configured hosts, connectivity reported
        assert cloud.certificate_requests == [["127.0.0.1", "localhost"]]
        assert cloud.connectivity[0] == [{"host": "127.0.0.1", "port": core.local_address[1]},  # type: ignore[index]
                                         {"host": "localhost", "port": core.local_address[1]}]  # type: ignore[index]  # fmt: skip
        await cloud.deploy(
            document("d-1", things=("bme680-1",), functions=(function_entry("upper", art),),
                     subscriptions=(("thing:bme680-1", "sensors/#", "function:upper"),
                                    ("thing:bme680-1", "raw/#", "cloud"),
                                    ("function:upper", "corrected/#", "cloud"),
                                    ("cloud", "commands/bme680-1", "thing:bme680-1"))),
            artifacts=(art,),
        )  # fmt: skip
        await deployed(cloud, core, "d-1")
        assert cloud.statuses()[-1]["status"] == "Success"
        async with thing_client(cloud, core, sensor) as device:
            await device.subscribe("commands/bme680-1", qos=1)
            await device.publish("sensors/bme680-1", b'{"t": 21}', qos=1)
            await device.publish("raw/bme680-1", b"r1", qos=1)
            await cloud.wait_for(
                lambda: (
                    len(cloud.telemetry("corrected/")) == 1 and len(cloud.telemetry("raw/")) == 1
                )
            )
            corrected = cloud.telemetry("corrected/")[0]
            assert (
                corrected.topic == "corrected/sensors/bme680-1"
                and corrected.payload == b'{"T": 21}'
            )
            assert ("core", CORE) in corrected.properties.user_properties
            # cloud to edge
            assert cloud.broker is not None
            await cloud.broker.publish("commands/bme680-1", b"reboot", qos=1)
            message = await asyncio.wait_for(device.get_message(), 5)
            assert (message.topic, message.payload) == ("commands/bme680-1", b"reboot")
            # least privilege: outside the table is dropped and counted
            with pytest.raises(PublishError) as refused:
                await device.publish("elsewhere/x", b"no", qos=1)
            assert refused.value.reason_code == 0x87  # dropped (policy "drop"), v5 gets the reason
            assert core.admission.denied_publish == 1
            with pytest.raises(ClientError):
                await device.subscribe("#")
        snap = core.snapshot()
        assert snap.counters["to_cloud"] >= 2 and snap.deployment == "d-1"
        assert (
            dict(((s, t, g), n) for s, t, g, n in snap.subscriptions)[
                ("thing:bme680-1", "raw/#", "cloud")
            ]
            == 1
        )


async def test_refusals_and_revocation(cloud: FakeCloud, tmp_path: Path) -> None:
    member = cloud.thing("member")
    stranger = cloud.thing("stranger")  # valid certificate, not in this core's group
    async with running_core(cloud, tmp_path / "core") as core:
        await cloud.deploy(
            document("d-1", things=("member",), subscriptions=(("thing:member", "a/#", "cloud"),))
        )
        await deployed(cloud, core, "d-1")
        with pytest.raises(ConnectError):
            async with thing_client(cloud, core, stranger, connect_timeout=2.0):
                pass
        assert core.admission.refused.get("not-in-group") == 1
        device = thing_client(cloud, core, member, client_id="pretends-to-be-stranger")
        await device.connect()
        assert [i.name for _, i in core.broker.clients()] == ["member"]  # identity = certificate
        await cloud.revoke(member)
        await asyncio.wait_for(device.closed, 5)
        with pytest.raises(ConnectError):
            async with thing_client(cloud, core, member, connect_timeout=2.0):
                pass
        assert core.admission.refused.get("revoked") == 1
        expired = pki.issue(root_of(cloud), "member", unit="thing", days=0)
        with pytest.raises(ConnectError):
            async with thing_client(cloud, core, expired, connect_timeout=2.0):
                pass
        assert core.admission.refused.get("expired") == 1


async def test_bad_deployments_leave_the_running_one(cloud: FakeCloud, tmp_path: Path) -> None:
    art = function_zip("upper")
    async with running_core(cloud, tmp_path / "core") as core:
        good = document("d-1", things=("t",), functions=(function_entry("upper", art),))
        await cloud.deploy(good, artifacts=(art,))
        await deployed(cloud, core, "d-1")
        forged = document("d-2", things=("evil",))
        await cloud.deploy(forged, signature=sign(pki.new_signing_key(), forged))
        await deployed(cloud, core, "d-2")
        assert cloud.statuses()[-1] == {"deployment_id": "d-2", "status": "Failure",
                                        "detail": "the signature does not verify"}  # fmt: skip
        runtime = core.functions
        assert isinstance(runtime, FakeRuntime)
        runtime.broken.add("upper")
        await cloud.deploy(
            document("d-3", things=("t",), functions=(function_entry("upper", art, version=2),))
        )
        await deployed(cloud, core, "d-3")
        assert cloud.statuses()[-1]["status"] == "RolledBack"
        assert core.agent.current is not None and core.agent.current.deployment_id == "d-1"
        assert core.admission.things == frozenset({"t"})


async def test_offline_keeps_routing_and_spools_until_the_cloud_returns(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    a, b = cloud.thing("a"), cloud.thing("b")
    subs = (("thing:a", "data/#", "cloud"), ("thing:a", "local/#", "thing:b"))
    async with running_core(cloud, tmp_path / "core") as core:
        await cloud.deploy(document("d-1", things=("a", "b"), subscriptions=subs))
        await deployed(cloud, core, "d-1")
        await cloud.stop_mqtt()
        await cloud.stop_https()
        assert core.connector is not None
        await asyncio.wait_for(_cleared(core.connector.connected), 5)
        async with thing_client(cloud, core, a) as da, thing_client(cloud, core, b) as db:
            await db.subscribe("local/#", qos=1)
            for i in range(200):
                await da.publish(f"data/{i}", str(i).encode(), qos=1)
            await da.publish("local/x", b"hi", qos=1)
            message = await asyncio.wait_for(db.get_message(), 5)
            assert message.payload == b"hi"
        assert core.spool.stats().depth == 200
        await cloud.start_https()
        await cloud.start_mqtt()
        await cloud.wait_for(lambda: len(cloud.telemetry("data/")) >= 200)
        got = [int(p.payload) for p in cloud.telemetry("data/")]
        assert got == list(range(200))  # in order, nothing lost
        await cloud.wait_for(lambda: core.spool.stats().depth == 0)


async def _cleared(event: asyncio.Event) -> None:
    while event.is_set():
        await asyncio.sleep(0.01)


async def test_restart_without_cloud_runs_last_good_deployment(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    data = tmp_path / "core"
    art = function_zip("upper")
    async with running_core(cloud, data) as core:
        await cloud.deploy(document("d-1", things=("a",), functions=(function_entry("upper", art),),
                                    subscriptions=(("thing:a", "s/#", "function:upper"),
                                                   ("function:upper", "corrected/#", "cloud"))),
                          artifacts=(art,))  # fmt: skip
        await deployed(cloud, core, "d-1")
    await cloud.stop_mqtt()
    await cloud.stop_https()
    config = load_config(data / "config.toml")
    async with CoreDaemon(config, runtime_factory=FakeRuntime) as core:
        assert core.agent.current is not None and core.agent.current.deployment_id == "d-1"
        runtime = core.functions
        assert isinstance(runtime, FakeRuntime) and [s.name for s in runtime.specs] == ["upper"]
        async with thing_client(cloud, core, cloud.thing("a")) as device:
            await device.publish("s/1", b"x", qos=1)
            async with asyncio.timeout(5):
                while not runtime.delivered:
                    await asyncio.sleep(0.01)
        assert runtime.delivered[0][:3] == ("upper", "s/1", b"x")
        # the function's output waits for the cloud in the spool
        assert "corrected/s/1" in [r.topic for r in core.spool.peek(0, 100)]


async def test_metrics_endpoint_and_heartbeat(cloud: FakeCloud, tmp_path: Path) -> None:
    import httpx

    port = free_port()
    extra = f"[status]\nmetrics_port = {port}\nheartbeat_interval = 1.0\n"
    async with running_core(cloud, tmp_path / "core", extra) as core:
        assert core.metrics_address == ("127.0.0.1", port)
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        assert "hedgerow_core_devices_connected 0" in text
        await cloud.wait_for(lambda: len(cloud.telemetry(f"$hedgerow/cores/{CORE}/heartbeat")) >= 2)
        beat = json.loads(cloud.telemetry(f"$hedgerow/cores/{CORE}/heartbeat")[-1].payload)
        assert beat["devices"] == 0 and "uptime" in beat and beat["spool"] == 0


async def test_disconnect_policy_drops_the_offender_with_reason_0x87(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    async with running_core(
        cloud, tmp_path / "core", local_extra='deny_policy = "disconnect"\n'
    ) as core:
        await cloud.deploy(
            document("d-1", things=("a",), subscriptions=(("thing:a", "ok/#", "cloud"),))
        )
        await deployed(cloud, core, "d-1")
        device = thing_client(cloud, core, cloud.thing("a"))
        await device.connect()
        await device.publish("ok/1", b"fine", qos=1)
        device.publish_nowait("forbidden/1", b"no", qos=1)
        error = await asyncio.wait_for(device.closed, 5)
        assert error is not None and getattr(error, "reason_code", None) == 0x87
        assert core.admission.denied_publish == 1


async def test_check_against_a_running_core_and_its_cloud(cloud: FakeCloud, tmp_path: Path) -> None:
    from hedgerow.core.check import Level, run_checks

    port = free_port()
    async with running_core(cloud, tmp_path / "core", f"[status]\nmetrics_port = {port}\n") as core:
        results = {r.name: r for r in await run_checks(core.config, wait_s=2)}
    assert (
        results[f"port 127.0.0.1:{core.config.local.port}"].detail == "served by the running core"
    )
    assert results[f"cloud https 127.0.0.1:{cloud.https_port}"].level is Level.OK
    assert results[f"cloud mqtt 127.0.0.1:{cloud.mqtt_port}"].level is Level.OK
    assert results["certificate server"].level is Level.OK
    assert results["clock"].level is Level.OK  # against the cloud's Date header
    assert results["key tool"].level is Level.OK  # the real child verified RFC 8032's vector
    assert not [r for r in results.values() if r.level is Level.FAIL and r.name != "function user"]


async def test_address_change_renews_and_hot_swaps_without_dropping_devices(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    async with running_core(cloud, tmp_path / "core") as core:
        await cloud.deploy(
            document("d-1", things=("a", "b"), subscriptions=(("thing:a", "x", "thing:b"),))
        )
        await deployed(cloud, core, "d-1")
        assert await core.check_certificate() is None  # nothing to do
        old = thing_client(cloud, core, cloud.thing("a"))
        await old.connect()
        core.advertised = lambda: ["127.0.0.1", "localhost", "10.9.9.9"]  # type: ignore[method-assign]
        assert await core.check_certificate() == "advertised addresses changed"
        assert cloud.certificate_requests[-1] == ["127.0.0.1", "localhost", "10.9.9.9"]
        assert cloud.connectivity[-1][-1] == {"host": "10.9.9.9", "port": core.local_address[1]}  # type: ignore[index]
        async with thing_client(cloud, core, cloud.thing("b")) as new:
            ssl_object = new._conn.transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
            served = pki.peer_certificate(ssl_object)
            assert served is not None and "10.9.9.9" in pki.server_hosts_of(served)
            await new.subscribe("x", qos=1)
            await old.publish("x", b"still connected", qos=1)  # the old connection lives on
            message = await asyncio.wait_for(new.get_message(), 5)
            assert message.payload == b"still connected"
        await old.disconnect()


async def test_a_device_uses_its_own_shadow_without_subscriptions(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    async with running_core(cloud, tmp_path / "core") as core:
        await cloud.deploy(document("d-1", things=("lamp",)))
        await deployed(cloud, core, "d-1")
        async with thing_client(cloud, core, cloud.thing("lamp")) as lamp:
            await lamp.subscribe("$aws/things/lamp/shadow/update/accepted", qos=1)
            await lamp.publish(
                "$aws/things/lamp/shadow/update", b'{"state": {"reported": {"on": true}}}', qos=1
            )
            reply = await asyncio.wait_for(lamp.get_message(), 5)
        assert reply.topic == "$aws/things/lamp/shadow/update/accepted"
        assert json.loads(reply.payload)["state"]["reported"] == {"on": True}
        shadow = core.router.shadow
        assert shadow is not None and shadow.get("lamp")["state"]["reported"] == {"on": True}  # type: ignore[attr-defined]


def signed_by(cert: certinfo.CertInfo | None, ca: pki.Issued) -> bool:
    """A real signature check (with cryptography, test side) of what the core stored."""
    return cert is not None and pki.is_signed_by(pki.cert_from_der(cert.der), ca.cert)


async def served_issuer(cloud: FakeCloud, core: CoreDaemon, thing: pki.Issued) -> str:
    """The issuer of the certificate the core's local endpoint presents now."""
    async with thing_client(cloud, core, thing) as device:
        ssl_object = device._conn.transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
        served = pki.peer_certificate(ssl_object)
    assert served is not None
    return served.issuer.rfc4514_string()


async def test_group_ca_rotation_announced_over_mqtt_renews_at_once(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    async with running_core(cloud, tmp_path / "core") as core:  # check_interval: 300 s
        await cloud.deploy(document("d-1", things=("a", "b")))
        await deployed(cloud, core, "d-1")
        old_ca = cloud.group_ca
        requests = len(cloud.certificate_requests)
        assert cloud.broker is not None
        # a malformed announcement is ignored (logged), the core carries on
        await cloud.broker.publish(f"$hedgerow/cores/{CORE}/group-cas", b"{", qos=1, retain=True)
        old = thing_client(cloud, core, cloud.thing("a"))  # trusts the old CA only
        await old.connect()
        new_ca = await cloud.rotate_group_ca()
        new_subject = new_ca.cert.subject.rfc4514_string()
        async with asyncio.timeout(5):
            while True:
                cert, cas = core.server_identity.load()
                if signed_by(cert, new_ca):
                    break
                await asyncio.sleep(0.05)
        assert len(cloud.certificate_requests) == requests + 1
        assert [c.fingerprint for c in cas] == [
            pki.fingerprint(new_ca.cert),
            pki.fingerprint(old_ca.cert),
        ]
        # new handshakes get the new certificate (hot swap), the old session lives on
        assert await served_issuer(cloud, core, cloud.thing("b")) == new_subject
        assert old.is_connected and not old.closed.done()
        # the announcement is not repeated work: already on the newest CA, nothing to renew
        core.group_cas_announced(
            [certinfo.from_pem(new_ca.cert_pem), certinfo.from_pem(old_ca.cert_pem)]
        )
        await asyncio.sleep(0.3)
        assert len(cloud.certificate_requests) == requests + 1
        await old.disconnect()


async def test_a_missed_rotation_is_caught_up_by_the_periodic_check(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    async with running_core(
        cloud, tmp_path / "core", "[certificates]\ncheck_interval = 1\n"
    ) as core:
        await cloud.deploy(document("d-1", things=("a",)))
        await deployed(cloud, core, "d-1")
        new_ca = await cloud.rotate_group_ca(announce=False)  # e.g. the core was offline
        polls = cloud.group_cas_requests
        async with asyncio.timeout(5):
            while True:
                cert, _ = core.server_identity.load()
                if signed_by(cert, new_ca):
                    break
                await asyncio.sleep(0.05)
        assert cloud.group_cas_requests > polls
        assert await served_issuer(cloud, core, cloud.thing("a")) == (
            new_ca.cert.subject.rfc4514_string()
        )
        # the cloud cannot be asked: the stored list is used, nothing breaks
        await cloud.stop_https()
        assert await core.current_group_cas() is None
        assert await core.check_certificate(None) is None


async def test_two_cores_on_one_host_with_default_metrics_do_not_collide(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    """No ``metrics_port`` set: each core listens on a free port and writes it to its data
    directory, where ``core check`` (and a scraper) find it."""
    import httpx

    from hedgerow.core.check import run_checks

    defaults = "[status]\nheartbeat_interval = 600\n"  # the section without metrics_port
    async with (
        running_core(cloud, tmp_path / "a", defaults) as a,
        running_core(cloud, tmp_path / "b", defaults) as b,
    ):
        assert a.config.status.metrics_port == "auto"
        assert a.metrics_address is not None and b.metrics_address is not None
        assert a.metrics_address != b.metrics_address
        for core in (a, b):
            assert core.config.metrics_endpoint() == core.metrics_address
            host, port = core.metrics_address
            async with httpx.AsyncClient() as http:
                health = (await http.get(f"http://{host}:{port}/health")).json()
            assert "uptime" in health
        results = {r.name: r for r in await run_checks(b.config, wait_s=2)}
        assert results[f"port 127.0.0.1:{b.config.local.port}"].detail == (
            "served by the running core"
        )
    # stopped: the address is gone, nobody is told to look there
    assert not a.config.metrics_address_file.exists()
    assert a.config.metrics_endpoint() is None


async def test_components_start_in_order_and_health_follows_the_functions(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    from hedgerow.lifecycle import Health, State

    art = function_zip("upper")
    async with running_core(cloud, tmp_path / "core") as core:
        assert list(core.components.states()) == [
            "identity", "spool", "logs", "certificate", "broker", "functions", "connectors", "router",
            "deployment", "local-endpoint", "background", "metrics",
        ]  # fmt: skip
        assert set(core.components.states().values()) == {State.RUNNING}
        await cloud.deploy(
            document("d-1", functions=(function_entry("upper", art),)), artifacts=(art,)
        )
        await deployed(cloud, core, "d-1")
        assert core.agent.current is not None and core.agent.current.deployment_id == "d-1"
        assert core.health() is Health.HEALTHY
        assert json.loads(heartbeat(core.snapshot()))["health"] == "healthy"
        runtime = core.functions
        assert isinstance(runtime, FakeRuntime)
        runtime.broken.add("upper")
        assert core.health() is Health.BROKEN
        assert 'hedgerow_core_component_up{component="broker",state="RUNNING"} 1' in prometheus(
            core.snapshot()
        )
    assert set(core.components.states().values()) == {State.STOPPED}


async def test_heartbeat_follows_devices_connecting_within_two_seconds(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    """The periodic heartbeat is 10 minutes away; three devices connecting reach the
    cloud's view of the core (devices == 3) within 2 s, in few heartbeats."""
    topic = f"$hedgerow/cores/{CORE}/heartbeat"
    async with running_core(
        cloud, tmp_path / "core", "[status]\nheartbeat_interval = 600\n"
    ) as core:
        await cloud.deploy(document("d-1", things=("a", "b", "c")))
        await deployed(cloud, core, "d-1")
        await cloud.wait_for(lambda: any(json.loads(m.payload)["deployment"] == "d-1" for m in cloud.telemetry(topic)), 5)  # fmt: skip
        before = len(cloud.telemetry(topic))
        devices = [thing_client(cloud, core, cloud.thing(name)) for name in ("a", "b", "c")]
        async with contextlib.AsyncExitStack() as stack:
            for device in devices:
                await stack.enter_async_context(device)
                # staggered, as real devices start: each after the last one's heartbeat
                await cloud.wait_for(lambda: json.loads(cloud.telemetry(topic)[-1].payload)["devices"] == sum(d.is_connected for d in devices), 2.0)  # fmt: skip
            await cloud.wait_for(lambda: json.loads(cloud.telemetry(topic)[-1].payload)["devices"] == 3, 2.0)  # fmt: skip
        assert len(cloud.telemetry(topic)) - before <= 3


async def _until(predicate: Any, what: str) -> None:
    try:
        async with asyncio.timeout(10):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_log_levels_from_the_cloud_apply_at_once_and_are_kept_for_the_next_start(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    """The retained levels apply without a restart (the gate, the root logger) and are kept
    on disk; a support bundle request that expired, or the cloud clearing one, builds
    nothing."""
    data = tmp_path / "core"
    topic = "$hedgerow/cores/pi-1/log-levels"
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)  # as `hedgerow core run` sets it
    try:
        await _log_levels_case(cloud, data, topic, root)
    finally:
        root.setLevel(before)


async def _log_levels_case(cloud: FakeCloud, data: Path, topic: str, root: logging.Logger) -> None:
    async with running_core(cloud, data) as core:
        assert core._log_gate is not None and core.connector is not None
        await asyncio.wait_for(core.connector.connected.wait(), 10)
        assert cloud.broker is not None
        gate = core._log_gate
        assert gate.threshold("function:fn") == logging.INFO
        await cloud.broker.publish(
            topic, LogLevels(logging.DEBUG, {"fn": logging.ERROR}).to_json(), qos=1, retain=True
        )
        await _until(lambda: gate.level == logging.DEBUG, "the core's level")
        assert gate.threshold("function:fn") == logging.ERROR
        assert gate.threshold("function:other") == logging.INFO  # the config's
        assert root.level == logging.DEBUG  # lowered: the core's debug records exist
        kept = LogLevels.from_json((data / "log-levels.json").read_bytes())
        assert kept == LogLevels(logging.DEBUG, {"fn": logging.ERROR})

        bundles = "$hedgerow/cores/pi-1/support-bundle"
        expired = SupportBundleRequest("sb-00000000deadbeef", expires_at=1.0)
        await cloud.broker.publish(bundles, expired.to_json(), qos=1)
        await cloud.broker.publish(bundles, b"", qos=1)
        await cloud.broker.publish(topic, LogLevels(None, {"fn": 30}).to_json(), qos=1, retain=True)
        await _until(lambda: gate.level == logging.INFO, "the next levels")  # after those two
        assert core._support_bundles == set()
        assert root.level == logging.INFO  # back up with the core's level

    await cloud.stop_mqtt()  # the next start applies what it kept, without the cloud
    async with running_core(cloud, data) as core:
        assert core._log_gate is not None
        assert core._log_gate.threshold("function:fn") == logging.WARNING
        assert core._function_log_level("fn") == logging.INFO  # never above INFO locally


class SlowStopRuntime(FakeRuntime):
    """A function host that takes its time to stop, as real function processes do."""

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.5)


async def test_nothing_acknowledged_while_the_core_stops_is_lost(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    """A device publishing at QoS 1 while the core stops gracefully (an update's restart):
    every PUBACK it got is a message in the spool. Devices are disconnected before the
    router leaves, so none is acknowledged and then routed nowhere while functions stop."""
    data = tmp_path / "core"
    config = load_config(cloud.provision(data, free_port(), "[spool]\nfsync = 'normal'\n", ""))
    acked: list[int] = []
    async with CoreDaemon(config, runtime_factory=SlowStopRuntime) as core:
        await cloud.deploy(
            document("d-1", things=("a",), subscriptions=(("thing:a", "data/#", "cloud"),))
        )
        await deployed(cloud, core, "d-1")
        await cloud.stop_mqtt()  # everything stays in the spool, to be counted there
        assert core.connector is not None
        await asyncio.wait_for(_cleared(core.connector.connected), 5)

        async def publish() -> None:
            async with thing_client(cloud, core, cloud.thing("a")) as device:
                for seq in range(100_000):
                    await device.publish(f"data/{seq}", str(seq).encode(), qos=1)
                    acked.append(seq)

        device_task = asyncio.create_task(publish())
        while len(acked) < 50:
            await asyncio.sleep(0.01)
    # the core has stopped: the device was told so and its last publish failed
    with pytest.raises(ClientError):
        await asyncio.wait_for(device_task, 5)
    assert len(acked) >= 50
    async with CoreDaemon(config, runtime_factory=FakeRuntime) as core:
        spooled = {int(r.payload) for r in core.spool.peek(0, len(acked) + 100)}
    missing = sorted(set(acked) - spooled)
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged messages lost: {missing[:10]}"
