"""Benchmark the stream manager (``hedgerow.streams``).

    .venv/bin/python bench/streams.py            # full run (about two minutes)
    .venv/bin/python bench/streams.py --quick    # short run

Measures:

1. appends/s through the real V2 ``stream_manager`` SDK against ``python -m
   hedgerow.streams`` (a separate process), one client and four client processes, for
   ``Persistence.Memory``, ``File`` (written before the answer, fsync every second) and
   ``File`` + ``flushOnWrite`` (fsync before the answer, group commit);
2. appends/s inside the server alone (``StreamManager.append``, no socket or SDK): the cost
   of the log and the store themselves;
3. export rate to the cloud spool: a stream's backlog moved by the cloud export into the
   core's ``SpoolWriter`` + ``SqliteSpool``, against the spool's own rate for the same
   messages added straight to the ``SpoolWriter`` (what the router does for device
   messages). Both use the spool's ``fsync`` policy ``always`` and ``normal``. The leg from
   the spool to the cloud is the connector's, the same for both (bench/core.py measures it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from hedgerow.core.router import SpoolWriter  # noqa: E402
from hedgerow.core.spool import SqliteSpool  # noqa: E402
from hedgerow.streams.exporters import SpoolSink  # noqa: E402
from hedgerow.streams.manager import StreamManager, StreamsSettings  # noqa: E402

TOKEN = "bench-token"
PAYLOAD = b"x" * 100

CLIENT = """
import sys, time
import stream_manager as sm
port, name, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = sm.StreamManagerClient(port=port)
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()
payload = b"x" * 100
for _ in range(count):
    c.append_message(name, payload)
c.close()
"""


def machine() -> str:
    model = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"machine: {model}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )


def definition(name: str, persistence: int, flush: bool, exports: list[dict] | None = None) -> dict:
    body: dict = {
        "name": name,
        "strategyOnFull": 1,
        "persistence": persistence,
        "flushOnWrite": flush,
        "maxSize": 256 * 1024 * 1024,
    }
    if exports:
        body["exportDefinition"] = {"http": exports}
    return body


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SERVER_CPU: dict[str, float] = {}


def sdk_appends(directory: Path, clients: int, per_client: int) -> dict[str, float]:
    """Appends/s through the SDK against the server process, per persistence mode (and the
    server's CPU per append in ``SERVER_CPU``, µs)."""
    import stream_manager as sm

    env = dict(os.environ, AWS_CONTAINER_AUTHORIZATION_TOKEN=TOKEN)
    server = subprocess.Popen(
        [sys.executable, "-m", "hedgerow.streams", "--dir", str(directory), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    port = int(server.stdout.readline().split()[2])
    results: dict[str, float] = {}
    try:
        os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = TOKEN
        admin = sm.StreamManagerClient(port=port)
        modes = {"Memory": (1, False), "File": (0, False), "File + flushOnWrite": (0, True)}
        for label, (persistence, flush) in modes.items():
            name = f"bench-{persistence}-{int(flush)}-{clients}"
            admin.create_message_stream(
                sm.MessageStreamDefinition(
                    name=name,
                    strategy_on_full=sm.StrategyOnFull.OverwriteOldestData,
                    persistence=sm.Persistence(persistence),
                    flush_on_write=flush,
                    max_size=128 * 1024 * 1024,
                )
            )
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", CLIENT, str(port), name, str(per_client)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=env,
                    text=True,
                )  # fmt: skip
                for _ in range(clients)
            ]
            for p in procs:
                assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            start = time.perf_counter()
            cpu = cpu_seconds(server.pid)
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            for p in procs:
                p.wait(timeout=600)
                assert p.returncode == 0
                if p.stdin is not None:
                    p.stdin.close()
                if p.stdout is not None:
                    p.stdout.close()
            elapsed = time.perf_counter() - start
            SERVER_CPU[f"{label}/{clients}"] = (
                (cpu_seconds(server.pid) - cpu) / (clients * per_client) * 1e6
            )
            info = admin.describe_message_stream(name)
            assert info.storage_status.newest_sequence_number == clients * per_client - 1
            results[label] = clients * per_client / elapsed
        admin.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
        server.stdout.close()
    return results


async def manager_appends(directory: Path, count: int) -> dict[str, float]:
    results: dict[str, float] = {}
    async with StreamManager(StreamsSettings(directory)) as manager:
        for label, persistence, flush in (("Memory", 1, False), ("File", 0, False),
                                          ("File + flushOnWrite", 0, True)):  # fmt: skip
            name = f"m-{persistence}-{int(flush)}"
            manager.create(definition(name, persistence, flush))
            start = time.perf_counter()
            if flush:  # concurrent appenders share each fsync (group commit)
                await asyncio.gather(*(manager.append(name, PAYLOAD) for _ in range(count // 10)))
                n = count // 10
            else:
                for _ in range(count):
                    await manager.append(name, PAYLOAD)
                n = count
            results[label] = n / (time.perf_counter() - start)
    return results


async def export_rate(directory: Path, count: int, fsync: str) -> tuple[float, float]:
    """(stream → spool msg/s, straight → spool msg/s)"""
    # the spool's own rate: what the router does with device messages, batches of 500
    spool = SqliteSpool(directory / f"direct-{fsync}.db", 1 << 30, "drop-oldest", fsync)  # type: ignore[arg-type]
    writer = SpoolWriter(spool, None, lambda: None)
    start = time.perf_counter()
    for i in range(count):
        writer.add("streams/core/direct", PAYLOAD, 1)
        if i % 500 == 499:
            await asyncio.sleep(0)
    await asyncio.sleep(0)
    direct = count / (time.perf_counter() - start)
    assert spool.stats().depth == count
    spool.close()

    spool = SqliteSpool(directory / f"stream-{fsync}.db", 1 << 30, "drop-oldest", fsync)  # type: ignore[arg-type]
    writer = SpoolWriter(spool, None, lambda: None)
    sink = SpoolSink(writer, spool, share=1.0)
    manager = StreamManager(StreamsSettings(directory / f"streams-{fsync}"), cloud=None)
    async with manager:
        manager.create(
            definition("export", 0, False,
                       [{"identifier": "c", "uri": "hedgerow://cloud", "batchSize": 500}])
        )  # fmt: skip
        for _ in range(count):
            await manager.append("export", PAYLOAD)
        start = time.perf_counter()
        manager.cloud = sink
        manager._cloud_wake.set()
        while manager.progress()["export"]["backlog"]:
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        exported = count / (time.perf_counter() - start)
    assert spool.stats().depth == count
    spool.close()
    return exported, direct


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    per_client = 5_000 if args.quick else 20_000
    inproc = 50_000 if args.quick else 200_000
    exports = 50_000 if args.quick else 200_000
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="hedgerow-bench-streams-") as tmp:
        root = Path(tmp)
        one = sdk_appends(root / "sdk1", 1, per_client)
        four = sdk_appends(root / "sdk4", 4, per_client // 2)
        inside = asyncio.run(manager_appends(root / "inproc", inproc))
        rates = {f: asyncio.run(export_rate(root, exports, f)) for f in ("always", "normal")}
    print()
    print(
        "| appends/s | SDK, 1 client | SDK, 4 client processes | server CPU per SDK append "
        "(1 / 4 clients) | server alone (no socket) |"
    )
    print("|---|---|---|---|---|")
    for label in ("Memory", "File", "File + flushOnWrite"):
        cpu = f"{SERVER_CPU[label + '/1']:.0f} / {SERVER_CPU[label + '/4']:.0f} µs"
        print(
            f"| {label} | {one[label]:,.0f} | {four[label]:,.0f} | {cpu} | {inside[label]:,.0f} |"
        )
    print()
    print(
        "| into the cloud spool (msg/s, 100-byte messages) | stream export | spool's own rate | ratio |"
    )
    print("|---|---|---|---|")
    for fsync, (exported, direct) in rates.items():
        print(
            f"| spool fsync {fsync} | {exported:,.0f} | {direct:,.0f} | {exported / direct:.2f}x |"
        )


if __name__ == "__main__":
    main()
