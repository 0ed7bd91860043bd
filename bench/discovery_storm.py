"""Discovery under a storm: every device of a site discovering at once after a power cut.

    .venv/bin/python bench/discovery_storm.py                 # 500 devices x 4 = 2,000
    .venv/bin/python bench/discovery_storm.py --devices 1000 --rounds 2 --sqlite

One ``hedgerow cloud serve`` process (PostgreSQL by default, a fresh schema) and
``--procs`` client processes; each device runs ``--rounds`` discoveries back to back, all
devices starting together. A device whose connection is shed (closed before its TLS
handshake: ``[device] max_pending``) or refused with 429/503 retries on a jittered backoff
(full jitter, 0.25 s doubling to 4 s, never sooner than a ``Retry-After``), as the SDK does;
its latency is the time from the first try to the answer. One attempt is bounded by
``--timeout`` (10 s, the SDK's default): a device that waited longer gives up on that
connection and retries, as a real one does — the handshake the cloud may still be doing
for it is wasted. Each leg restarts the cloud
with one setting changed:

* ``baseline``: no cache, no pending limit, a full handshake every time (last week's cloud)
* ``cache``: discovery answers cached
* ``cache+resume``: and the devices resume their TLS session (one ticket per device)
* ``cache+resume+limit``: and ``max_pending`` (``--max-pending`` 256, ``--pending-wait`` 8 s;
  ``cache+resume+limit@64/5`` for another bound)
* ``limit``: the limit alone (full handshakes, no cache)

Printed per leg: answers/s, p50/p99/max of the devices' latency, sheds, the cloud's CPU per
answer (``/proc``), the clients' CPU per answer, handshakes and resumed ones (the device
server's own counters). Bounded: every discovery gives up after ``--give-up`` seconds and
every leg after ``--leg-timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import shutil
import ssl
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port  # noqa: E402

from hedgerow import http11, pki  # noqa: E402
from hedgerow.cloud import config as config_module  # noqa: E402

HEDGEROW = str(Path(sys.executable).parent / "hedgerow")
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
LEGS: dict[str, dict[str, Any]] = {
    "baseline": {"cache": 0, "resume": False, "limit": False},
    "cache": {"cache": 20_000, "resume": False, "limit": False},
    "cache+resume": {"cache": 20_000, "resume": True, "limit": False},
    "cache+resume+limit": {"cache": 20_000, "resume": True, "limit": True},
    "limit": {"cache": 0, "resume": False, "limit": True},
}
TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


# ---- the device side (one process per share) -------------------------------------------


async def client(spec: dict[str, Any]) -> None:
    directory, port = Path(spec["dir"]), spec["port"]
    give_up, rounds = spec["give_up"], spec["rounds"]
    latencies: list[float] = []
    counts = {"shed": 0, "timed out": 0, "throttled": 0, "failed": 0, "resumed": 0}

    def context(i: int) -> ssl.SSLContext:
        return pki.client_context(
            spec["ca"],
            str(directory / f"dev-{i}.pem"),
            str(directory / f"dev-{i}.key"),
            resume=spec["resume"],
        )

    contexts = {i: context(i) for i in range(spec["first"], spec["first"] + spec["devices"])}

    async def one(index: int, ctx: ssl.SSLContext) -> None:
        started = time.perf_counter()
        attempt = 0
        while time.perf_counter() - started < give_up:
            try:
                reply = await http11.fetch(
                    "127.0.0.1", port, "GET", f"/greengrass/discover/thing/dev-{index}",
                    headers=[("host", "127.0.0.1")], ssl_context=ctx, timeout=spec["timeout"],
                    max_body=1 << 20,
                )  # fmt: skip
            except http11.HTTPError as exc:
                counts["timed out" if exc.timed_out else "shed"] += 1
                retry_after = 0.0
            else:
                if reply.status == 200:
                    if isinstance(ctx, pki.ResumingContext):
                        ctx.keep("127.0.0.1", reply.tls_session)
                    counts["resumed"] += reply.tls_resumed
                    latencies.append(time.perf_counter() - started)
                    return
                if reply.status not in (429, 503):
                    raise RuntimeError(f"dev-{index}: HTTP {reply.status} {reply.content[:200]!r}")
                counts["throttled"] += 1
                header = reply.header(b"retry-after")
                retry_after = float(header) if header and header.isdigit() else 0.0
            delay = random.uniform(0, min(4.0, 0.25 * 2**attempt))
            await asyncio.sleep(max(delay, retry_after))
            attempt += 1
        counts["failed"] += 1

    async def device(index: int, ctx: ssl.SSLContext) -> None:
        for _ in range(rounds):
            await one(index, ctx)

    started = time.perf_counter()
    await asyncio.gather(*(device(i, ctx) for i, ctx in contexts.items()))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "latencies": latencies,
                "elapsed": time.perf_counter() - started,
                "cpu": usage.ru_utime + usage.ru_stime,
                **counts,
            }
        )
    )


# ---- the cloud ---------------------------------------------------------------------------


class Cloud:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.process: asyncio.subprocess.Process | None = None
        self.api_url = ""
        self.device_port = 0

    async def start(self, **settings: Any) -> None:
        config = config_module.load(self.data).replace(**settings)
        config_module.save(config)
        self.device_port = free_port()
        log = (self.data.parent / "cloud.log").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            HEDGEROW, "cloud", "serve", "--data", str(self.data), "--api-port", str(free_port()),
            "--device-host", "127.0.0.1", "--device-port", str(self.device_port), "--no-mqtt",
            stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
        log.close()
        assert self.process.stdout is not None
        banner = ""
        async with asyncio.timeout(60):
            while "Ctrl-C" not in banner:
                line = (await self.process.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"the cloud stopped: {banner}")
                banner += line
        found = re.search(r"REST API \+ console\s+(\S+)", banner)
        assert found, banner
        self.api_url = found[1]

    def api(self) -> httpx.AsyncClient:
        token = (self.data / "admin-token").read_text().strip()
        return httpx.AsyncClient(
            base_url=self.api_url, headers={"authorization": f"Bearer {token}"}, timeout=30
        )

    async def device_stats(self) -> dict[str, Any]:
        async with self.api() as api:
            response = await api.get("/api/v1/status")
        response.raise_for_status()
        return dict(response.json()["device_server"])

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            async with asyncio.timeout(30):
                await self.process.wait()
        self.process = None


async def register(cloud: Cloud, devices: int, directory: Path) -> None:
    async with cloud.api() as api:
        (await api.post("/api/v1/groups", json={"name": "site"})).raise_for_status()
        (
            await api.post("/api/v1/cores", json={"name": "site-core", "group": "site"})
        ).raise_for_status()
        (
            await api.put(
                "/api/v1/cores/site-core/connectivity",
                json={"endpoints": [{"host": "127.0.0.1", "port": 8883}]},
            )
        ).raise_for_status()
        gate = asyncio.Semaphore(8)

        async def make(i: int) -> None:
            async with gate:
                made = await api.post(
                    "/api/v1/things", json={"name": f"dev-{i}", "groups": ["site"]}
                )
            made.raise_for_status()
            (directory / f"dev-{i}.pem").write_text(made.json()["certificate"])
            (directory / f"dev-{i}.key").write_text(made.json()["private_key"])

        await asyncio.gather(*(make(i) for i in range(devices)))


def parse_leg(text: str, args: argparse.Namespace) -> tuple[str, dict[str, Any], int, float]:
    """``name`` or ``name@MAX_PENDING/PENDING_WAIT`` (a limited leg with its own bound)."""
    name, _, bound = text.partition("@")
    if name not in LEGS:
        raise ValueError(f"unknown leg {name!r}: use some of {', '.join(LEGS)}")
    max_pending, pending_wait = args.max_pending, args.pending_wait
    if bound:
        first, _, second = bound.partition("/")
        max_pending, pending_wait = int(first), float(second or pending_wait)
    return name, LEGS[name], max_pending, pending_wait


async def leg(text: str, cloud: Cloud, args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    name, setting, max_pending, pending_wait = parse_leg(text, args)
    if setting["limit"]:
        name = f"{name}@{max_pending}/{pending_wait:g}"
    await cloud.start(
        discovery_cache_entries=setting["cache"],
        device_max_pending=max_pending if setting["limit"] else 0,
        device_pending_wait_s=pending_wait,
    )
    try:
        assert cloud.process is not None
        before_stats = await cloud.device_stats()
        before_cpu = cpu_seconds(cloud.process.pid)
        share = args.devices // args.procs
        procs = []
        started = time.perf_counter()
        for p in range(args.procs):
            spec = {
                "dir": str(directory), "port": cloud.device_port, "ca": str(cloud.data / "pki" / "root-ca.pem"),
                "first": p * share, "devices": share, "rounds": args.rounds,
                "resume": setting["resume"], "give_up": args.give_up, "timeout": args.timeout,
            }  # fmt: skip
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--client",
                    json.dumps(spec),
                    stdout=asyncio.subprocess.PIPE,
                )  # fmt: skip
            )
        results = []
        async with asyncio.timeout(args.leg_timeout):
            for proc in procs:
                out, _ = await proc.communicate()
                if proc.returncode != 0:
                    raise RuntimeError(f"a client failed ({proc.returncode})")
                results.append(json.loads(out))
        took = time.perf_counter() - started
        server_cpu = cpu_seconds(cloud.process.pid) - before_cpu
        after_stats = await cloud.device_stats()
    finally:
        await cloud.stop()
    latencies = [x for r in results for x in r["latencies"]]
    answers = len(latencies)
    handshakes = after_stats["handshakes"] - before_stats["handshakes"]
    figures = {
        "answers": answers,
        "answers/s": answers / took,
        "p50 ms": percentile(latencies, 50) * 1000,
        "p99 ms": percentile(latencies, 99) * 1000,
        "max ms": max(latencies, default=float("nan")) * 1000,
        "shed": sum(r["shed"] for r in results),
        "timed out": sum(r["timed out"] for r in results),
        "gave up": sum(r["failed"] for r in results),
        "cloud CPU ms/answer": server_cpu / max(answers, 1) * 1000,
        "client CPU ms/answer": sum(r["cpu"] for r in results) / max(answers, 1) * 1000,
        "handshakes": handshakes,
        "resumed": after_stats["resumed"] - before_stats["resumed"],
        "cache hits": after_stats["discovery_cache"]["hits"],
    }
    print(
        f"{name:>20}: {answers} answers in {took:.1f} s ({figures['answers/s']:,.0f}/s), "
        f"p50 {figures['p50 ms']:,.0f} ms p99 {figures['p99 ms']:,.0f} ms max {figures['max ms']:,.0f} ms, "
        f"shed {figures['shed']}, timed out {figures['timed out']}, gave up {figures['gave up']}; cloud CPU "
        f"{figures['cloud CPU ms/answer']:.2f} ms/answer, clients {figures['client CPU ms/answer']:.2f} ms/answer; "
        f"handshakes {handshakes} (resumed {figures['resumed']}), cache hits {figures['cache hits']}",
        flush=True,
    )
    return figures


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--max-pending", type=int, default=256)
    parser.add_argument("--pending-wait", type=float, default=8.0)
    parser.add_argument("--give-up", type=float, default=60.0)
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="one attempt's bound (the SDK's default)"
    )
    parser.add_argument("--leg-timeout", type=float, default=300.0)
    parser.add_argument(
        "--legs", default=",".join(LEGS), help="names, a limited one as name@MAX/WAIT_S"
    )
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        await client(json.loads(args.client))
        return 0
    for text in args.legs.split(","):
        try:
            parse_leg(text, args)
        except ValueError as exc:
            parser.error(str(exc))
    print(
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {args.devices} devices x "
        f"{args.rounds} rounds from {args.procs} processes; "
        f"{'SQLite' if args.sqlite else 'PostgreSQL'}",
        flush=True,
    )
    schema = f"hedgerow_storm_{uuid.uuid4().hex[:8]}"
    admin = None if args.sqlite else sa.create_engine(PG_ADMIN)
    temp = Path(tempfile.mkdtemp(prefix="discovery-storm-"))
    try:
        if admin is not None:
            with admin.begin() as connection:
                connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        data = temp / "cloud"
        init = [HEDGEROW, "cloud", "init", "--data", str(data), "--api-port", "0"]
        if admin is not None:
            init += [
                "--database",
                f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}",
            ]
        process = await asyncio.create_subprocess_exec(*init, stdout=asyncio.subprocess.DEVNULL)
        if await process.wait() != 0:
            raise RuntimeError("hedgerow cloud init failed")
        cloud = Cloud(data)
        devices = temp / "devices"
        devices.mkdir()
        await cloud.start()
        try:
            started = time.perf_counter()
            await register(cloud, args.devices, devices)
            print(
                f"registered {args.devices} devices in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        finally:
            await cloud.stop()
        results = {text: await leg(text, cloud, args, devices) for text in args.legs.split(",")}
        print(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(temp, ignore_errors=True)
        if admin is not None:
            with admin.begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
