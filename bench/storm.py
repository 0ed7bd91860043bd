"""The power-restore storm: N things (default 500) come back at once against one core.

    .venv/bin/python bench/storm.py                     # 500 things against a real core
    .venv/bin/python bench/storm.py --target broker     # against hedgerow broker with mTLS
    .venv/bin/python bench/storm.py --things 100        # smaller

Target ``core`` (default): a ``hedgerow cloud serve`` process provisions a group, a core and
N things through its REST API, a ``hedgerow core run`` process gets its server certificate
from the group CA and the deployment listing the things — the production trust chain and
admission. Target ``broker``: ``hedgerow broker`` with mutual TLS, its certificate from a
group CA, clients checked against the root CA. Every run starts the core (or broker) afresh
as its own process; the N ``hedgerow.thing.Thing`` objects (the full SDK: cached connection
info, mutual TLS against the group CA, backoff, offline queue) run in this process, each
with its own certificate and a connection-info cache, as a device that rebooted would.

Two scenarios, each with full jitter, equal jitter (half fixed, half random) and the V1
SDK's schedule (no jitter: 1, 2, 4 … 32 s, compat.md §2):

* ``core up``: the core is running; all things start in the same instant;
* ``core late``: power returns everywhere, but the core boots ``--core-delay`` seconds after
  the things, so every thing fails, backs off, and retries — the herd of the seed's story.

Measured: seconds from when the core accepted connections until every thing was connected
(and the median), connection attempts that failed, the core process's CPU peak (per 100 ms
sample, 100 % = one core) and CPU seconds, and its peak resident memory (VmHWM). The core
is pinned to CPU 0 and this process (and the cloud) to CPU 1 where there are two. Every
run is bounded by ``--deadline``. ``--core-cpu 0.25`` limits the core to a quarter of one CPU
(a cgroup; needs root), so the core, not this process, is the bottleneck, as on a small
gateway. Caveat: this one process plays all N devices, so its own
CPU (N TLS handshakes in Python) is part of the time to connect.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from hedgerow import pki  # noqa: E402
from hedgerow.thing import (  # noqa: E402
    BackoffPolicy,
    CachedInfo,
    ConnInfoCache,
    Credentials,
    Jitter,
    ThingConfig,
)
from hedgerow.thing.discovery import Endpoint, parse_discovery  # noqa: E402
from hedgerow.thing.fleet import FleetReport, run_fleet  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")
LABELS = {Jitter.FULL: "full jitter", Jitter.EQUAL: "equal jitter", Jitter.NONE: "none (V1)"}


@dataclass(frozen=True)
class Result:
    scenario: str
    jitter: Jitter
    report: FleetReport
    core_ready_at: float  # seconds after the things started
    cpu_peak: float  # percent of one core, per 100 ms sample
    cpu_seconds: float
    rss_peak_mb: float

    @property
    def ready(self) -> float:
        """When the core accepted connections: the poller's time, or the first connect if
        that came sooner (the poller shares this busy process and may notice late)."""
        times = self.report.connect_times
        return min(self.core_ready_at, times[0]) if times else self.core_ready_at

    def all_after_core(self) -> float | None:
        if self.report.all_connected_after is None:
            return None
        return self.report.all_connected_after - self.ready

    def median_after_core(self) -> float | None:
        p50 = self.report.percentile(50)
        return None if p50 is None else p50 - self.ready


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_pki(
    directory: Path, things: int
) -> tuple[Path, Path, Path, pki.Issued, list[tuple[str, Path, Path]]]:
    root = pki.make_ca("storm root CA")
    group = pki.make_ca("storm group CA")
    core = pki.issue(group, "core-1", unit="server", server_hosts=("127.0.0.1", "localhost"))
    root_file, core_cert, core_key = (
        directory / "root-ca.pem",
        directory / "core.cert.pem",
        directory / "core.key",
    )
    root_file.write_bytes(root.cert_pem)
    core_cert.write_bytes(core.cert_pem)
    core_key.write_bytes(core.key_pem)
    out = []
    for i in range(1, things + 1):
        name = f"storm-{i}"
        issued = pki.issue(root, name)
        cert, key = directory / f"{name}.cert.pem", directory / f"{name}.key"
        cert.write_bytes(issued.cert_pem)
        key.write_bytes(issued.key_pem)
        out.append((name, cert, key))
    return root_file, core_cert, core_key, group, out


def pinned(cpu: int, cgroup: Path | None = None) -> Callable[[], None] | None:
    """A ``preexec_fn``: pin the child to ``cpu`` and put it in a CPU-limited cgroup."""
    pin = hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
    if not pin and cgroup is None:
        return None

    def preexec() -> None:
        if pin:
            os.sched_setaffinity(0, {cpu})
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    return preexec


CGROUP_CPU = Path("/sys/fs/cgroup/cpu")


def cpu_limited_cgroup(fraction: float) -> Path | None:
    """A cgroup (v1 ``cpu`` controller) granting ``fraction`` of one CPU: a slower gateway.

    None (and a note) where cgroups cannot be made: the run is then unthrottled."""
    path = CGROUP_CPU / f"hedgerow-storm-{os.getpid()}"
    try:
        path.mkdir()
        (path / "cpu.cfs_period_us").write_text("100000")
        (path / "cpu.cfs_quota_us").write_text(str(int(fraction * 100_000)))
    except OSError as exc:
        print(f"note: cannot limit the core's CPU ({exc}); running it unthrottled")
        with contextlib.suppress(OSError):
            path.rmdir()
        return None
    return path


class BrokerTarget:
    """``hedgerow broker`` with mutual TLS: the core's MQTT endpoint on its own."""

    name = "hedgerow broker (mutual TLS)"

    def __init__(self, directory: Path, things: int) -> None:
        self.root, self.cert, self.key, self.group, self.thing_files = make_pki(directory, things)
        self.port = free_port()
        self.group_cas = [self.group.cert_pem.decode()]
        self.process: subprocess.Popen[bytes] | None = None
        self.cgroup: Path | None = None

    async def setup(self) -> None:
        return None

    def start(self) -> subprocess.Popen[bytes]:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hedgerow", "broker", "--host", "127.0.0.1", "--port", str(self.port),
             "--tls-cert", str(self.cert), "--tls-key", str(self.key), "--tls-ca", str(self.root),
             "--require-client-cert"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pinned(0, self.cgroup),
        )  # fmt: skip
        return self.process

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    async def close(self) -> None:
        self.stop()


class CoreTarget:
    """A real ``hedgerow core`` provisioned by a real ``hedgerow cloud``, things deployed to it."""

    name = "hedgerow core (provisioned by hedgerow cloud)"

    def __init__(self, directory: Path, things: int) -> None:
        self.directory = directory
        self.count = things
        self.port = free_port()
        self.cloud: subprocess.Popen[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.thing_files: list[tuple[str, Path, Path]] = []
        self.group_cas: list[str] = []
        self.root = directory / "cloud" / "pki" / "root-ca.pem"
        self.core_dir = directory / "core"
        self.cgroup: Path | None = None

    async def setup(self) -> None:
        import httpx
        import tomli_w

        from hedgerow.cloud.config import Listen
        from hedgerow.cloud.datadir import init_data_dir
        from hedgerow.core.bundle_unpack import unpack_bundle

        api_port = free_port()
        data = self.directory / "cloud"
        init_data_dir(
            data,
            api=Listen("127.0.0.1", api_port),
            device=Listen("127.0.0.1", free_port()),
            mqtt=Listen("127.0.0.1", free_port()),
        )
        self.cloud = subprocess.Popen(
            [sys.executable, "-m", "hedgerow", "cloud", "serve", "--data", str(data)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pinned(1),
        )  # fmt: skip
        token = (data / "admin-token").read_text().strip()
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{api_port}",
            headers={"authorization": f"Bearer {token}"},
            timeout=30,
        ) as api:
            async with asyncio.timeout(30):
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await api.get("/api/v1/health")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)

            async def ok(method: str, path: str, **kwargs: Any) -> Any:
                response = await api.request(method, path, **kwargs)
                if response.status_code >= 300:
                    raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
                return response.json()

            await ok("POST", "/api/v1/groups", json={"name": "storm"})
            body = await ok("POST", "/api/v1/cores", json={"name": "storm-core", "group": "storm"})
            bundle_file = self.directory / "storm-core.tar.gz"
            bundle_file.write_bytes(base64.b64decode(body["bundle"]))
            config_path = unpack_bundle(bundle_file, self.core_dir)
            config = tomllib.loads(config_path.read_text())
            config["local"] = {"host": "127.0.0.1", "port": self.port, "hosts": ["127.0.0.1"]}
            config.setdefault("status", {})["metrics_port"] = 0
            config_path.write_text(tomli_w.dumps(config))

            semaphore = asyncio.Semaphore(8)

            async def create(i: int) -> tuple[str, Path, Path]:
                name = f"storm-{i}"
                async with semaphore:
                    thing = await ok(
                        "POST", "/api/v1/things", json={"name": name, "groups": ["storm"]}
                    )
                cert, key = self.directory / f"{name}.cert.pem", self.directory / f"{name}.key"
                cert.write_text(thing["certificate"])
                key.write_text(thing["private_key"])
                return name, cert, key

            self.thing_files = list(
                await asyncio.gather(*(create(i) for i in range(1, self.count + 1)))
            )
            self.start()
            await wait_listening(self.port, 60)
            deployment = await ok("POST", "/api/v1/groups/storm/deployments", json={"kind": "new"})
            async with asyncio.timeout(120):
                while True:
                    status = (
                        await ok("GET", f"/api/v1/deployments/{deployment['deployment_id']}")
                    )["status"]
                    if status in ("Success", "Failure", "RolledBack"):
                        break
                    await asyncio.sleep(0.2)
            if status != "Success":
                raise RuntimeError(f"the deployment to the core ended {status}")
            cas = await ok("GET", "/api/v1/groups/storm/cas")
            self.group_cas = [item["certificate"] for item in cas["items"]]
        self.stop()

    def start(self) -> subprocess.Popen[bytes]:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hedgerow", "core", "run", "--data-dir", str(self.core_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pinned(0, self.cgroup),
        )  # fmt: skip
        return self.process

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    async def close(self) -> None:
        self.stop()
        stop_process(self.cloud)
        self.cloud = None


Target = BrokerTarget | CoreTarget


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def listening_at(port: int, limit: float) -> float:
    """Poll (blocking) until ``port`` accepts; the monotonic time it first did."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return time.monotonic()
        except OSError:
            time.sleep(0.005)
    raise TimeoutError(f"nothing listens on port {port} after {limit:g} s")


async def wait_listening(port: int, limit: float) -> None:
    async with asyncio.timeout(limit):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            return


async def one_run(
    scenario: str,
    jitter: Jitter,
    target: Target,
    cache_dir: Path,
    core_delay: float,
    deadline: float,
) -> Result:
    policy = BackoffPolicy(jitter=jitter)
    cache = ConnInfoCache(cache_dir)
    configs = []
    for name, cert, key in target.thing_files:
        configs.append(
            ThingConfig(name, f"127.0.0.1:{free_port()}", Credentials(target.root, cert, key), cache_dir=cache_dir,
                        backoff=policy, rediscover_after=1_000_000, connect_timeout=10.0)
        )  # fmt: skip
    # the connection info a rebooted device has cached, written before the clock starts
    info = parse_discovery(
        {"GGGroups": [{"GGGroupId": "storm", "CAs": target.group_cas,
                       "Cores": [{"thingArn": "arn:hedgerow:thing/storm-core", "Connectivity": [
                           {"Id": "c", "HostAddress": "127.0.0.1", "PortNumber": target.port}]}]}]}
    )  # fmt: skip
    last_good = Endpoint("127.0.0.1", target.port)
    for name, _, _ in target.thing_files:
        cache.save(CachedInfo(name, time.time(), info, last_good))
    core: subprocess.Popen[bytes] | None = None
    peak = 0.0
    start = time.monotonic()
    core_ready = asyncio.Event()
    core_ready_at = 0.0
    sampling = threading.Event()

    async def launch_core() -> None:
        nonlocal core, core_ready_at
        if scenario == "core late":
            await asyncio.sleep(core_delay)
        core = target.start()
        # polled from a thread: the event loop is busy and would notice late
        core_ready_at = await asyncio.to_thread(listening_at, target.port, 60) - start
        core_ready.set()

    def sample_cpu(pid: int) -> None:
        # a thread, not a task: the event loop is busy with the handshakes and would stretch
        # the 100 ms windows (the GIL hands over every 5 ms)
        nonlocal peak
        last_t, last = time.monotonic(), cpu_ticks(pid)
        while not sampling.wait(0.1):
            now, ticks = time.monotonic(), cpu_ticks(pid)
            peak = max(peak, (ticks - last) / HZ / (now - last_t) * 100)
            last_t, last = now, ticks

    async def start_sampler() -> threading.Thread:
        await core_ready.wait()
        assert core is not None
        thread = threading.Thread(target=sample_cpu, args=(core.pid,), daemon=True)
        thread.start()
        return thread

    if scenario == "core up":
        await launch_core()
        await asyncio.sleep(0.5)  # let the core finish starting (cloud link, admission list)
        start = time.monotonic()
        core_ready_at = 0.0
        launcher = None
    else:
        launcher = asyncio.ensure_future(launch_core())
    sampler = asyncio.ensure_future(start_sampler())
    try:
        report = await run_fleet(configs, lambda name: lambda now: b"", connect_deadline=deadline)
        assert core is not None
        cpu_seconds = cpu_ticks(core.pid) / HZ
        rss = rss_peak_kb(core.pid) / 1024
    finally:
        sampling.set()
        if sampler.done() and not sampler.cancelled():
            sampler.result().join()
        sampler.cancel()
        if launcher is not None:
            launcher.cancel()
        target.stop()
    return Result(scenario, jitter, report, core_ready_at, peak, cpu_seconds, rss)


def fmt(value: float | None, unit: str = " s") -> str:
    return "never" if value is None else f"{value:.2f}{unit}"


def median_runs(results: list[Result]) -> list[Result]:
    """Per (scenario, backoff): the run with the median time to all connected."""
    groups: dict[tuple[str, Jitter], list[Result]] = {}
    for r in results:
        groups.setdefault((r.scenario, r.jitter), []).append(r)
    chosen = []
    for runs in groups.values():
        runs.sort(
            key=lambda r: r.all_after_core() if r.all_after_core() is not None else float("inf")
        )
        chosen.append(runs[(len(runs) - 1) // 2])
    return chosen


def table(results: list[Result]) -> str:
    head = (
        f"{'scenario':<10} {'backoff':<14} {'connected':>9} {'all after':>10} {'median':>8} "
        f"{'failed tries':>12} {'core CPU peak':>13} {'core CPU s':>10} {'core RSS peak':>13}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.scenario:<10} {LABELS[r.jitter]:<14} "
            f"{r.report.connected:>5}/{r.report.things:<3} {fmt(r.all_after_core()):>10} "
            f"{fmt(r.median_after_core()):>8} {r.report.connect_failures:>12} "
            f"{r.cpu_peak:>12.0f}% {r.cpu_seconds:>10.2f} {r.rss_peak_mb:>10.1f} MB"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> tuple[str, list[Result]]:
    with tempfile.TemporaryDirectory(prefix="storm-") as tmp:
        directory = Path(tmp)
        target: Target = (CoreTarget if args.target == "core" else BrokerTarget)(
            directory, args.things
        )
        results = []
        cgroup = cpu_limited_cgroup(args.core_cpu) if args.core_cpu else None
        try:
            await target.setup()
            target.cgroup = cgroup  # after setup: provisioning runs at full speed
            print(f"storm: {args.things} things against {target.name}", flush=True)
            for round_ in range(args.repeat):
                for scenario in args.scenarios:
                    for jitter in args.jitter:
                        if isinstance(target, BrokerTarget):
                            target.port = free_port()
                        cache_dir = directory / f"state-{len(results)}"
                        result = await one_run(
                            scenario, jitter, target, cache_dir, args.core_delay, args.deadline
                        )
                        print(
                            f"  round {round_ + 1}, {scenario}, {LABELS[jitter]}: {result.report.connected}/"
                            f"{result.report.things} connected, all after {fmt(result.all_after_core())}, "
                            f"core CPU peak {result.cpu_peak:.0f}%",
                            flush=True,
                        )
                        results.append(result)
        finally:
            await target.close()
            if cgroup is not None:
                with contextlib.suppress(OSError):
                    cgroup.rmdir()
    name = target.name + (f", limited to {args.core_cpu:g} CPU" if cgroup is not None else "")
    return name, results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--things", type=int, default=500)
    parser.add_argument(
        "--core-cpu", type=float, default=0.0,
        help="limit the core to this fraction of one CPU (cgroup), like a small gateway; 0: no limit",
    )  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, default=1, help="run everything N times; report median runs"
    )
    parser.add_argument(
        "--target", choices=["core", "broker"], default="core",
        help="core: a real hedgerow core provisioned by a hedgerow cloud; broker: hedgerow broker with mTLS",
    )  # fmt: skip
    parser.add_argument(
        "--core-delay",
        type=float,
        default=3.0,
        help="core late: seconds the core boots after the things",
    )
    parser.add_argument(
        "--deadline", type=float, default=120.0, help="each run gives up after this many seconds"
    )
    parser.add_argument(
        "--scenarios", nargs="+", default=["core up", "core late"], choices=["core up", "core late"]
    )
    parser.add_argument(
        "--jitter", nargs="+", default=["full", "equal", "none"], choices=[j.value for j in Jitter],
        help="backoff jitter modes to compare (default: full equal none)",
    )  # fmt: skip
    args = parser.parse_args()
    args.jitter = [Jitter(j) for j in args.jitter]
    logging.basicConfig(level=logging.ERROR)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.things + 256)), hard)
        )
    load_at_start = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop  # the devices' side is one process here: make it as light as it can be

        runner = uvloop.run
    name, results = runner(main_async(args))
    print()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"{args.things} things against {name}; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
        f"load average (1, 5, 15 min) at start {load_at_start}, at end {load}"
    )
    if args.repeat > 1:
        print(f"each row: the median of {args.repeat} runs by time to all connected")
    print(table(median_runs(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
