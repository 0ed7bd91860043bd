"""Provisioning by claim, with real processes: 20 cores and 50 things from two claims at
once, each with a key it made itself; the 21st core and a serial the pre-provisioning hook
denies are refused with their reasons; a claimed core runs and a claimed thing's readings
reach the cloud through it on its second boot (no claim needed any more).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import free_port
from tests.e2e.harness import (
    CORE_TEST_SETTINGS,
    REPO,
    System,
    add_config_settings,
    port_open,
    running_cloud,
    wait_until,
)

#: 25-40 s on a quiet machine; this 2-core machine shared by many test runs took up to
#: 120 s at load 20, past the suite's default per-test timeout
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CORES = 20
THINGS = 50
DENIED = "blocked-7"
#: the pre-provisioning hook: a shell script (cheap to start 70 times) with a deny list
HOOK = """#!/bin/sh
if grep -q '"serial": "blocked-'; then echo "serial is on the deny list"; exit 1; fi
exit 0
"""


def _same_key(cert_file: Path, key_file: Path) -> bool:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    der = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return cert.public_key().public_bytes(enc, der) == key.public_key().public_bytes(enc, der)


def _key_body(key_file: Path) -> bytes:
    """The base64 body of a PEM key (what a copy of the key in a database would contain)."""
    return b"".join(line for line in key_file.read_bytes().splitlines() if b"-----" not in line)


def _claim(system: System, template: str, count: int, out: Path) -> str:
    done = system.cloud(
        "claim", "create", "--template", template, "--count", str(count), "--out", str(out),
        "--json",
    )  # fmt: skip
    return str(json.loads(done.stdout)["id"])


def test_one_claim_provisions_a_fleet_and_refuses_past_its_limit(tmp_path: Path) -> None:
    hook = tmp_path / "hook.sh"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    with running_cloud(tmp_path, cloud_settings=f'[provisioning]\nhook = "{hook}"\n') as system:
        system.cloud("group", "create", "site-00")  # the first core's group, made in advance
        system.cloud(
            "claim", "template", "create", "gateways", "--kind", "core",
            "--group", "site-{serial}", "--name-pattern", "gw-{serial}", "--attr", "model=gw2",
        )  # fmt: skip
        system.cloud(
            "claim", "template", "create", "sensors", "--kind", "thing",
            "--group", "site-00", "--name-pattern", "sensor-{seq}",
        )  # fmt: skip
        core_claim = _claim(system, "gateways", CORES, tmp_path / "cores.tar.gz")
        thing_claim = _claim(system, "sensors", THINGS, tmp_path / "things.tar.gz")

        # ---- 20 cores (one process each) and 51 things (one SDK process) at once
        serials = [f"{i:02d}" for i in range(CORES)]
        cores = [
            subprocess.Popen(
                system.hedgerow(
                    "core",
                    "provision",
                    "--claim",
                    str(tmp_path / "cores.tar.gz"),
                    "--serial",
                    serial,
                    "--data-dir",
                    str(tmp_path / "cores" / serial),
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
            for serial in serials
        ]
        thing_serials = [f"SN-{i:03d}" for i in range(THINGS)] + [DENIED]
        things = subprocess.run(
            [sys.executable, "-m", "tests.e2e.claim_things", str(tmp_path / "things.tar.gz"),
             str(tmp_path / "things"), *thing_serials],
            capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
        )  # fmt: skip
        outputs = [p.communicate(timeout=120)[0] for p in cores]
        assert [p.returncode for p in cores] == [0] * CORES, "\n".join(outputs)
        assert things.returncode == 0, things.stderr
        claimed = json.loads(things.stdout)

        # ---- distinct identities, keys made and kept on each device
        assert sorted(claimed["names"].values()) == sorted(f"sensor-{i}" for i in range(1, 51))
        assert "deny list" in claimed["refused"][DENIED]
        for serial in serials:
            data = tmp_path / "cores" / serial
            config = (data / "config.toml").read_text()
            assert f'name = "gw-{serial}"' in config and f'group = "site-{serial}"' in config
            assert _same_key(data / "core.cert.pem", data / "core.key")
        thing_keys = []
        for serial, name in claimed["names"].items():
            identity = tmp_path / "things" / serial
            assert _same_key(identity / f"{name}.cert.pem", identity / f"{name}.key")
            thing_keys.append(identity / f"{name}.key")
        stored = b"".join(p.read_bytes() for p in system.cloud_dir.glob("cloud.db*") if p.is_file())
        assert b"PRIVATE KEY" not in stored
        for key in [tmp_path / "cores" / s / "core.key" for s in serials] + thing_keys:
            assert _key_body(key) not in stored, f"{key} is in the cloud's database"

        # ---- the limit: the 21st core is refused, with the reason, and audited
        late = system.run(
            "core", "provision", "--claim", str(tmp_path / "cores.tar.gz"), "--serial", "20",
            "--data-dir", str(tmp_path / "cores" / "20"), "--timeout", "10", check=False,
        )  # fmt: skip
        assert late.returncode != 0
        assert f"claim {core_claim} is used up: 20 of 20 uses" in late.stderr
        assert not (tmp_path / "cores" / "20" / "config.toml").exists()
        audit = json.loads(system.cloud("claim", "show", core_claim, "--json").stdout)
        assert audit["used"] == CORES
        outcomes = [u["outcome"] for u in audit["uses"]]
        assert outcomes.count("ok") == CORES and outcomes.count("refused") == 1
        assert audit["uses"][-1]["serial"] == "20" and "limit" in audit["uses"][-1]["reason"]
        thing_audit = json.loads(system.cloud("claim", "show", thing_claim, "--json").stdout)
        assert [u["serial"] for u in thing_audit["uses"] if u["outcome"] == "refused"] == [DENIED]
        cores_listed = json.loads(system.cloud("core", "list", "--json").stdout)
        assert sorted(c["name"] for c in cores_listed) == [f"gw-{s}" for s in serials]

        # ---- a claimed core runs; a claimed thing reaches the cloud through it, second boot
        core_dir = tmp_path / "cores" / "00"
        add_config_settings(
            core_dir / "config.toml", CORE_TEST_SETTINGS.format(metrics_port=free_port())
        )
        core_port = free_port()
        core = system.start(
            "core",
            system.hedgerow(
                "core", "run", "--claim", str(tmp_path / "cores.tar.gz"), "--data-dir",
                str(core_dir), "--host", "127.0.0.1", "--port", str(core_port),
            ),
        )  # fmt: skip
        wait_until(
            lambda: port_open(core_port) or core.popen.poll() is not None,
            timeout=60, what="the claimed core's port",
        )  # fmt: skip
        assert core.popen.poll() is None, core.output()
        serial, thing = next(iter(claimed["names"].items()))
        system.cloud(
            "subscription", "add", "--group", "site-00", "--source", f"thing:{thing}",
            "--topic", "sensors/#", "--target", "cloud",
        )  # fmt: skip
        system.cloud("deploy", "--group", "site-00", "--wait", "--timeout", "60")
        run = system.run(
            "thing", "run", "--claim", str(tmp_path / "things.tar.gz"), "--identity-dir",
            str(tmp_path / "things" / serial), "--state-dir", str(tmp_path / "thing-state"),
            "--count", "3", "--interval", "0.1", "--quiet", timeout=90,
        )  # fmt: skip
        assert f"thing {thing} (group site-00)" in run.stdout
        readings = wait_until(
            lambda: len(system.messages(f"sensors/{thing}")) >= 3 and system.messages("sensors/#"),
            timeout=30, what="the claimed thing's readings in the cloud",
        )  # fmt: skip
        assert {m["core"] for m in readings} == {"gw-00"}
