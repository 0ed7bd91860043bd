"""Provisioning by claim: how many cores and things per second one cloud registers.

    .venv/bin/python bench/fleet_claims.py [--cores 50] [--things 200] [--concurrency 20]

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

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
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
    import base64

    response = await api.post(
        "/api/v1/claims", json={"template": template, "count": count, "expires": "1d"}
    )
    response.raise_for_status()
    out.write_bytes(base64.b64decode(response.json()["bundle"]))
    return out


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
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
            total_things = args.things * 2
            cores_claim = await claim(api, "gw", args.cores * 2, root / "cores.tar.gz")
            things_claim = await claim(api, "sensor", total_things, root / "things.tar.gz")

            core_jobs = [
                lambda i=i: provision_core(cores_claim, root / "cores" / f"{i}", f"c{i:05d}")
                for i in range(args.cores)
            ]
            core_s = await bounded(core_jobs, args.concurrency)

            thing_jobs = [
                lambda i=i: provision_thing(things_claim, root / "things" / f"{i}", f"t{i:05d}")
                for i in range(args.things)
            ]
            thing_s = await bounded(thing_jobs, args.concurrency)

            key = pki.new_key()
            csr = pki.make_csr(key, "x").decode()
            cloud_only: dict[str, tuple[float, float]] = {}
            for kind, claim_file, count in (
                ("cores", cores_claim, args.cores),
                ("things", things_claim, args.things),
            ):
                credential = ClaimCredential.from_tar(claim_file.read_bytes())
                requests = [ProvisionRequest(f"x{i:05d}", csr) for i in range(count)]
                cpu0 = time.process_time()
                wall = await bounded(
                    [
                        lambda r=r, c=credential: claimclient.provision(c, r, timeout=60)
                        for r in requests
                    ],
                    args.concurrency,
                )
                cloud_only[kind] = (wall, time.process_time() - cpu0)
            await api.aclose()
    load = os.getloadavg()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, concurrency {args.concurrency}")  # fmt: skip
    print(f"cores  (key tool child + claim): {args.cores:5d} in {core_s:6.2f} s = "
          f"{args.cores / core_s:7.1f} cores/s")  # fmt: skip
    print(f"things (SDK key + claim):        {args.things:5d} in {thing_s:6.2f} s = "
          f"{args.things / thing_s:7.1f} things/s")  # fmt: skip
    for kind, count in (("cores", args.cores), ("things", args.things)):
        wall, cpu = cloud_only[kind]
        print(f"{kind}, cloud only (pre-made CSR): {count:5d} in {wall:6.2f} s = "
              f"{count / wall:7.1f} {kind}/s, {cpu / count * 1000:.1f} ms CPU each "
              "(cloud and client in this process)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cores", type=int, default=50)
    parser.add_argument("--things", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
