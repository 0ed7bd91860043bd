"""Provision many things at once with one claim through the device SDK, in one process.

    python -m tests.e2e.claim_things CLAIM DIR SERIAL...

Each serial gets ``DIR/SERIAL/`` (its own key, certificate, identity); prints one JSON
object: ``{"names": {serial: name}, "refused": {serial: reason}, "seconds": s}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from hedgerow.thing import ProvisioningError, provision_thing


async def one(claim: Path, directory: Path, serial: str) -> tuple[str, str | None, str | None]:
    try:
        identity = await provision_thing(claim, directory / serial, serial, timeout=60)
    except ProvisioningError as exc:
        return serial, None, exc.message
    return serial, identity.name, None


async def main(claim: Path, directory: Path, serials: list[str]) -> None:
    started = time.perf_counter()
    results = await asyncio.gather(*(one(claim, directory, s) for s in serials))
    print(
        json.dumps(
            {
                "names": {s: n for s, n, _ in results if n},
                "refused": {s: r for s, _, r in results if r},
                "seconds": time.perf_counter() - started,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]))
