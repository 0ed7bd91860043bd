"""A real ``hedgerow core run`` process, killed with SIGKILL in the middle of a QoS 1 stream
while the cloud is unreachable, restarted, and then the cloud restored: every message the
core acknowledged reaches the cloud (duplicates are counted, none is lost)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hedgerow.client import Client, ClientError

from ..conftest import free_port
from .fakecloud import FakeCloud
from .helpers import document


async def start_core(config: Path, log: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hedgerow", "core", "run", "--config", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=err, env=env,
        )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert b"serving on" in line, log.read_text()
    return proc


async def stop_core(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.stdout is not None
    await proc.stdout.read()


async def stream(client: Client, start: int, accepted: list[int], stop: asyncio.Event) -> None:
    """Publish QoS 1 with up to 100 in flight; record every id the core acknowledged."""
    pending: set[asyncio.Future[None]] = set()

    def done(n: int) -> Any:
        def record(f: asyncio.Future[None]) -> None:
            pending.discard(f)
            if not f.cancelled() and f.exception() is None:
                accepted.append(n)

        return record

    i = start
    try:
        while not stop.is_set():
            future = client.publish_nowait(f"data/{i}", str(i).encode(), qos=1)
            pending.add(future)
            future.add_done_callback(done(i))
            i += 1
            if len(pending) >= 100:
                await asyncio.wait(set(pending), return_when=asyncio.FIRST_COMPLETED)
    except ClientError:
        pass
    if pending:
        await asyncio.wait(set(pending))


async def wait_accepted(accepted: list[int], count: int) -> None:
    async with asyncio.timeout(30):
        while len(accepted) < count:
            await asyncio.sleep(0.002)


@pytest.mark.slow
async def test_kill_9_mid_stream_with_cloud_away_loses_nothing(
    tmp_path: Path, test_pki: Any
) -> None:
    async with FakeCloud(tmp_path / "cloud", test_pki.root) as cloud:
        local_port = free_port()
        config = cloud.provision(tmp_path / "core", local_port)
        log = tmp_path / "core.stderr"
        ctx = cloud.thing_context(cloud.thing("sensor"))
        accepted: list[int] = []
        proc = await start_core(config, log)
        try:
            subs = (("thing:sensor", "data/#", "cloud"),)
            await cloud.deploy(document("d-1", things=("sensor",), subscriptions=subs))
            await cloud.wait_for(
                lambda: any(s["status"] == "Success" for s in cloud.statuses()), 20
            )
            await cloud.stop_mqtt()
            await cloud.stop_https()

            client = Client(
                "127.0.0.1", local_port, client_id="sensor", ssl=ctx, server_hostname="127.0.0.1"
            )
            await client.connect()
            stop = asyncio.Event()
            task = asyncio.create_task(stream(client, 0, accepted, stop))
            await wait_accepted(accepted, 3000)
            proc.kill()  # SIGKILL in the middle of the stream
            await proc.wait()
            stop.set()
            await asyncio.wait_for(task, 10)
            client.abort()
            killed_at = len(accepted)

            proc = await start_core(config, log)  # restart, still without the cloud
            client = Client(
                "127.0.0.1", local_port, client_id="sensor", ssl=ctx, server_hostname="127.0.0.1"
            )
            await client.connect()
            stop = asyncio.Event()
            task = asyncio.create_task(stream(client, 1_000_000, accepted, stop))
            await wait_accepted(accepted, killed_at + 500)
            stop.set()
            await asyncio.wait_for(task, 10)
            await client.disconnect()

            await cloud.start_https()
            await cloud.start_mqtt()
            wanted = set(accepted)

            def received() -> list[int]:
                return [int(p.payload) for p in cloud.telemetry("data/")]

            await cloud.wait_for(lambda: wanted <= set(received()), 60)
            counts = Counter(received())
            duplicates = sum(n - 1 for n in counts.values())
            assert not wanted - set(counts)  # none lost
            logs = tmp_path / "core" / "logs"
            assert "core.connector.connected" in (logs / "connector.log").read_text()
            assert "core.local.listening" in (logs / "core.log").read_text()
            dups = sorted(k for k, n in counts.items() if n > 1)
            print(
                f"accepted={len(wanted)} received={sum(counts.values())} duplicates={duplicates} {dups[:3]} {dups[-3:]}"
            )
        finally:
            await stop_core(proc)


async def test_core_process_notifies_systemd_ready_and_watchdog(
    tmp_path: Path, test_pki: Any
) -> None:
    import socket

    async with FakeCloud(tmp_path / "cloud", test_pki.root) as cloud:
        config = cloud.provision(tmp_path / "core", free_port())
        path = tmp_path / "notify.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(path))
            sock.setblocking(False)
            env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"}
            env.pop("WATCHDOG_PID", None)
            with (tmp_path / "core.stderr").open("ab") as err:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "hedgerow", "core", "run", "--config", str(config),
                    stdout=asyncio.subprocess.PIPE, stderr=err, env=env,
                )  # fmt: skip
            try:
                loop = asyncio.get_running_loop()
                seen: list[bytes] = []
                async with asyncio.timeout(30):
                    while b"READY=1" not in seen or seen.count(b"WATCHDOG=1") < 2:
                        seen.append(await loop.sock_recv(sock, 100))
            finally:
                await stop_core(proc)
        assert seen.index(b"READY=1") < len(seen) - 1
