"""Group-CA rotation while 20 things publish: nothing is lost, and the core moves to the new CA.

20 simulated things (one ``hedgerow thing simulate`` process, the full device SDK each)
publish a numbered QoS 1 stream routed to the cloud; ``hedgerow cloud group rotate-ca``
runs in the middle. Every reading of every thing must reach the cloud, and the core must
present a server certificate signed by the new group CA (devices that connect after the old
CA's overlap ends trust only the new one).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests.e2e.harness import System, running_system, wait_until

pytestmark = pytest.mark.slow

THINGS = [f"sim-{i}" for i in range(1, 21)]
MESSAGES = 40  # per thing, one every 0.25 s: about 10 s of traffic


def group_ca_subjects(system: System) -> list[str]:
    cas = system.api("/api/v1/groups/factory-1/cas")["items"]
    return [
        x509.load_pem_x509_certificate(ca["certificate"].encode()).subject.rfc4514_string()
        for ca in cas
    ]


def test_group_ca_rotation_while_twenty_things_publish(tmp_path: Path) -> None:
    with running_system(tmp_path) as system:
        system.create_things(THINGS)
        system.routes([(f"thing:{name}", "sensors/#", "cloud") for name in THINGS])
        system.deploy()
        before = group_ca_subjects(system)
        old_issuer = x509.load_der_x509_certificate(
            system.core_server_certificate(THINGS[0])
        ).issuer.rfc4514_string()
        assert old_issuer == before[0]

        sim = system.start(
            "simulate",
            [
                sys.executable, "-m", "hedgerow", "thing", "simulate", "-e",
                f"127.0.0.1:{system.device_port}", "-r", str(system.certs / "root-ca.pem"),
                "--certs", str(system.certs), "--prefix", "sim", "--count", str(len(THINGS)),
                "--messages", str(MESSAGES), "--interval", "0.25", "--seed", "7",
                "--state-dir", str(tmp_path / "sim-state"), "--backoff-cap", "4",
            ],
        )  # fmt: skip
        # rotate once every thing has delivered something
        wait_until(
            lambda: len({m["topic"] for m in system.messages("sensors/#")}) == len(THINGS),
            timeout=60,
            what="a reading from every thing",
        )
        rotated_at = time.monotonic()
        system.cloud("group", "rotate-ca", "factory-1")
        after = group_ca_subjects(system)
        assert len(after) == 2 and after[1] == before[0] and after[0] != before[0], after

        sim.popen.wait(timeout=120)
        report = sim.output()
        assert sim.popen.returncode == 0, report
        assert f"published: {len(THINGS) * MESSAGES}  delivered: {len(THINGS) * MESSAGES}" in report
        assert "queued: 0  dropped: 0" in report

        # nothing lost: every thing's sequence 0..MESSAGES-1 is in the store
        def complete() -> bool:
            seen: dict[str, set[int]] = {name: set() for name in THINGS}
            for p in system.payloads("sensors/#"):
                seen[p["thing"]].add(p["sequence"])
            return all(s == set(range(MESSAGES)) for s in seen.values())

        wait_until(complete, timeout=60, what="every reading of every thing in the cloud")

        # the core renews its server certificate with the new group CA
        def core_on_new_ca() -> bool:
            der = system.core_server_certificate(THINGS[0])
            return x509.load_der_x509_certificate(der).issuer.rfc4514_string() == after[0]

        wait_until(
            core_on_new_ca, timeout=30, interval=1, what="the core's certificate from the new CA"
        )
        print(f"core on the new group CA {time.monotonic() - rotated_at:.1f} s after the rotation")
        # the new key and CSR were made by the keytool child, not in the daemon
        assert not system.core_maps("cryptography/hazmat/bindings")
