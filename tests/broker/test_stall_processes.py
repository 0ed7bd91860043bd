"""A stalled subscriber against real processes: ``hedgerow broker`` and ``hedgerow core run``.

The stalled subscriber is a real socket (4 KiB receive buffer; TLS with its own
certificate for the core) that subscribes and then never reads. Checked: the process's
resident memory stays bounded, the publisher's messages keep being acknowledged and a
healthy subscriber keeps receiving, and the broker disconnects the stalled client within
``slow_client_timeout`` + 5 s, saying why in its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from ..conftest import free_port
from ..core.fakecloud import FakeCloud
from ..core.helpers import document
from ..core.test_kill9 import start_core, stop_core

KIB = 1024
MIB = 1024 * 1024
PAYLOAD = 256 * KIB
MESSAGES = 120  # 30 MiB through the broker
SLOW_TIMEOUT = 2.0


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _str(s: str) -> bytes:
    return struct.pack(">H", len(s)) + s.encode()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(client_id: str) -> bytes:
    body = _str("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 0) + _str(client_id)
    return b"\x10" + _varint(len(body)) + body


def subscribe_packet(topic_filter: str, qos: int) -> bytes:
    body = struct.pack(">H", 1) + _str(topic_filter) + bytes([qos])
    return b"\x82" + _varint(len(body)) + body


def publish_packet(pid: int, payload: bytes) -> bytes:
    body = _str("flood/x") + struct.pack(">H", pid) + payload
    return b"\x32" + _varint(len(body)) + body


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return first, await reader.readexactly(length)


def stalled(port: int, client_id: str, ctx: ssl.SSLContext | None) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx is not None else raw
    sock.sendall(connect_packet(client_id) + subscribe_packet("flood/#", 1))
    got = b""
    while len(got) < 9:  # CONNACK + SUBACK, then never again
        chunk = sock.recv(9 - len(got))
        assert chunk, "closed before its SUBACK"
        got += chunk
    return sock


async def open_client(
    port: int, client_id: str, ctx: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1" if ctx else None
    )
    writer.write(connect_packet(client_id))
    first, body = await asyncio.wait_for(read_packet(reader), 10)
    assert first == 0x20 and body[1] == 0, body
    return reader, writer


async def healthy(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, subscribed: asyncio.Event
) -> int:
    """Read and acknowledge until a warm-up and MESSAGES arrived; return how many."""
    writer.write(subscribe_packet("flood/#", 1))
    count = 0
    while count < MESSAGES + 1:
        first, body = await read_packet(reader)
        if first >> 4 == 9:
            subscribed.set()
        if first >> 4 == 3:
            count += 1
            writer.write(b"\x40\x02" + body[9:11])  # after the topic "flood/x"
    return count - 1


async def publish_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
    """MESSAGES QoS 1 PUBLISHes, 8 unacknowledged at most; seconds until all acknowledged."""
    payload = b"p" * PAYLOAD
    started = time.monotonic()
    sent = acked = 0
    while acked < MESSAGES:
        while sent < MESSAGES and sent - acked < 8:
            sent += 1
            writer.write(publish_packet(sent, payload))
        first, _ = await read_packet(reader)
        if first >> 4 == 4:
            acked += 1
    return time.monotonic() - started


async def stall_scenario(
    pid: int, port: int, contexts: dict[str, ssl.SSLContext | None], log: Path
) -> tuple[float, float, float, float | None]:
    """Idle RSS, peak RSS, publishing time, seconds until the log shows the kick."""
    idle = rss_mb(pid)
    peak = idle
    sub_r, sub_w = await open_client(port, "healthy", contexts["healthy"])
    subscribed = asyncio.Event()
    receiving = asyncio.create_task(healthy(sub_r, sub_w, subscribed))
    pub_r, pub_w = await open_client(port, "publisher", contexts["publisher"])
    await asyncio.wait_for(subscribed.wait(), 10)
    # the healthy subscriber takes a first message: one that never took any is given its
    # byte budget, not the publisher's time (broker/pacing.py)
    pub_w.write(publish_packet(60000, b"warm-up"))
    first, _ = await asyncio.wait_for(read_packet(pub_r), 10)
    assert first >> 4 == 4
    socks = [
        await asyncio.to_thread(stalled, port, f"stalled-{i}", contexts[f"stalled-{i}"])
        for i in range(2)
    ]
    stalled_at = time.monotonic()
    done = False

    async def sample() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    kicked_after: float | None = None
    try:
        elapsed = await asyncio.wait_for(publish_all(pub_r, pub_w), 60)
        assert await asyncio.wait_for(receiving, 30) == MESSAGES
        deadline = stalled_at + SLOW_TIMEOUT + 5
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace") if log.exists() else ""
            if all(f"stalled-{i} " in text and "slow consumer" in text for i in range(2)):
                kicked_after = time.monotonic() - stalled_at
                break
            await asyncio.sleep(0.05)
    finally:
        done = True
        await sampler
        receiving.cancel()
        for w in (sub_w, pub_w):
            w.close()
        for s in socks:
            s.close()
    return idle, peak, elapsed, kicked_after


async def test_hedgerow_broker_process_survives_stalled_subscribers(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "broker.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hedgerow", "-v", "broker", "--host", "127.0.0.1",
            "--port", str(port), "--max-outbound-bytes", "2M", "--max-total-outbound-bytes", "8M",
            "--slow-client-timeout", str(SLOW_TIMEOUT), "--max-keepalive", "20",
            stdout=asyncio.subprocess.PIPE, stderr=err,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert b"listening" in line, log.read_text()
        await asyncio.sleep(0.3)  # imports settle: the idle figure below is the idle one
        contexts: dict[str, ssl.SSLContext | None] = dict.fromkeys(
            ("healthy", "publisher", "stalled-0", "stalled-1")
        )
        idle, peak, elapsed, kicked_after = await stall_scenario(proc.pid, port, contexts, log)
        # 30 MiB went through; the broker may hold 8 MiB for clients (+ one copy for the
        # socket of each, and the allocator's slack): far from the 30+ MiB of old
        assert peak <= 2 * idle + 8, (idle, peak)
        assert elapsed < 20
        assert kicked_after is not None, log.read_text()[-3000:]
        assert kicked_after <= SLOW_TIMEOUT + 5
        text = log.read_text()
        assert "outbound budget of 2097152 bytes full (slow consumer)" in text

        # --max-keepalive reaches v5 clients as Server Keep Alive
        told = threading.Event()
        seen: list[object] = []
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, "ka", protocol=mqtt.MQTTv5)
        client.on_connect = lambda c, u, f, rc, p: (seen.append(p), told.set())
        client.connect(
            "127.0.0.1", port, keepalive=300, properties=PahoProperties(PacketTypes.CONNECT)
        )
        client.loop_start()
        try:
            assert await asyncio.to_thread(told.wait, 10)
            assert getattr(seen[0], "ServerKeepAlive", None) == 20
        finally:
            client.disconnect()
            client.loop_stop()
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 15)


async def test_cli_refuses_a_bad_budget_with_advice(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hedgerow", "broker", "--max-outbound-bytes", "lots",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode != 0
    assert b"max_outbound_bytes: must be bytes or a number with K, M or G (e.g. 64M)" in err
    helped = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hedgerow", "broker", "--help",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(helped.communicate(), 15)
    for flag in (b"--max-outbound-bytes SIZE", b"--max-total-outbound-bytes SIZE",
                 b"--slow-client-timeout", b"--max-keepalive", b"slow consumer"):  # fmt: skip
        assert flag in out


@pytest.mark.slow
async def test_core_process_survives_stalled_subscribers(tmp_path: Path, test_pki: object) -> None:
    async with FakeCloud(tmp_path / "cloud", test_pki.root) as cloud:  # type: ignore[attr-defined]
        port = free_port()
        config = cloud.provision(
            tmp_path / "core", port, f"[broker]\nslow_client_timeout = {SLOW_TIMEOUT}\n"
        )
        names = ("publisher", "healthy", "stalled-0", "stalled-1")
        routes = tuple(("thing:publisher", "flood/#", f"thing:{n}") for n in names[1:])
        proc = await start_core(config, tmp_path / "core.stderr")
        try:
            await cloud.deploy(document("d-1", things=names, subscriptions=routes))
            await cloud.wait_for(
                lambda: any(s["status"] == "Success" for s in cloud.statuses()), 20
            )
            contexts: dict[str, ssl.SSLContext | None] = {
                n: cloud.thing_context(cloud.thing(n)) for n in names
            }
            await asyncio.sleep(0.5)
            log = tmp_path / "core" / "logs" / "core.log"
            idle, peak, elapsed, kicked_after = await stall_scenario(proc.pid, port, contexts, log)
            # the bound for a gateway: the whole daemon within 64 MB
            assert peak <= 64, (idle, peak)
            assert elapsed < 30
            assert kicked_after is not None, log.read_text()[-3000:]
            assert kicked_after <= SLOW_TIMEOUT + 5
        finally:
            await stop_core(proc)
