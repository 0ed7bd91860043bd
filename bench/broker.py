"""Load-test Hedgerow's MQTT broker against Mosquitto, in the same run, plain and mutual TLS.

    .venv/bin/python bench/broker.py            # full run (a few minutes at most)
    .venv/bin/python bench/broker.py --quick    # short windows, for a smoke check

The load generator is this process: asyncio (the standard loop) over raw sockets, with
MQTT 3.1.1 packets encoded once up front by the small helpers below, never the broker's
code. Each broker runs as its own process pinned to one core; the generator is pinned to
another. Every scenario starts a fresh broker and is bounded in time.

Mosquitto is configured fairly: max_inflight_messages 1000, max_queued_messages 100000
(otherwise its defaults), persistence off, logging off. Hedgerow runs with its defaults
(in-flight window 1000, queue 100000).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import mosquitto_conf  # noqa: E402  (bench/mosquitto_conf.py: the script's own directory)

from hedgerow import pki  # noqa: E402  (certificates for the TLS runs only)

PAYLOAD_SIZE = 100
BROKER_CPU = 0
LOADGEN_CPU = 1
STORM_CLIENTS = 500
IDLE_CLIENTS = 500
LATENCY_RATE = 1000  # msg/s
SCENARIO_TIMEOUT = 40.0
#: --persist: both brokers keep their state on disk (Hedgerow --persist, Mosquitto
#: persistence true), to measure what persistence costs.
PERSIST = False
#: --only WORD: run just the scenarios whose name contains one of these words.
ONLY: list[str] = []


# ---- pre-encoded MQTT 3.1.1 packets (the generator's own, deliberately minimal) -------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def connect_packet(client_id: str, keepalive: int = 600, clean: bool = True) -> bytes:
    flags = 0x02 if clean else 0x00
    body = _str("MQTT") + bytes([4, flags]) + struct.pack(">H", keepalive) + _str(client_id)
    return b"\x10" + _varint(len(body)) + body


def subscribe_packet(topic_filter: str, qos: int, pid: int = 1) -> bytes:
    body = struct.pack(">H", pid) + _str(topic_filter) + bytes([qos])
    return b"\x82" + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, qos: int = 0, pid: int = 0) -> bytes:
    body = _str(topic) + (struct.pack(">H", pid) if qos else b"") + payload
    return bytes([0x30 | (qos << 1)]) + _varint(len(body)) + body


PAYLOAD = b'{"temperature": 21.5, "humidity": 40.2, "pad": "' + b"x" * 100
PAYLOAD = PAYLOAD[: PAYLOAD_SIZE - 2] + b'"}'
assert len(PAYLOAD) == PAYLOAD_SIZE


def topic_of(i: int) -> str:
    return f"bench/{i:04d}"  # every topic has the same length: packets have the same size


# ---- brokers -----------------------------------------------------------------------------


@dataclass
class TLSFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_context(self) -> ssl.SSLContext:
        return pki.client_context(str(self.ca), str(self.client_cert), str(self.client_key))


def make_tls(directory: Path) -> TLSFiles:
    root = pki.make_ca("Bench Root CA")
    server = pki.issue(root, "bench-server", unit="server", server_hosts=("127.0.0.1", "localhost"))
    client = pki.issue(root, "bench-client", unit="thing")
    files = TLSFiles(
        *(directory / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key"))
    )
    files.ca.write_bytes(root.cert_pem)
    files.server_cert.write_bytes(server.cert_pem)
    files.server_key.write_bytes(server.key_pem)
    files.client_cert.write_bytes(client.cert_pem)
    files.client_key.write_bytes(client.key_pem)
    # mosquitto started as root drops to its own user before reading these: let it read them
    directory.chmod(0o755)
    for path in (
        files.ca,
        files.server_cert,
        files.server_key,
        files.client_cert,
        files.client_key,
    ):
        path.chmod(0o644)
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class BrokerProcess:
    def __init__(self, kind: str, workdir: Path, tls: TLSFiles | None) -> None:
        self.kind = kind
        self.workdir = workdir
        self.tls = tls
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.kind == "hedgerow":
            cmd = [
                sys.executable,
                "-m",
                "hedgerow",  # exactly the `hedgerow broker` command a user runs
                "broker",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ]
            if self.tls:
                cmd += [
                    "--tls-cert",
                    str(self.tls.server_cert),
                    "--tls-key",
                    str(self.tls.server_key),
                ]
                cmd += ["--tls-ca", str(self.tls.ca), "--require-client-cert"]
            if PERSIST:
                cmd += ["--persist", str(self.workdir / f"hedgerow-{self.port}")]
            return cmd
        tls = (self.tls.ca, self.tls.server_cert, self.tls.server_key) if self.tls else None
        text = mosquitto_conf.config(
            self.port, persist_dir=self.workdir if PERSIST else None, tls=tls
        )
        return mosquitto_conf.command(self.workdir / f"mosquitto-{self.port}.conf", text)

    def start(self) -> None:
        cmd = ["taskset", "-c", str(BROKER_CPU), *self.command()]
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                time.sleep(0.2)  # let it settle (imports done, loop idle)
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not start listening")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


# ---- generator protocols -----------------------------------------------------------------


class Client(asyncio.Protocol):
    """Connects, then hands incoming bytes to ``on_data`` once CONNACK (4 bytes) arrived."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.transport: asyncio.Transport | None = None
        self.connected = asyncio.get_running_loop().create_future()
        self.skip = 4
        self.suback: asyncio.Future[None] | None = None
        self.paused = False
        self.lost = False
        #: False: a persistent session (clean session 0), kept across a disconnect
        self.clean = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(
            asyncio.Transport, transport
        )  # uvloop's are not asyncio.Transport subclasses
        self.transport = transport
        transport.set_write_buffer_limits(256 * 1024, 64 * 1024)
        transport.write(connect_packet(self.client_id, clean=self.clean))

    def data_received(self, data: bytes) -> None:
        if self.skip:
            take = min(self.skip, len(data))
            self.skip -= take
            data = data[take:]
            if not self.skip:
                if not self.connected.done():
                    self.connected.set_result(None)
                elif self.suback is not None and not self.suback.done():
                    self.suback.set_result(None)
        if data:
            self.on_data(data)

    def on_data(self, data: bytes) -> None:
        pass

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.on_resume()

    def on_resume(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(f"{self.client_id}: lost before CONNACK"))


class Publisher0(Client):
    """Writes QoS 0 PUBLISH blocks as fast as the transport takes them."""

    def __init__(self, client_id: str, topic: str) -> None:
        super().__init__(client_id)
        self.block = publish_packet(topic, PAYLOAD) * 64
        self.running = False

    def pump(self) -> None:
        """A few blocks per loop turn, so the subscriber's reads are never starved."""
        t = self.transport
        for _ in range(4):
            if not self.running or self.paused or t is None or t.is_closing():
                return
            t.write(self.block)
        asyncio.get_running_loop().call_soon(self.pump)

    def on_resume(self) -> None:
        self.pump()


class Publisher1(Client):
    """QoS 1: two blocks of 100 packet ids in flight, the next block once one is acknowledged."""

    BLOCK = 100

    def __init__(self, client_id: str, topic: str) -> None:
        super().__init__(client_id)
        self.blocks = [
            b"".join(
                publish_packet(topic, PAYLOAD, 1, k * self.BLOCK + i + 1) for i in range(self.BLOCK)
            )
            for k in range(2)
        ]
        self.acked_bytes = 0
        self.sent_blocks = 0
        self.running = False

    def start(self) -> None:
        assert self.transport is not None
        self.transport.write(self.blocks[0] + self.blocks[1])
        self.sent_blocks = 2

    def on_data(self, data: bytes) -> None:
        self.acked_bytes += len(data)
        acked_blocks = self.acked_bytes // (4 * self.BLOCK)
        t = self.transport
        while self.running and t is not None and self.sent_blocks - acked_blocks < 2:
            t.write(self.blocks[self.sent_blocks % 2])
            self.sent_blocks += 1


class Subscriber(Client):
    """Counts delivered PUBLISH packets (all the same size); acknowledges QoS 1."""

    def __init__(self, client_id: str, packet_size: int, qos: int) -> None:
        super().__init__(client_id)
        self.packet_size = packet_size
        self.qos = qos
        self.bytes = 0
        self.pending = b""
        self.pid_offset = packet_size - PAYLOAD_SIZE - 2

    @property
    def count(self) -> int:
        return self.bytes // self.packet_size

    def on_data(self, data: bytes) -> None:
        self.bytes += len(data)
        if self.qos == 0:
            return
        buf = self.pending + data if self.pending else data
        size = self.packet_size
        whole = len(buf) - len(buf) % size
        off = self.pid_offset
        acks = b"".join(b"\x40\x02" + buf[i + off : i + off + 2] for i in range(0, whole, size))
        self.pending = buf[whole:]
        if acks and self.transport is not None:
            self.transport.write(acks)


class LatencySubscriber(Client):
    def __init__(self, client_id: str, packet_size: int) -> None:
        super().__init__(client_id)
        self.packet_size = packet_size
        self.pending = b""
        self.samples: list[float] = []

    def on_data(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        buf = self.pending + data
        size = self.packet_size
        while len(buf) >= size:
            sent = int(buf[size - PAYLOAD_SIZE : size - PAYLOAD_SIZE + 20])
            self.samples.append((now - sent) / 1e6)
            buf = buf[size:]
        self.pending = buf


# ---- scenarios ---------------------------------------------------------------------------


@dataclass
class Target:
    port: int
    ssl: ssl.SSLContext | None


async def connect(target: Target, protocol: Client) -> Client:
    loop = asyncio.get_running_loop()
    await loop.create_connection(
        lambda: protocol,
        "127.0.0.1",
        target.port,
        ssl=target.ssl,
        server_hostname="127.0.0.1" if target.ssl else None,
    )
    await asyncio.wait_for(protocol.connected, 10)
    return protocol


async def subscribe(target: Target, sub: Client, topic_filter: str, qos: int) -> None:
    await connect(target, sub)
    assert sub.transport is not None
    sub.skip = 5
    sub.suback = asyncio.get_running_loop().create_future()
    sub.transport.write(subscribe_packet(topic_filter, qos))
    await asyncio.wait_for(sub.suback, 10)


async def throughput(
    target: Target,
    publishers: int,
    qos: int,
    warmup: float,
    window: float,
    persistent: bool = False,
) -> float:
    topic_size = len(publish_packet(topic_of(0), PAYLOAD, qos, 1 if qos else 0))
    sub = Subscriber("bench-sub", topic_size, qos)
    sub.clean = not persistent  # a persistent session: what --persist has to keep
    await subscribe(target, sub, "bench/#", qos)
    pubs: list[Publisher0 | Publisher1] = []
    for i in range(publishers):
        pub: Publisher0 | Publisher1 = (Publisher0 if qos == 0 else Publisher1)(
            f"bench-pub-{i}", topic_of(i)
        )
        pubs.append(pub)
    await asyncio.gather(*(connect(target, p) for p in pubs))
    for p in pubs:
        p.running = True
        if isinstance(p, Publisher0):
            p.pump()
        else:
            p.start()
    await asyncio.sleep(warmup)
    start_count, start = sub.count, time.perf_counter()
    await asyncio.sleep(window)
    rate = (sub.count - start_count) / (time.perf_counter() - start)
    for p in pubs:
        p.running = False
        if p.transport:
            p.transport.abort()
    if sub.transport:
        sub.transport.abort()
    return rate


async def latency(target: Target, duration: float) -> tuple[float, float]:
    topic = topic_of(0)
    size = len(publish_packet(topic, PAYLOAD))
    sub = LatencySubscriber("bench-lat-sub", size)
    await subscribe(target, sub, topic, 0)
    pub = await connect(target, Client("bench-lat-pub"))
    assert pub.transport is not None
    loop = asyncio.get_running_loop()
    interval = 1 / LATENCY_RATE
    n = int(duration * LATENCY_RATE)
    next_at = loop.time()
    for _ in range(n):
        stamp = str(time.perf_counter_ns()).encode().rjust(20, b"0")
        pub.transport.write(publish_packet(topic, stamp + PAYLOAD[20:]))
        next_at += interval
        delay = next_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.sleep(0.2)
    samples = sorted(sub.samples[len(sub.samples) // 10 :])  # first 10%: warm-up
    pub.transport.abort()
    if sub.transport:
        sub.transport.abort()
    if len(samples) < n // 2:
        raise RuntimeError(f"only {len(samples)} of {n} latency samples arrived")
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


async def idle_memory(target: Target, pid: int) -> tuple[float, float]:
    await asyncio.sleep(0.3)
    idle = rss_kb(pid)
    clients = [Client(f"bench-idle-{i}") for i in range(IDLE_CLIENTS)]
    for i in range(0, IDLE_CLIENTS, 50):
        await asyncio.gather(*(connect(target, c) for c in clients[i : i + 50]))
    await asyncio.sleep(0.5)
    loaded = rss_kb(pid)
    for c in clients:
        if c.transport:
            c.transport.abort()
    return idle / 1024, (loaded - idle) / IDLE_CLIENTS


async def connect_storm(target: Target) -> tuple[float, int]:
    clients = [Client(f"bench-storm-{i}") for i in range(STORM_CLIENTS)]
    start = time.perf_counter()
    results = await asyncio.gather(*(connect(target, c) for c in clients), return_exceptions=True)
    elapsed = time.perf_counter() - start
    failures = sum(1 for r in results if isinstance(r, BaseException))
    for c in clients:
        if c.transport:
            c.transport.abort()
    return elapsed, failures


# ---- driver ------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    unit: str
    higher_is_better: bool
    target: float | None  # the ratio the issue asks for


ROWS = [
    Row("QoS0 throughput, 10 publishers", "msg/s", True, 0.8),
    Row("QoS0 throughput, 100 publishers", "msg/s", True, 0.8),
    Row("QoS1 throughput, 10 publishers", "msg/s", True, 0.8),
    Row("QoS1 throughput, persistent subscriber", "msg/s", True, None),
    Row("latency p50 at 1k msg/s", "ms", False, None),
    Row("latency p99 at 1k msg/s", "ms", False, 1.5),
    Row("RSS idle", "MB", False, None),
    Row("memory per idle client", "KB", False, 2.0),
    Row("500-client connect storm", "s", False, 2.0),
    Row("connect storm failures", "", False, None),
]


async def run_scenario(fn: Callable[[], Awaitable[object]], label: str) -> object:
    try:
        return await asyncio.wait_for(fn(), SCENARIO_TIMEOUT)
    except (TimeoutError, OSError, RuntimeError, ConnectionError) as exc:
        print(f"  ! {label}: {type(exc).__name__}: {exc}", flush=True)
        return None


KINDS = ("hedgerow", "mosquitto")


async def fresh(
    kind: str,
    workdir: Path,
    tls: TLSFiles | None,
    label: str,
    fn: Callable[[Target, int], Awaitable[object]],
) -> object:
    """Run one scenario against a freshly started broker, bounded in time."""
    context = tls.client_context() if tls else None
    broker = BrokerProcess(kind, workdir, tls)
    try:
        broker.start()
    except RuntimeError as exc:
        print(f"  ! {kind} {label}: {exc}", flush=True)
        broker.stop()
        return None
    try:
        return await run_scenario(
            lambda: fn(Target(broker.port, context), broker.pid), f"{kind} {label}"
        )
    finally:
        broker.stop()


def median_of(values: list[object], index: int | None = None) -> float | None:
    picked = [v[index] if index is not None else v for v in values if v is not None]  # type: ignore[index]
    return float(statistics.median(picked)) if picked else None


async def measure(
    workdir: Path, tls: TLSFiles | None, quick: bool, runs: int
) -> dict[str, dict[str, float | None]]:
    """Every scenario, Hedgerow and Mosquitto back to back (so both see the same machine
    load), ``runs`` times; the median of the runs is reported."""
    warmup, window = (0.5, 1.0) if quick else (0.5, 1.5)
    lat_duration = 1.5 if quick else 4.0
    results: dict[str, dict[str, float | None]] = {kind: {} for kind in KINDS}
    scenarios: list[tuple[str, Callable[[Target, int], Awaitable[object]], list[str]]] = [
        (
            "QoS0 throughput, 10 publishers",
            lambda t, _pid: throughput(t, 10, 0, warmup, window),
            ["QoS0 throughput, 10 publishers"],
        ),
        (
            "QoS0 throughput, 100 publishers",
            lambda t, _pid: throughput(t, 100, 0, warmup, window),
            ["QoS0 throughput, 100 publishers"],
        ),
        (
            "QoS1 throughput, 10 publishers",
            lambda t, _pid: throughput(t, 10, 1, warmup, window),
            ["QoS1 throughput, 10 publishers"],
        ),
        (
            "QoS1 throughput, persistent subscriber",
            lambda t, _pid: throughput(t, 10, 1, warmup, window, persistent=True),
            ["QoS1 throughput, persistent subscriber"],
        ),
        (
            "latency",
            lambda t, _pid: latency(t, lat_duration),
            ["latency p50 at 1k msg/s", "latency p99 at 1k msg/s"],
        ),
        ("memory", idle_memory, ["RSS idle", "memory per idle client"]),
        (
            "storm",
            lambda t, _pid: connect_storm(t),
            ["500-client connect storm", "connect storm failures"],
        ),
    ]
    if ONLY:
        scenarios = [s for s in scenarios if any(word in s[0] for word in ONLY)]
    for label, fn, names in scenarios:
        got: dict[str, list[object]] = {kind: [] for kind in KINDS}
        for _ in range(1 if label == "memory" else runs):  # memory is steady: one run
            for kind in KINDS:
                got[kind].append(await fresh(kind, workdir, tls, label, fn))
        for kind in KINDS:
            if len(names) == 1:
                results[kind][names[0]] = median_of(got[kind])
            else:
                for i, name in enumerate(names):
                    results[kind][name] = median_of(got[kind], i)
        print(f"  {label}: done", flush=True)
    return results


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "msg/s":
        return f"{value / 1000:.1f}k"
    if unit in ("ms", "s"):
        return f"{value:.3f}"
    if unit in ("MB", "KB"):
        return f"{value:.1f}"
    return f"{value:.0f}"


def table(mode: str, ours: dict[str, float | None], theirs: dict[str, float | None]) -> str:
    lines = [
        f"### {mode}",
        "",
        "| measurement | Hedgerow | Mosquitto | ratio H/M | target |",
        "|---|---|---|---|---|",
    ]
    for row in ROWS:
        a, b = ours.get(row.name), theirs.get(row.name)
        ratio = "-"
        if a is not None and b:
            ratio = f"{a / b:.2f}x"
        target = "-"
        if row.target is not None:
            target = f"{'>=' if row.higher_is_better else '<='} {row.target}x"
        unit = f" ({row.unit})" if row.unit else ""
        lines.append(
            f"| {row.name}{unit} | {fmt(a, row.unit)} | {fmt(b, row.unit)} | {ratio} | {target} |"
        )
    return "\n".join(lines)


def machine() -> str:
    model = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"machine: {model}, {os.cpu_count()} cores; Python {platform.python_version()} "
        f"({platform.python_implementation()}); {mosquitto_conf.version()}; "
        f"broker pinned to CPU {BROKER_CPU}, load generator to CPU {LOADGEN_CPU}; "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )


async def run_mode(mode: str, workdir: Path, tls_files: TLSFiles, quick: bool, runs: int) -> str:
    tls = tls_files if mode == "mutual TLS" else None
    print(f"running {mode} ...", flush=True)
    collected = await measure(workdir, tls, quick, runs)
    text = table(mode, collected["hedgerow"], collected["mosquitto"])
    print(text + "\n", flush=True)
    return text


def main_run(args: argparse.Namespace) -> None:
    modes = ["plain", "mutual TLS"]
    if args.plain_only:
        modes = ["plain"]
    elif args.tls_only:
        modes = ["mutual TLS"]
    with tempfile.TemporaryDirectory(prefix="hedgerow-bench-") as tmp:
        workdir = Path(tmp)
        tls_files = make_tls(workdir)
        output = [machine(), ""]
        for mode in modes:
            # The generator runs on the standard event loop: uvloop's TLS transport can stall
            # under sustained backpressure, and its millisecond timers make the 1 kHz
            # latency publisher bursty.
            output += [asyncio.run(run_mode(mode, workdir, tls_files, args.quick, args.runs)), ""]
        print("\n".join(output))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short measurement windows")
    parser.add_argument("--plain-only", action="store_true", help="skip the mutual TLS runs")
    parser.add_argument("--tls-only", action="store_true", help="only the mutual TLS runs")
    parser.add_argument(
        "--persist", action="store_true", help="both brokers with persistence on disk"
    )
    parser.add_argument(
        "--only", action="append", default=[], metavar="WORD", help="scenarios naming WORD"
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per scenario (median; default 3, --quick 1)"
    )
    args = parser.parse_args()
    if shutil.which("mosquitto") is None or shutil.which("taskset") is None:
        sys.exit("bench/broker.py needs mosquitto and taskset installed")
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {LOADGEN_CPU})
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    global PERSIST
    PERSIST = args.persist
    ONLY.extend(args.only)
    main_run(args)


if __name__ == "__main__":
    main()
