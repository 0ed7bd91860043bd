"""What ``hedgerow broker --persist`` costs: QoS 1 throughput and broker CPU per message.

    .venv/bin/python bench/persistence.py              # clean and persistent subscriber
    .venv/bin/python bench/persistence.py --against-main /path/to/main/checkout

10 QoS 1 publishers feed one QoS 1 subscriber (the load generator of ``bench/broker.py``),
with the broker started without and with ``--persist``, alternating the order run by run.
Besides msg/s it reports the broker's CPU time per delivered message (from
/proc/PID/stat), which stays meaningful on a shared, noisy machine where msg/s does not.

With a clean-session subscriber, ``--persist`` only adds the interceptor's check; with a
persistent subscriber every PUBACK waits for the SQLite commit (fsync) holding the message,
so that is the price of "acknowledged means on disk". ``--against-main DIR`` compares this
checkout's broker with another one (both without persistence): the hot-path regression check.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import broker as b  # noqa: E402  (bench/broker.py: the load generator and broker process)

TICK = os.sysconf("SC_CLK_TCK")
PUBLISHERS = 10


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def once(
    root: Path, persist: bool, persistent_sub: bool, workdir: Path, window: float
) -> tuple[float, float]:
    """(msg/s, broker CPU microseconds per delivered message)."""
    saved, b.ROOT, b.PERSIST = b.ROOT, root, persist
    process = b.BrokerProcess("hedgerow", workdir, None)
    process.start()
    b.ROOT = saved
    try:
        target = b.Target(process.port, None)
        size = len(b.publish_packet(b.topic_of(0), b.PAYLOAD, 1, 1))
        sub = b.Subscriber("bench-sub", size, 1)
        sub.clean = not persistent_sub
        await b.subscribe(target, sub, "bench/#", 1)
        pubs = [b.Publisher1(f"bench-pub-{i}", b.topic_of(i)) for i in range(PUBLISHERS)]
        await asyncio.gather(*(b.connect(target, p) for p in pubs))
        for p in pubs:
            p.running = True
            p.start()
        await asyncio.sleep(0.5)
        assert process.proc is not None
        cpu0, n0, t0 = cpu_seconds(process.proc.pid), sub.count, time.perf_counter()
        await asyncio.sleep(window)
        cpu1, n1, t1 = cpu_seconds(process.proc.pid), sub.count, time.perf_counter()
        for p in pubs:
            p.running = False
            if p.transport:
                p.transport.abort()
        if sub.transport:
            sub.transport.abort()
        delivered = max(1, n1 - n0)
        return delivered / (t1 - t0), (cpu1 - cpu0) / delivered * 1e6
    finally:
        process.stop()


async def compare(
    label: str, variants: list[tuple[str, Path, bool]], persistent_sub: bool, runs: int
) -> list[str]:
    workdir = Path(tempfile.mkdtemp(prefix="hedgerow-bench-persist-"))
    got: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in variants}
    for run in range(runs):
        order = variants if run % 2 == 0 else list(reversed(variants))
        for name, root, persist in order:
            got[name].append(await once(root, persist, persistent_sub, workdir, 3.0))
    lines = []
    for name, values in got.items():
        rate = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        lines.append(f"| {label} | {name} | {rate / 1000:.1f}k | {cpu:.2f} |")
    return lines


async def main_async(args: argparse.Namespace) -> None:
    here = b.ROOT
    rows = [
        "| subscriber | broker | msg/s (median) | broker CPU µs/msg (median) |",
        "|---|---|---|---|",
    ]
    if args.against_main:
        other = Path(args.against_main).resolve()
        variants = [("other checkout", other, False), ("this checkout", here, False)]
        rows += await compare("clean", variants, False, args.runs)
    else:
        variants = [("without --persist", here, False), ("with --persist", here, True)]
        rows += await compare("clean", variants, False, args.runs)
        rows += await compare("persistent", variants, True, args.runs)
    print(b.machine())
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per variant (median)")
    parser.add_argument("--against-main", metavar="DIR", help="compare with this checkout")
    args = parser.parse_args()
    os.sched_setaffinity(0, {b.LOADGEN_CPU})
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
