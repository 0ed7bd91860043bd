"""What keeping Mosquitto's dynamic security in step costs (``broker_login =
"mosquitto-dynsec"``): the cloud's real ``DynsecControl``/``DynsecSync`` against a private
Mosquitto 2.0 with the dynsec plugin (loopback, no TLS: the cost measured is the plugin's
and the plan's), the registry given in memory.

    .venv/bin/python bench/mosquitto_dynsec.py [--cores 1000]

Prints, for N cores: the full reconcile from an empty broker (every client and role
made), a reconcile with nothing to do (the periodic job's usual cost), one core synced
(a revocation), every role edited (a route change for every group), and a broker that
lost its state brought back (restart, first reconcile); and the dynsec file's size. An
anonymous probe client meanwhile times its own QoS 1 round trips through the broker
(Mosquitto runs the plugin on its one thread).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hedgerow.client import Client
from hedgerow.cloud.broker_acl import CoreStanding, Routes
from hedgerow.cloud.broker_credentials import CLOUD_USER, BrokerSecret
from hedgerow.cloud.mosquitto_dynsec import DynsecControl, DynsecSync

PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    def __init__(self, directory: Path, password: str) -> None:
        self.directory = directory
        self.password = password
        self.port = free_port()
        self.dynsec = directory / "dynamic-security.json"
        self.process: subprocess.Popen[bytes] | None = None

    def init(self) -> None:
        self.dynsec.unlink(missing_ok=True)
        ctrl = shutil.which("mosquitto_ctrl") or "mosquitto_ctrl"
        subprocess.run(
            [ctrl, "dynsec", "init", str(self.dynsec), CLOUD_USER, self.password],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        conf = self.directory / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nuser root\nplugin {PLUGIN}\n"
            f"plugin_opt_config_file {self.dynsec}\nallow_anonymous true\n"
            "persistence false\nlog_dest none\n"
        )
        mosquitto = shutil.which("mosquitto") or "mosquitto"
        self.process = subprocess.Popen([mosquitto, "-c", str(conf)])

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


async def wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"port {port} never opened")


class Probe:
    """Another client's round trip through the broker (QoS 1 to itself every 50 ms)
    while the plugin works: Mosquitto runs the plugin on its one thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.rtts: list[float] = []

    async def run(self) -> None:
        async with Client("127.0.0.1", self.port, client_id="bench-probe") as client:
            await client.subscribe("probe", qos=1)
            while True:
                started = time.perf_counter()
                await client.publish("probe", b"x", qos=1)
                await client.get_message()
                self.rtts.append(time.perf_counter() - started)
                await asyncio.sleep(0.05)

    def worst(self) -> str:
        rtts, self.rtts = sorted(self.rtts), []
        if not rtts:
            return "no round trip"
        return f"probe round trip p50 {rtts[len(rtts) // 2] * 1000:.0f} ms, max {rtts[-1] * 1000:.0f} ms"


async def run(cores: int) -> list[tuple[str, float]]:
    secret = BrokerSecret(b"bench" * 8)
    registry: list[CoreStanding] = []
    routes: dict[str, Routes] = {}

    async def standings() -> list[CoreStanding]:
        return list(registry)

    async def standing(core: str) -> CoreStanding | None:
        return next((s for s in registry if s.name == core), None)

    results: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp), secret.cloud_password())
        broker.init()
        broker.start()
        await wait_port(broker.port)
        control = DynsecControl(
            f"mqtt://127.0.0.1:{broker.port}",
            None,
            client_id="bench-dynsec",
            username=CLOUD_USER,
            password=secret.cloud_password(),
        )
        sync = DynsecSync(
            control,
            standings=standings,
            standing=standing,
            routes=lambda group: routes.get(group, Routes((), ())),
            password=secret.core_password,
            cloud_user=CLOUD_USER,
        )
        task = asyncio.create_task(control.run(sync.on_connected))
        try:
            async with asyncio.timeout(30):  # the cloud's role given (one reconnect)
                await sync.reconciled.wait()
            for index in range(cores):
                registry.append(CoreStanding(f"core-{index:05d}", f"group-{index:05d}", "fp0"))
                routes[f"group-{index:05d}"] = Routes([f"plant/{index}/#"], ["commands/#"])

            await control.execute(  # the probe may publish and hear its own topic
                [
                    {
                        "command": "createRole",
                        "rolename": "bench-probe",
                        "acls": [
                            {"acltype": t, "topic": "probe", "allow": True}
                            for t in (
                                "publishClientSend",
                                "publishClientReceive",
                                "subscribeLiteral",
                            )
                        ],
                    },
                    {
                        "command": "createGroup",
                        "groupname": "bench-probe",
                        "roles": [{"rolename": "bench-probe"}],
                    },
                    {"command": "setAnonymousGroup", "groupname": "bench-probe"},
                ]
            )
            probe = Probe(broker.port)
            probing = asyncio.create_task(probe.run())

            async def timed(label: str, step: object) -> None:
                probe.rtts.clear()
                started = time.perf_counter()
                await step  # type: ignore[misc]
                results.append((label, time.perf_counter() - started))
                print(f"{label:55s} {results[-1][1]:8.3f} s  ({probe.worst()})", flush=True)

            await timed(f"reconcile {cores} cores from an empty broker", sync.reconcile())
            await timed(f"reconcile {cores} cores, nothing to do", sync.reconcile())
            registry.pop(0)
            await timed("one core synced (revoked: deleted)", sync.sync_core("core-00000"))
            for group in routes:
                routes[group] = Routes([*routes[group].to_cloud, "extra/#"], ["commands/#"])
            await timed(f"reconcile, every role edited ({cores - 1} cores)", sync.reconcile())
            size = broker.dynsec.stat().st_size
            probing.cancel()
            await asyncio.gather(probing, return_exceptions=True)

            broker.stop()
            broker.init()  # its state lost: the administrator only
            sync.reconciled.clear()
            started = time.perf_counter()
            broker.start()
            async with asyncio.timeout(120):
                await sync.reconciled.wait()
            took = time.perf_counter() - started
            results.append(("broker restarted empty to reconciled", took))
            print(f"{'broker restarted empty to reconciled (backoff incl.)':55s} {took:8.3f} s")
            print(f"dynsec file with {cores - 1} cores: {size / 1e6:.2f} MB")
            assert sync.refused == 0, f"{sync.refused} commands refused"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            broker.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"Mosquitto dynsec reconcile, {args.cores} cores, python {sys.version.split()[0]}")
    asyncio.run(run(args.cores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
