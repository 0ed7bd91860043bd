"""Benchmark the core (``hedgerow core run`` as a real process) between things and a cloud.

    .venv/bin/python bench/core.py            # full run (about a minute)
    .venv/bin/python bench/core.py --quick    # short windows

Measures:

1. pipeline throughput thing -> core -> cloud, 100 things over mutual TLS, QoS 1 both legs,
   sustained for a window, then checks that every acknowledged message reached the cloud;
2. core RSS idle, and with 500 connected things;
3. deployment latency: from the cloud publishing a deployment to a new route carrying a
   thing's messages to the cloud (p50 / max of several deployments);
4. idle bytes to the cloud: measured cost of one keepalive round trip and one heartbeat on
   the wire (TLS included), scaled to a day with the defaults (keepalive 300 s,
   heartbeat 600 s).

The cloud is the tests' stand-in (``tests/core/fakecloud.py``: a hedgerow Broker as the
cloud MQTT endpoint and the /core/v1 device API, mutual TLS) running in this process, which
is also the load generator (raw sockets, pre-encoded MQTT 3.1.1). The core is pinned to
CPU 0, this process to CPU 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port  # noqa: E402
from tests.core.fakecloud import FakeCloud  # noqa: E402
from tests.core.helpers import document, function_entry, function_zip  # noqa: E402

from hedgerow import pki  # noqa: E402
from hedgerow.broker import Identity  # noqa: E402
from hedgerow.mqtt.packets import Publish  # noqa: E402

CORE_CPU = 0
BENCH_CPU = 1
THINGS = 100
IDLE_THINGS = 500
WINDOW = 50  # QoS 1 messages in flight per thing
SPOOL_BYTES = 1024 * 1024 * 1024


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">H", len(raw)) + raw


def connect_packet(client_id: str) -> bytes:
    body = _str("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 600) + _str(client_id)
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, packet_id: int, payload: bytes) -> bytes:
    body = _str(topic) + struct.pack(">H", packet_id) + payload
    return b"\x32" + _varint(len(body)) + body


class CountingCloud(FakeCloud):
    """Counts load messages by id instead of keeping them."""

    def __init__(self, directory: Path, root: pki.Issued) -> None:
        super().__init__(directory, root)
        self.load_ids: set[int] = set()
        self.load_total = 0
        self.last_load_at = 0.0
        self.first_seen: dict[str, float] = {}

    def _intercept(self, identity: Identity, publish: Publish) -> None:
        if publish.topic.startswith("load/"):
            self.load_total += 1
            self.load_ids.add(int(publish.payload[:12]))
            self.last_load_at = time.perf_counter()
            return
        if publish.topic.startswith("latency/"):
            self.first_seen.setdefault(publish.topic, time.perf_counter())
            return
        super()._intercept(identity, publish)


class Thing:
    """A raw MQTT 3.1.1 device over mutual TLS (pre-encoded packets, PUBACKs counted)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.name = f"thing-{index}"
        self.acked = 0
        self.sent = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self, port: int, ctx: ssl.SSLContext) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"
        )
        self.writer.write(connect_packet(self.name))
        connack = await asyncio.wait_for(self.reader.readexactly(4), 30)
        assert connack[0] == 0x20 and connack[3] == 0, connack

    async def run(self, stop: float, accepted: list[int]) -> None:
        assert self.reader is not None and self.writer is not None
        topic = f"load/{self.name}"
        base = self.index * 10_000_000
        pad = b" " * 88
        pending: list[int] = []
        next_id = 1
        buffered = b""

        def send(n: int) -> None:
            nonlocal next_id
            chunks = []
            for _ in range(n):
                seq = base + self.sent
                chunks.append(publish_packet(topic, next_id, b"%012d" % seq + pad))
                pending.append(seq)
                self.sent += 1
                next_id = next_id % 65535 + 1
            self.writer.write(b"".join(chunks))  # type: ignore[union-attr]

        send(WINDOW)
        while True:
            data = await self.reader.read(65536)
            if not data:
                return
            buffered += data
            n = len(buffered) // 4
            buffered = buffered[n * 4 :]
            done, pending[:] = pending[:n], pending[n:]
            accepted.extend(done)
            self.acked += n
            if time.perf_counter() < stop:
                send(n)
            elif not pending:
                return

    async def run_rate(self, rate: float, stop: float, accepted: list[int]) -> None:
        """Offer ``rate`` msg/s (in 10 ms bursts) until ``stop``; count PUBACKs as they come."""
        assert self.reader is not None and self.writer is not None
        topic = f"load/{self.name}"
        base = self.index * 10_000_000 + 5_000_000
        pad = b" " * 88
        pending: list[int] = []
        next_id = 1
        sent = 0

        async def read_acks() -> None:
            buffered = b""
            assert self.reader is not None
            while data := await self.reader.read(65536):
                buffered += data
                n = len(buffered) // 4
                buffered = buffered[n * 4 :]
                accepted.extend(pending[:n])
                del pending[:n]
                if time.perf_counter() >= stop and not pending:
                    return

        reader = asyncio.create_task(read_acks())
        start = time.perf_counter()
        while (now := time.perf_counter()) < stop:
            due = int((now - start) * rate) - sent
            chunks = []
            for _ in range(max(due, 0)):
                seq = base + sent
                chunks.append(publish_packet(topic, next_id, b"%012d" % seq + pad))
                pending.append(seq)
                sent += 1
                next_id = next_id % 65535 + 1
            if chunks:
                self.writer.write(b"".join(chunks))
            await asyncio.sleep(0.01)
        # The last acknowledgements may have arrived before ``stop``: then the reader waits
        # for data that never comes, so wait on what is pending, not on the reader.
        deadline = time.perf_counter() + 60
        while pending and not reader.done() and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        if pending:
            raise TimeoutError(f"{self.name}: {len(pending)} publishes never acknowledged")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def start_core(config: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hedgerow", "core", "run", "--config", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=err,
        )  # fmt: skip
    os.sched_setaffinity(proc.pid, {CORE_CPU})
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if b"serving on" not in line:
        raise RuntimeError(f"the core did not start: {log.read_text()[-2000:]}")
    return proc


async def stop_core(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


class ByteProxy:
    """A TCP relay between the core and the cloud MQTT endpoint counting bytes each way."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = 0
        self.down = 0
        self.port = free_port()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            try:
                while data := await src.read(65536):
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_w, True), pump(up_r, writer, False))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def spool_drops(metrics_port: int) -> int:
    """Records the core's spool dropped by its overflow policy (from its Prometheus text)."""
    import httpx

    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    total = 0
    for line in text.splitlines():
        if line.startswith("hedgerow_core_spool{") and "dropped" in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


async def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())


async def deployed(cloud: FakeCloud, deployment_id: str, timeout: float = 30) -> None:
    ok = await wait_until(
        lambda: any(
            s["deployment_id"] == deployment_id and s["status"] == "Success"
            for s in cloud.statuses()
        ),
        timeout,
    )
    if not ok:
        raise RuntimeError(f"deployment {deployment_id} did not succeed: {cloud.statuses()[-3:]}")


async def measure_idle_bytes(cloud: FakeCloud, tmp: Path, seconds: float) -> dict[str, float]:
    """Cost of keepalive round trips and heartbeats on the wire, scaled to a day."""
    results: dict[str, float] = {}
    for phase, extra in (
        ("ping", "keepalive = 1\n[status]\nmetrics_port = 0\nheartbeat_interval = 100000\n"),
        ("heartbeat", "keepalive = 65535\n[status]\nmetrics_port = 0\nheartbeat_interval = 1\n"),
    ):
        proxy = ByteProxy(cloud.mqtt_port)
        await proxy.start()
        data = tmp / f"idle-{phase}"
        config = cloud.provision(data, free_port())
        text = config.read_text().replace(f"127.0.0.1:{cloud.mqtt_port}", f"127.0.0.1:{proxy.port}")
        text = text.replace("[status]\nmetrics_port = 0\n", "")
        text = text.replace("backoff_cap = 0.5\n", "backoff_cap = 0.5\n" + extra)
        config.write_text(text)
        proc = await start_core(config, tmp / f"idle-{phase}.log")
        await asyncio.sleep(2.0)  # connected, first heartbeat and status traffic done
        up0, down0 = proxy.up, proxy.down
        await asyncio.sleep(seconds)
        per_second = (proxy.up - up0 + proxy.down - down0) / seconds
        results[phase] = per_second  # bytes per ping round trip (1 s) / per heartbeat (1 s)
        await stop_core(proc)
        await proxy.close()
    per_day = results["ping"] * 86400 / 300 + results["heartbeat"] * 86400 / 600
    return {
        "ping_round_trip_bytes": results["ping"],
        "heartbeat_bytes": results["heartbeat"],
        "bytes_per_day": per_day,
    }


async def bench(quick: bool) -> dict[str, Any]:
    os.sched_setaffinity(0, {BENCH_CPU})
    tmp = Path(tempfile.mkdtemp(prefix="hedgerow-bench-core-"))
    root = pki.make_ca("Bench Root CA")
    results: dict[str, Any] = {}
    async with CountingCloud(tmp / "cloud", root) as cloud:
        local_port = free_port()
        metrics_port = free_port()
        # a spool big enough for the whole burst (the default 64 MiB would apply drop-oldest)
        config = cloud.provision(
            tmp / "core",
            local_port,
            f"[spool]\nfsync = 'always'\nmax_bytes = {SPOOL_BYTES}\n[status]\nmetrics_port = {metrics_port}\n",
        )
        proc = await start_core(config, tmp / "core.log")
        try:
            names = [f"thing-{i}" for i in range(IDLE_THINGS)]
            subs = tuple((f"thing:{n}", "load/#", "cloud") for n in names[:THINGS])
            await cloud.deploy(document("d-1", things=tuple(names), subscriptions=subs))
            await deployed(cloud, "d-1")
            await asyncio.sleep(2)
            results["rss_idle_mb"] = round(rss_mb(proc.pid), 1)

            # 1. throughput
            things = [Thing(i) for i in range(THINGS)]
            contexts = []
            for t in things:
                contexts.append(cloud.thing_context(cloud.thing(t.name)))
            await asyncio.gather(
                *(t.connect(local_port, c) for t, c in zip(things, contexts, strict=True))
            )
            accepted: list[int] = []
            duration = 3.0 if quick else 10.0
            cpu_before = cpu_seconds(proc.pid)
            start = time.perf_counter()
            await asyncio.gather(*(t.run(start + duration, accepted) for t in things))
            elapsed = time.perf_counter() - start
            drained = await wait_until(lambda: set(accepted) <= cloud.load_ids, 300)
            end_to_end = cloud.last_load_at - start
            core_cpu = cpu_seconds(proc.pid) - cpu_before
            lost = len(set(accepted) - cloud.load_ids)
            spool_dropped = await spool_drops(metrics_port)
            results["throughput"] = {
                "things": THINGS,
                "accepted": len(accepted),
                "accepted_per_s": round(len(accepted) / elapsed),
                "delivered_to_cloud_per_s": round(len(cloud.load_ids) / end_to_end),
                # load-independent: core CPU per message for the whole path (in, spool, out)
                "core_cpu_us_per_message": round(core_cpu / max(len(accepted), 1) * 1e6, 1),
                "implied_msgs_per_s_on_one_free_cpu": round(len(accepted) / core_cpu)
                if core_cpu
                else None,
                "lost": lost,
                "spool_dropped_by_policy": spool_dropped,
                "duplicates": cloud.load_total - len(cloud.load_ids),
                "drained": drained,
                "window_s": duration,
            }
            results["rss_after_load_mb"] = round(rss_mb(proc.pid), 1)

            # 1b. sustained: a fixed offered rate; does the pipeline keep up, losing nothing?
            offered = 20_000
            window = 3.0 if quick else 10.0
            before = len(cloud.load_ids)
            steady: list[int] = []
            start = time.perf_counter()
            await asyncio.gather(
                *(t.run_rate(offered / THINGS, start + window, steady) for t in things)
            )
            in_window = len(cloud.load_ids) - before
            caught_up = await wait_until(lambda: set(steady) <= cloud.load_ids, 120)
            lag = time.perf_counter() - start - window
            results["sustained"] = {
                "offered_per_s": offered,
                "accepted": len(steady),
                "delivered_within_window_per_s": round(in_window / window),
                "caught_up_after_window_s": round(lag, 2),
                "lost": len(set(steady) - cloud.load_ids),
                "drained": caught_up,
            }

            # 2. RSS with 500 connected things
            more = [Thing(i) for i in range(THINGS, IDLE_THINGS)]
            more_ctx = [cloud.thing_context(cloud.thing(t.name)) for t in more]
            for i in range(0, len(more), 50):
                await asyncio.gather(
                    *(
                        t.connect(local_port, c)
                        for t, c in zip(more[i : i + 50], more_ctx[i : i + 50], strict=True)
                    )
                )
            await asyncio.sleep(2)
            results["rss_500_things_mb"] = round(rss_mb(proc.pid), 1)
            for t in things + more:
                t.close()

            # 3. deployment latency: a new function must handle a thing's messages
            probe = Thing(0)
            await probe.connect(local_port, contexts[0])
            assert probe.writer is not None
            latencies = []
            rounds = 3 if quick else 7
            code = "def handler(event, context):\n    context.publish('latency/' + context.topic.split('/')[-1], b'ok')\n"
            for r in range(rounds):
                artifact = function_zip(f"fn_{r}", code)
                entry = function_entry(
                    f"fn-{r}", artifact, handler=f"fn_{r}.handler", encoding="binary"
                )
                round_subs = subs + ((f"thing:{names[0]}", f"lat/{r}", f"function:fn-{r}"),
                                     (f"function:fn-{r}", "latency/#", "cloud"))  # fmt: skip
                deployment_id = f"d-lat-{r}"
                t0 = time.perf_counter()
                await cloud.deploy(
                    document(
                        deployment_id,
                        things=tuple(names),
                        functions=(entry,),
                        subscriptions=round_subs,
                    ),
                    artifacts=(artifact,),
                )
                pid = 1
                while f"latency/{r}" not in cloud.first_seen and time.perf_counter() - t0 < 30:
                    probe.writer.write(publish_packet(f"lat/{r}", pid, b"x"))
                    pid = pid % 65535 + 1
                    await asyncio.sleep(0.005)
                if f"latency/{r}" not in cloud.first_seen:
                    raise RuntimeError(f"no function output: {cloud.statuses()[-2:]}")
                latencies.append(cloud.first_seen[f"latency/{r}"] - t0)
                await deployed(cloud, deployment_id)
            probe.close()
            results["deploy_latency_s"] = {
                "p50": round(statistics.median(latencies), 3),
                "max": round(max(latencies), 3),
                "rounds": rounds,
                "what": "cloud publishes a deployment with a new function -> that function's output reaches the cloud",
            }
            results["rss_with_function_mb"] = round(rss_mb(proc.pid), 1)
        finally:
            await stop_core(proc)
        results["idle"] = await measure_idle_bytes(cloud, tmp, 4.0 if quick else 8.0)
    results["deploy_latency_real_cloud_s"] = await real_cloud_deploy_latency(tmp, quick)
    return results


async def real_cloud_deploy_latency(tmp: Path, quick: bool) -> dict[str, Any]:
    """``POST /api/v1/groups/g/deployments`` on the real cloud -> a new function's output
    published by the core reaches the cloud's MQTT endpoint."""

    import httpx

    from hedgerow.cloud.config import Listen
    from hedgerow.cloud.datadir import init_data_dir
    from hedgerow.cloud.server import CloudServer

    config, _ = await asyncio.to_thread(
        init_data_dir, tmp / "real-cloud", database="",
        api=Listen("127.0.0.1", 0), device=Listen("127.0.0.1", 0), mqtt=Listen("127.0.0.1", 0),
    )  # fmt: skip
    seen: dict[str, float] = {}
    async with CloudServer(config) as server:
        assert server.broker is not None

        def note_arrival(identity: Any, publish: Any) -> None:  # returns None: ack at once
            if publish.topic.startswith("latency/"):
                seen.setdefault(publish.topic, time.perf_counter())

        server.broker.add_interceptor(note_arrival)
        headers = {"authorization": f"Bearer {server.admin_token}"}
        async with httpx.AsyncClient(base_url=server.api_url, headers=headers, timeout=30) as api:
            call = api_caller(api)
            config_path, local_port = await provision_core(call, tmp / "real-core")
            thing = await call(
                "POST", "/api/v1/things", json={"name": "probe", "groups": ["bench"]}
            )
            (tmp / "probe.pem").write_text(thing["certificate"])
            (tmp / "probe.key").write_text(thing["private_key"])
            proc = await start_core(config_path, tmp / "real-core.log")
            try:
                ctx = pki.client_context(
                    str(tmp / "real-core" / "server" / "group-cas.pem"),
                    str(tmp / "probe.pem"),
                    str(tmp / "probe.key"),
                )
                await call("POST", "/api/v1/groups/bench/deployments", json={})  # admits the probe
                probe = Thing(0)
                probe.name = "probe"
                deadline = time.perf_counter() + 30
                while True:
                    try:
                        await probe.connect(local_port, ctx)
                        break
                    except (OSError, asyncio.IncompleteReadError):
                        if time.perf_counter() > deadline:
                            raise
                        await asyncio.sleep(0.1)
                assert probe.writer is not None
                latencies = []
                for r in range(3 if quick else 5):
                    code = "def handler(event, context):\n    context.publish('latency/' + context.topic.split('/')[-1], b'ok')\n"
                    sha = (
                        await call(
                            "POST", "/api/v1/artifacts", content=function_zip(f"fn_{r}", code)
                        )
                    )["sha256"]
                    await call("POST", "/api/v1/groups/bench/functions",
                               json={"name": f"fn-{r}", "handler": f"fn_{r}.handler", "artifact": sha,
                                     "encoding": "binary"})  # fmt: skip
                    await call("POST", "/api/v1/groups/bench/subscriptions",
                               json={"source": "thing:probe", "topic": f"lat/{r}", "target": f"function:fn-{r}"})  # fmt: skip
                    if r == 0:
                        await call("POST", "/api/v1/groups/bench/subscriptions",
                                   json={"source": "function:fn-0", "topic": "latency/#", "target": "cloud"})  # fmt: skip
                    else:
                        await call("POST", "/api/v1/groups/bench/subscriptions",
                                   json={"source": f"function:fn-{r}", "topic": "latency/#", "target": "cloud"})  # fmt: skip
                    t0 = time.perf_counter()
                    await call("POST", "/api/v1/groups/bench/deployments", json={})
                    pid = 1
                    topic = f"latency/{r}"
                    while topic not in seen and time.perf_counter() - t0 < 30:
                        probe.writer.write(publish_packet(f"lat/{r}", pid, b"x"))
                        pid = pid % 65535 + 1
                        await asyncio.sleep(0.005)
                    if topic not in seen:
                        raise RuntimeError("the function's output never reached the real cloud")
                    latencies.append(seen[topic] - t0)
                probe.close()
            finally:
                await stop_core(proc)
    return {
        "p50": round(statistics.median(latencies), 3),
        "max": round(max(latencies), 3),
        "rounds": len(latencies),
        "what": "real cloud: POST deployments (what `hedgerow cloud deploy` calls) -> new function's output at the cloud",
    }


def api_caller(api: Any) -> Any:
    """``await call(method, path, **kw)`` → the JSON answer of the cloud's REST API (raises
    on a status of 300 or more)."""

    async def call(method: str, path: str, **kw: Any) -> Any:
        response = await api.request(method, path, **kw)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {response.text}")
        return response.json()

    return call


async def provision_core(call: Any, directory: Path) -> tuple[Path, int]:
    """Group ``bench`` and core ``bench-core`` in the cloud, the core's bundle unpacked into
    ``directory`` with its device port on loopback and no metrics listener: (config, port)."""
    import base64
    import tomllib

    import tomli_w

    from hedgerow.core.bundle_unpack import unpack_bundle

    await call("POST", "/api/v1/groups", json={"name": "bench"})
    created = await call("POST", "/api/v1/cores", json={"name": "bench-core", "group": "bench"})
    bundle = directory.with_name(directory.name + ".tar.gz")
    bundle.write_bytes(base64.b64decode(created["bundle"]))
    config_path = unpack_bundle(bundle, directory)
    settings = tomllib.loads(config_path.read_text())
    local_port = free_port()
    settings["local"] = {"host": "127.0.0.1", "port": local_port, "hosts": ["127.0.0.1"]}
    settings["status"] = {"metrics_port": 0}
    config_path.write_text(tomli_w.dumps(settings))
    return config_path, local_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop

        results = uvloop.run(bench(args.quick))
    except ImportError:
        results = asyncio.run(bench(args.quick))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
