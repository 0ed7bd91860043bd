"""Benchmark what ``hedgerow.contract`` and the shared topic matcher cost (CPU time).

    .venv/bin/python bench/contract.py             # this checkout
    .venv/bin/python bench/contract.py --base DIR  # and a checkout of an older commit,
                                                   # interleaved in the same run

Measures, with ``time.process_time`` (CPU time of this process, so other load on a shared
machine moves the figures less) and the minimum of several rounds:

1. the Python heap the core's daemon takes on import (``tracemalloc``, fresh process);
2. the cloud MQTT endpoint's PUBLISH authorization of a core (``CoreAuthorizer``), per call;
3. the core routing table's cache-miss path (one topic trie walk per source), per topic;
4. reading a deployment document of 10 functions and writing it again.

With ``--base``, 1 and 3 are measured on the older checkout too (its own code, in a child
process) and the ratios printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 15

HEAP = textwrap.dedent(
    """
    import json, sys, tracemalloc
    import hedgerow.cli, hedgerow.cli.core
    tracemalloc.start()
    import hedgerow.core.daemon
    print(json.dumps(tracemalloc.get_traced_memory()[0] // 1024))
    """
)

ROUTE_MISS = textwrap.dedent(
    """
    import json, time, timeit
    from hedgerow.core.routing_table import RoutingTable, Subscription
    subs = [Subscription("thing:t", f"sensors/t{i}/#", "cloud") for i in range(50)]
    subs += [Subscription("thing:t", f"+/t{i}/temp", "function:f") for i in range(50)]
    topics = [f"sensors/t{i % 60}/temp/{i}" for i in range(2000)]
    def run():
        table = RoutingTable(subs)  # a fresh cache: every match walks the trie
        for topic in topics:
            table.match("thing:t", topic)
    timer = timeit.Timer(run, timer=time.process_time)
    print(json.dumps(min(timer.timeit(5) for _ in range({rounds})) / (5 * len(topics)) * 1e9))
    """
).replace("{rounds}", str(ROUNDS))


def child(src: Path, code: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
    )
    return float(json.loads(done.stdout))


def authorize_ns() -> float:
    from hedgerow.broker import Action, Identity
    from hedgerow.cloud.mqtt_endpoint import CoreAuthorizer

    class Routes:
        def to_cloud(self, group: str) -> list[str]:
            return ["corrected/#", "sensors/+/temp", "plant/#"]

        def from_cloud(self, group: str) -> list[str]:
            return ["commands/#"]

    authorizer = CoreAuthorizer(Routes())  # type: ignore[arg-type]
    core = Identity("pi-1", kind="core", attributes={"group": "g"})
    topics = [f"sensors/t{i % 60}/temp" for i in range(1000)]

    def run() -> None:
        for topic in topics:
            authorizer.authorize(core, Action.PUBLISH, topic)

    timer = timeit.Timer(run, timer=time.process_time)
    return min(timer.timeit(10) for _ in range(ROUNDS)) / (10 * len(topics)) * 1e9


def document_us() -> float:
    from hedgerow.contract import DeploymentDocument

    entry = {
        "name": "f",
        "handler": "m.h",
        "environment": {"A": "1"},
        "artifact": {"sha256": "ab" * 32, "size": 10},
    }
    text = json.dumps(
        {
            "deployment_id": "d-1",
            "group": "g",
            "core": "c",
            "created_at": "",
            "functions": [{**entry, "name": f"f{i}"} for i in range(10)],
            "subscriptions": [{"source": "cloud", "topic": "a/#", "target": "function:f0"}],
        }
    )

    def run() -> None:
        DeploymentDocument.from_json(text).to_json()

    timer = timeit.Timer(run, timer=time.process_time)
    return min(timer.timeit(200) for _ in range(ROUNDS)) / 200 * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="an older checkout to compare with")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    here = ROOT / "src"
    results: dict[str, object] = {
        "daemon_import_heap_kb": child(here, HEAP),
        "cloud_publish_authorize_ns": round(authorize_ns()),
        "route_cache_miss_ns": round(child(here, ROUTE_MISS)),
        "document_read_write_us": round(document_us(), 1),
    }
    if args.base is not None:
        base = args.base / "src"
        results["base_daemon_import_heap_kb"] = child(base, HEAP)
        results["base_route_cache_miss_ns"] = round(child(base, ROUTE_MISS))
        results["route_cache_miss_ratio"] = round(
            float(results["route_cache_miss_ns"]) / float(results["base_route_cache_miss_ns"]),  # type: ignore[arg-type]
            2,
        )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
