"""Stalled subscribers against three brokers: memory, publisher rate, time to disconnect.

    .venv/bin/python bench/hostile.py            # every case (a few minutes)
    .venv/bin/python bench/hostile.py --quick    # shorter phases, slow_client_timeout 2 s
    .venv/bin/python bench/hostile.py --rounds 3 # each case 3 times: the median round

A *stalled subscriber* is a real client socket (SO_RCVBUF 4 KiB) that connects, subscribes
and then never reads again. Each case runs on a freshly started broker:

1. *before*: one publisher (QoS 0: as fast as its socket takes; QoS 1: a window of
   acknowledgements) and one healthy subscriber that reads everything;
2. *during*: 1 or 3 stalled subscribers join; the phase lasts until the broker has
   disconnected every one of them (seen in its log) or ``slow_client_timeout`` + 6 s;
3. *after*: the same load for a few more seconds.

Reported per case: the broker's idle and peak RSS, the publisher's rate in each phase
(messages the broker took), the healthy subscriber's rate during the stall, and the time
from the stall to the broker disconnecting the (last) stalled client.

Targets: ``hedgerow broker`` (plain TCP, ``--max-outbound-bytes 8M
--max-total-outbound-bytes 32M``), a real core (``hedgerow core run`` provisioned by the
tests' stand-in cloud, devices over mutual TLS, its default ``[broker]`` budget of
4 MiB per device and 16 MiB in total), and Mosquitto (a private process on a free port:
``max_inflight_messages 1000``, ``max_queued_messages 100000``, ``max_queued_bytes 8M``;
it has no slow-consumer timeout). The load generator is this process (standard asyncio,
its own tiny MQTT 3.1.1 encoder and parser); the broker under test is pinned to CPU 0,
the generator to CPU 1.
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
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import mosquitto_conf  # noqa: E402  (bench/mosquitto_conf.py: the script's own directory)
from tests.conftest import free_port  # noqa: E402
from tests.core.fakecloud import FakeCloud  # noqa: E402
from tests.core.helpers import document  # noqa: E402

from hedgerow import pki  # noqa: E402

BROKER_CPU = 0
LOADGEN_CPU = 1
KIB = 1024
MIB = 1024 * 1024
BROKER_CLIENT_BUDGET = 8 * MIB
BROKER_TOTAL_BUDGET = 32 * MIB
CORE_TOTAL_BUDGET = 16 * MIB  # the core's default [broker] max_total_outbound_bytes
TOPIC = "flood/data"


# ---- the generator's own MQTT 3.1.1 bytes ------------------------------------------------


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


def connect_packet(client_id: str, keepalive: int = 0) -> bytes:
    body = _str("MQTT") + bytes([4, 0x02]) + struct.pack(">H", keepalive) + _str(client_id)
    return b"\x10" + _varint(len(body)) + body


def subscribe_packet(topic_filter: str, qos: int) -> bytes:
    body = struct.pack(">H", 1) + _str(topic_filter) + bytes([qos])
    return b"\x82" + _varint(len(body)) + body


def publish_packet(payload: bytes, qos: int, pid: int = 0) -> bytes:
    body = _str(TOPIC) + (struct.pack(">H", pid) if qos else b"") + payload
    return bytes([0x30 | (qos << 1)]) + _varint(len(body)) + body


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, await reader.readexactly(length)


# ---- brokers under test --------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Target:
    """One broker process: start, the port, TLS for a device, and its log to watch."""

    name = ""
    budget_mb = 0.0

    def __init__(self, workdir: Path, slow_timeout: float) -> None:
        self.workdir = workdir
        self.slow_timeout = slow_timeout
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.log = workdir / "broker.log"

    async def start(self, case: str, clients: list[str]) -> None:
        raise NotImplementedError

    def context(self, client_id: str) -> ssl.SSLContext | None:
        return None

    async def stop(self) -> None:
        proc = self.proc
        self.proc = None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    def disconnected(self, client_id: str) -> bool:
        """Whether the broker's log says it disconnected ``client_id``."""
        text = self.log_text()
        return any(client_id in line and "disconnect" in line.lower() for line in text.splitlines())

    async def _spawn(self, cmd: list[str], stderr: Path | None = None, **env: str) -> None:
        with (stderr or self.log).open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                "taskset", "-c", str(BROKER_CPU), *cmd,
                stdout=asyncio.subprocess.PIPE, stderr=err, env={**os.environ, **env},
            )  # fmt: skip

    async def _wait_listening(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_text()[-2000:]}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await asyncio.sleep(0.3)  # imports done, loop idle
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start listening")


class HedgerowBroker(Target):
    name = "hedgerow broker"
    budget_mb = BROKER_TOTAL_BUDGET / MIB

    async def start(self, case: str, clients: list[str]) -> None:
        self.port = free_port()
        self.log = self.workdir / f"hedgerow-{case}.log"
        await self._spawn(
            [
                sys.executable, "-m", "hedgerow", "-v", "broker", "--host", "127.0.0.1",
                "--port", str(self.port),
                "--max-outbound-bytes", str(BROKER_CLIENT_BUDGET),
                "--max-total-outbound-bytes", str(BROKER_TOTAL_BUDGET),
                "--slow-client-timeout", str(self.slow_timeout),
            ],
            PYTHONPATH=str(ROOT / "src"),
        )  # fmt: skip
        await self._wait_listening()


class MosquittoBroker(Target):
    name = "mosquitto"
    budget_mb = BROKER_TOTAL_BUDGET / MIB

    async def start(self, case: str, clients: list[str]) -> None:
        self.port = free_port()
        self.log = self.workdir / f"mosquitto-{case}.log"
        text = mosquitto_conf.config(self.port, log=self.log, max_queued_bytes=BROKER_CLIENT_BUDGET)
        await self._spawn(mosquitto_conf.command(self.workdir / f"mosquitto-{case}.conf", text))
        await self._wait_listening()


class Core(Target):
    """``hedgerow core run`` provisioned by the stand-in cloud; devices use mutual TLS."""

    name = "hedgerow core"
    budget_mb = CORE_TOTAL_BUDGET / MIB

    def __init__(self, workdir: Path, slow_timeout: float, cloud: FakeCloud) -> None:
        super().__init__(workdir, slow_timeout)
        self.cloud = cloud
        self.contexts: dict[str, ssl.SSLContext] = {}

    def context(self, client_id: str) -> ssl.SSLContext | None:
        ctx = self.contexts.get(client_id)
        if ctx is None:
            ctx = self.contexts[client_id] = self.cloud.thing_context(self.cloud.thing(client_id))
        return ctx

    async def start(self, case: str, clients: list[str]) -> None:
        self.port = free_port()
        data = self.workdir / f"core-{case}"
        config = self.cloud.provision(
            data, self.port, f"[broker]\nslow_client_timeout = {self.slow_timeout}\n"
        )
        self.log = data / "logs" / "core.log"
        await self._spawn(
            [sys.executable, "-m", "hedgerow", "core", "run", "--config", str(config)],
            stderr=data / "core.stderr",
            PYTHONPATH=str(ROOT / "src"),
        )
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if b"serving on" not in line:
            raise RuntimeError(f"the core did not start: {self.log_text()[-2000:]}")
        publisher, *subscribers = clients
        subs = tuple((f"thing:{publisher}", "flood/#", f"thing:{s}") for s in subscribers)
        deployment = f"d-{case}"
        await self.cloud.deploy(document(deployment, things=tuple(clients), subscriptions=subs))
        deadline = time.monotonic() + 30
        while not any(
            s["deployment_id"] == deployment and s["status"] == "Success"
            for s in self.cloud.statuses()
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"deployment failed: {self.cloud.statuses()[-3:]}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)


# ---- clients ---------------------------------------------------------------------------------


async def open_client(
    target: Target, client_id: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    ctx = target.context(client_id)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", target.port, ssl=ctx, server_hostname="127.0.0.1" if ctx else None
    )
    writer.write(connect_packet(client_id, keepalive=600))
    first, body = await asyncio.wait_for(read_packet(reader), 30)
    if first != 0x20 or body[1] != 0:
        raise RuntimeError(f"{client_id}: refused ({body!r})")
    return reader, writer


def stalled_subscriber(target: Target, client_id: str, qos: int) -> socket.socket:
    """A blocking socket (TLS for the core) that subscribes, then is never read again."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(30)
    raw.connect(("127.0.0.1", target.port))
    ctx = target.context(client_id)
    sock: socket.socket = (
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx is not None else raw
    )
    sock.sendall(connect_packet(client_id) + subscribe_packet("flood/#", qos))
    got = b""
    while len(got) < 4 + 5:  # CONNACK, SUBACK: then it stops reading for good
        chunk = sock.recv(9 - len(got))
        if not chunk:
            raise RuntimeError(f"{client_id}: closed before its SUBACK")
        got += chunk
    return sock


@dataclass
class Load:
    sent: int = 0
    received: int = 0
    running: bool = True
    first: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


async def publisher(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, qos: int, size: int, load: Load
) -> None:
    payload = b"x" * size
    # The healthy subscriber takes a first message before the flood: a subscriber that has
    # never taken data is given its byte budget, not the publisher's time (broker/pacing.py),
    # and a generator process that is slow to read its first messages would be disconnected.
    deadline = time.monotonic() + 10
    warm_ups = 0
    while load.received == 0 and time.monotonic() < deadline:
        writer.write(publish_packet(b"warm-up", qos, 65535))
        warm_ups += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(load.first.wait(), 0.2)
    if qos == 0:
        packet = publish_packet(payload, 0)
        batch = max(1, 64 * KIB // len(packet))
        while load.running:
            writer.write(packet * batch)
            await writer.drain()
            load.sent += batch
        return
    window = max(4, min(100, 4 * MIB // size))
    packets = [publish_packet(payload, 1, pid) for pid in range(1, window + 1)]
    acked = asyncio.Event()
    outstanding = warm_ups  # their acknowledgements come first

    async def read_acks() -> None:
        nonlocal outstanding
        while True:
            first, _ = await read_packet(reader)
            if first >> 4 == 4:
                outstanding -= 1
                load.sent += 1
                acked.set()

    acks = asyncio.create_task(read_acks())
    try:
        i = 0
        while load.running:
            while outstanding < window and load.running:
                writer.write(packets[i % window])
                i += 1
                outstanding += 1
            acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(acked.wait(), 1.0)
    finally:
        acks.cancel()


async def healthy(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, qos: int, load: Load
) -> None:
    writer.write(subscribe_packet("flood/#", qos))
    while load.running:
        first, body = await read_packet(reader)
        if first >> 4 == 3:
            load.received += 1
            load.first.set()
            if (first >> 1) & 3:
                tlen = struct.unpack(">H", body[:2])[0]
                writer.write(b"\x40\x02" + body[2 + tlen : 4 + tlen])


# ---- one case ------------------------------------------------------------------------------


@dataclass
class Result:
    target: str
    stalled: int
    size: int
    qos: int
    idle_mb: float = 0.0
    peak_mb: float = 0.0
    before: float = 0.0
    during: float = 0.0
    after: float = 0.0
    healthy_during: float = 0.0
    healthy_before: float = 0.0
    kicked_after: float | None = None
    budget_mb: float = 0.0
    error: str = ""
    #: during/before of every round, when the case ran more than once (``--rounds``)
    ratios: list[float] = field(default_factory=list)


def ratio(r: Result) -> float:
    return r.during / r.before if r.before else 0.0


def median_round(rounds: list[Result]) -> Result:
    """The round with the median publisher ratio, with the worst memory and disconnect
    time of all rounds (a noisy host moves the rate; the bounds must hold every time)."""
    ordered = sorted(rounds, key=ratio)
    r = ordered[len(ordered) // 2]
    r.ratios = [ratio(x) for x in ordered]
    r.peak_mb = max(x.peak_mb for x in rounds)
    kicks = [x.kicked_after for x in rounds]
    r.kicked_after = None if None in kicks else max(k for k in kicks if k is not None)
    r.error = next((x.error for x in rounds if x.error), "")
    return r


async def rate_over(
    load: Load, seconds: float, stop: Callable[[], bool] | None = None
) -> tuple[float, float, float]:
    """Publisher and healthy-subscriber rates over ``seconds`` (or until ``stop()``)."""
    start, sent, received = time.monotonic(), load.sent, load.received
    end = start + seconds
    while time.monotonic() < end and not (stop is not None and stop()):
        await asyncio.sleep(0.05)
    elapsed = max(time.monotonic() - start, 1e-3)
    return (load.sent - sent) / elapsed, (load.received - received) / elapsed, elapsed


async def run_case(
    target: Target, stalled: int, size: int, qos: int, phase: float, case: str
) -> Result:
    result = Result(target.name, stalled, size, qos, budget_mb=target.budget_mb)
    stall_ids = [f"stall-{case}-{i}" for i in range(stalled)]
    pub_id, sub_id = f"pub-{case}", f"healthy-{case}"
    await target.start(case, [pub_id, sub_id, *stall_ids])
    load = Load()
    socks: list[socket.socket] = []
    peak = 0.0
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, rss_mb(target.pid))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    writers: list[asyncio.StreamWriter] = []
    try:
        result.idle_mb = rss_mb(target.pid)
        sr, sw = await open_client(target, sub_id)
        pr, pw = await open_client(target, pub_id)
        writers += [sw, pw]
        load.tasks = [
            asyncio.create_task(healthy(sr, sw, qos, load)),
            asyncio.create_task(publisher(pr, pw, qos, size, load)),
        ]
        await asyncio.sleep(0.5)  # warm up
        result.before, result.healthy_before, _ = await rate_over(load, phase)
        stall_at = time.monotonic()
        for cid in stall_ids:
            socks.append(await asyncio.to_thread(stalled_subscriber, target, cid, qos))

        def all_kicked() -> bool:
            return all(target.disconnected(cid) for cid in stall_ids)

        limit = target.slow_timeout + 6.0
        result.during, result.healthy_during, elapsed = await rate_over(load, limit, all_kicked)
        if all_kicked():
            result.kicked_after = round(time.monotonic() - stall_at, 2)
        result.after, _, _ = await rate_over(load, phase)
        for task in load.tasks:
            if task.done() and task.exception() is not None:
                raise RuntimeError(f"load client failed: {task.exception()!r}")
    except Exception as exc:  # a broker that falls over is a result too
        result.error = repr(exc)[:200]
    finally:
        load.running = False
        sampling = False
        await sampler
        result.peak_mb = round(peak, 1)
        for task in load.tasks:
            task.cancel()
        await asyncio.gather(*load.tasks, return_exceptions=True)
        for w in writers:
            w.close()
        for s in socks:
            s.close()
        await target.stop()
    return result


# ---- report ---------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"machine: {model}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"{mosquitto_conf.version()}; broker on CPU "
        f"{BROKER_CPU}, generator on CPU {LOADGEN_CPU}; load average at start "
        f"{os.getloadavg()[0]:.1f}"
    )


def verdict(r: Result, slow_timeout: float) -> str:
    if r.error:
        return f"error: {r.error}"
    notes = []
    if r.target == "hedgerow core":
        notes.append("RSS ok" if r.peak_mb <= 64 else "**RSS > 64 MB**")
    elif r.target == "hedgerow broker":
        bound = 2 * r.idle_mb + r.budget_mb
        notes.append("RSS ok" if r.peak_mb <= bound else f"**RSS > {bound:.0f} MB**")
    notes.append("rate ok" if r.during >= 0.8 * r.before else "**rate < 0.8x**")
    if r.kicked_after is None or r.kicked_after > slow_timeout + 5:
        notes.append("**not disconnected in time**")
    return ", ".join(notes)


def table(results: list[Result], slow_timeout: float) -> str:
    rows = [
        "| broker | stalled | payload | QoS | RSS idle → peak (MB) | publisher msg/s before / during / after | during/before | healthy sub during/before | stalled disconnected after (s) | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        spread = f" ({r.ratios[0]:.2f}–{r.ratios[-1]:.2f})" if len(r.ratios) > 1 else ""
        healthy_ratio = r.healthy_during / r.healthy_before if r.healthy_before else 0.0
        kicked = "never" if r.kicked_after is None else f"{r.kicked_after:.1f}"
        rows.append(
            f"| {r.target} | {r.stalled} | {r.size // KIB} KiB | {r.qos} "
            f"| {r.idle_mb:.1f} → {r.peak_mb:.1f} "
            f"| {r.before:,.0f} / {r.during:,.0f} / {r.after:,.0f} | {ratio(r):.2f}x{spread} "
            f"| {healthy_ratio:.2f}x | {kicked} | {verdict(r, slow_timeout)} |"
        )
    return "\n".join(rows)


async def main_async(args: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {LOADGEN_CPU})
    slow_timeout = 2.0 if args.quick else 5.0
    phase = 1.5 if args.quick else 3.0
    workdir = Path(tempfile.mkdtemp(prefix="hedgerow-hostile-"))
    cases = [
        (stalled, size, qos)
        for stalled in (1, 3)
        for size in (1 * KIB, 256 * KIB)
        for qos in (0, 1)
    ]
    results: list[Result] = []
    print(machine(), flush=True)
    print(f"slow_client_timeout {slow_timeout} s; phases of {phase} s", flush=True)
    async with FakeCloud(workdir / "cloud", pki.make_ca("Hostile Bench Root")) as cloud:
        targets: list[Target] = []
        if "broker" in args.targets:
            targets.append(HedgerowBroker(workdir, slow_timeout))
        if "core" in args.targets:
            targets.append(Core(workdir, slow_timeout, cloud))
        if "mosquitto" in args.targets:
            targets.append(MosquittoBroker(workdir, slow_timeout))
        n = 0
        only = {tuple(int(x) for x in c.split(":")) for c in args.only.split(",") if c}
        for stalled, size, qos in cases:
            if only and (stalled, size // KIB, qos) not in only:
                continue
            for target in targets:
                rounds: list[Result] = []
                for _ in range(args.rounds):
                    n += 1
                    r = await run_case(target, stalled, size, qos, phase, f"c{n}")
                    print(
                        f"  {r.target}: {stalled} stalled, {size // KIB} KiB, QoS {qos}: "
                        f"peak {r.peak_mb} MB, {r.before:,.0f} / {r.during:,.0f} / "
                        f"{r.after:,.0f} msg/s, disconnected after {r.kicked_after} {r.error}",
                        flush=True,
                    )
                    rounds.append(r)
                results.append(median_round(rounds))
    print()
    print(table(results, slow_timeout))
    if args.keep:
        print(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases, 2 s timeout")
    parser.add_argument(
        "--targets",
        default="broker,core,mosquitto",
        help="comma-separated: broker, core, mosquitto (default all three)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the brokers' logs")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each case this many times; the table shows the round with the median "
        "publisher ratio (and the range), the worst peak RSS and disconnect time",
    )
    parser.add_argument(
        "--only", default="", help="only cases like 1:256:1 (stalled:KiB:QoS), comma-separated"
    )
    args = parser.parse_args()
    args.targets = set(args.targets.split(","))
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
