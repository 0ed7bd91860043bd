"""Claims leg of ``bench/fleet.py``: how many cores and things per second one cloud
provisions by claim.

A CloudServer runs in this process (SQLite in a temporary directory, loopback). Devices
provision as they would in the field, in this process too, ``--concurrency`` at a time:
a core through ``hedgerow.core.provision.provision_core`` (its key made by the key tool's
child process, as on a gateway), a thing through ``hedgerow.thing.provision_thing`` (its
key made in process, as the SDK does). Each figure is devices / wall-clock seconds from the
first request to the last answer; the cloud's own share is measured apart with a
pre-made CSR (``cloud only``: the claim exchange alone, no key generation or key-tool
process: what the cloud can take when the devices are real machines).
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from hedgerow import claimclient, pki
from hedgerow.cloud.config import CloudConfig, Listen
from hedgerow.cloud.datadir import init_data_dir
from hedgerow.cloud.server import CloudServer
from hedgerow.contract.provisioning import ClaimCredential, ProvisionRequest
from hedgerow.core.provision import provision_core
from hedgerow.thing import provision_thing


def make_config(directory: Path) -> CloudConfig:
    config, _ = init_data_dir(
        directory,
        api=Listen("127.0.0.1", 0),
        device=Listen("127.0.0.1", 0),
        mqtt=Listen("127.0.0.1", 0),
    )
    return config


async def bounded(jobs: list[Callable[[], Awaitable[object]]], concurrency: int) -> float:
    """Run ``jobs`` at most ``concurrency`` at a time: the wall-clock seconds."""
    gate = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[object]]) -> None:
        async with gate:
            await job()

    started = time.perf_counter()
    await asyncio.gather(*(run(j) for j in jobs))
    return time.perf_counter() - started


async def claim(api: httpx.AsyncClient, template: str, count: int, out: Path) -> Path:
    response = await api.post(
        "/api/v1/claims", json={"template": template, "count": count, "expires": "1d"}
    )
    response.raise_for_status()
    out.write_bytes(base64.b64decode(response.json()["bundle"]))
    return out


@dataclass(frozen=True)
class ClaimsResult:
    cores: int
    things: int
    concurrency: int
    #: wall seconds, device side included (key tool child / SDK key + the claim exchange)
    core_s: float
    thing_s: float
    #: kind -> (wall seconds, CPU seconds of this process) with a pre-made CSR
    cloud_only: dict[str, tuple[float, float]]

    @property
    def cores_per_s(self) -> float:
        return self.cores / self.core_s

    @property
    def cloud_only_cores_per_s(self) -> float:
        return self.cores / self.cloud_only["cores"][0]

    def table(self) -> list[str]:
        lines = [
            f"| what ({self.concurrency} at a time) | devices | wall (s) | rate | CPU each |",
            "|---|---|---|---|---|",
            f"| cores, device side included (key-tool child process + claim) | {self.cores} "
            f"| {self.core_s:.1f} | {self.cores_per_s:.1f} cores/s | |",
            f"| things, device side included (SDK key + claim + 3 fsynced files) | {self.things} "
            f"| {self.thing_s:.1f} | {self.things / self.thing_s:.1f} things/s | |",
        ]
        for kind, count in (("cores", self.cores), ("things", self.things)):
            wall, cpu = self.cloud_only[kind]
            lines.append(
                f"| {kind}, cloud only (pre-made CSR) | {count} | {wall:.1f} | "
                f"{count / wall:.1f} {kind}/s | {cpu / count * 1000:.1f} ms (cloud + client) |"
            )
        return lines


async def run(cores: int, things: int, concurrency: int) -> ClaimsResult:
    with tempfile.TemporaryDirectory(prefix="hedgerow-bench-claims-") as tmp:
        root = Path(tmp)
        config = make_config(root / "cloud")
        async with CloudServer(config) as server:
            assert server.endpoints is not None
            api = httpx.AsyncClient(
                base_url=server.api_url,
                headers={"authorization": f"Bearer {server.admin_token}"},
                timeout=60,
            )
            for body in (
                {"name": "gw", "kind": "core", "group": "site-{serial}",
                 "name_pattern": "gw-{serial}"},
                {"name": "sensor", "kind": "thing", "group": "plant",
                 "name_pattern": "s-{serial}"},
            ):  # fmt: skip
                (await api.post("/api/v1/claim-templates", json=body)).raise_for_status()
            (await api.post("/api/v1/groups", json={"name": "plant"})).raise_for_status()
            cores_claim = await claim(api, "gw", cores * 2, root / "cores.tar.gz")
            things_claim = await claim(api, "sensor", things * 2, root / "things.tar.gz")

            core_jobs = [
                lambda i=i: provision_core(cores_claim, root / "cores" / f"{i}", f"c{i:05d}")
                for i in range(cores)
            ]
            core_s = await bounded(core_jobs, concurrency)
            print(f"  {cores} cores provisioned in {core_s:.1f} s", flush=True)

            thing_jobs = [
                lambda i=i: provision_thing(things_claim, root / "things" / f"{i}", f"t{i:05d}")
                for i in range(things)
            ]
            thing_s = await bounded(thing_jobs, concurrency)
            print(f"  {things} things provisioned in {thing_s:.1f} s", flush=True)

            key = pki.new_key()
            csr = pki.make_csr(key, "x").decode()
            cloud_only: dict[str, tuple[float, float]] = {}
            for kind, claim_file, count in (
                ("cores", cores_claim, cores),
                ("things", things_claim, things),
            ):
                credential = ClaimCredential.from_tar(claim_file.read_bytes())
                requests = [ProvisionRequest(f"x{i:05d}", csr) for i in range(count)]
                cpu0 = time.process_time()
                wall = await bounded(
                    [
                        lambda r=r, c=credential: claimclient.provision(c, r, timeout=60)
                        for r in requests
                    ],
                    concurrency,
                )
                cloud_only[kind] = (wall, time.process_time() - cpu0)
                print(f"  {count} {kind}, cloud only, in {wall:.1f} s", flush=True)
            await api.aclose()
    return ClaimsResult(cores, things, concurrency, core_s, thing_s, cloud_only)
