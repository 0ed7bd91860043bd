"""Greengrass V1 devices move to Hedgerow keeping their keys: only the endpoint and the root
CA file change.

Two V1-style devices run the seed's own script (AWSIoTPythonSDK) unchanged:
- ``bme680-7`` has an ECDSA certificate from the fleet's own CA; the CA is registered
  (``ca register --template``) and the device is admitted just in time at its first
  discovery, then its readings go through the shipped ``temp_correct`` function;
- ``legacy-2`` has an RSA-2048 certificate from a CA nobody registers (as AWS issued them);
  the certificate itself is registered (``thing import --dir``);
- ``bme680-8``, from the same CA, skips discovery and connects to the core (paho-mqtt): the
  core asks the cloud to admit it just in time.
Revoking the device CA then revokes what it admitted: discovery refuses the device.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from hedgerow import pki
from tests.e2e.harness import EXAMPLES, GROUP, REPO, System, v5_connack, wait_until

#: 25-40 s on a quiet machine; this 2-core machine shared by many test runs took up to
#: 120 s at load 20, past the suite's default per-test timeout
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

JIT, LEGACY, DIRECT = "bme680-7", "legacy-2", "bme680-8"


def _rsa_device(directory: Path, name: str) -> None:
    """An RSA-2048 device certificate from a CA that stays unknown to the cloud."""
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Old Vendor Device CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AWS IoT Certificate")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )


def _seed_script(system: System, devices: Path, name: str, count: int, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "greengrass_thing.py"),
         "-e", "127.0.0.1", "-p", str(system.device_port),
         "-r", str(system.certs / "root-ca.pem"),
         "-c", str(devices / f"{name}.cert.pem"), "-k", str(devices / f"{name}.key"),
         "-id", name, "-t", f"sensors/{name}", "-n", str(count), "--interval", "0.1"],
        capture_output=True, text=True, timeout=120, cwd=cwd, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_v1_devices_keep_their_keys_and_run_the_seed_script(system: System, tmp_path: Path) -> None:
    devices, legacy = tmp_path / "fleet", tmp_path / "legacy"
    devices.mkdir()
    acme = pki.make_ca("Acme Sensors CA", unit="acme")
    (devices / "acme-ca.pem").write_bytes(acme.cert_pem)
    device = pki.issue(acme, JIT, unit="sensor")
    (devices / f"{JIT}.cert.pem").write_bytes(device.cert_pem)
    (devices / f"{JIT}.key").write_bytes(device.key_pem)
    _rsa_device(legacy, LEGACY)
    system.certs.mkdir(parents=True, exist_ok=True)
    (system.certs / "root-ca.pem").write_bytes(
        (system.cloud_dir / "pki" / "root-ca.pem").read_bytes()
    )

    # the operator: a template for the fleet's CA, the CA, the legacy certificate, routes
    system.cloud(
        "claim", "template", "create", "acme", "--kind", "thing", "--group", GROUP,
        "--name-pattern", "{cn}", "--attr", "vendor=acme",
    )  # fmt: skip
    registered = json.loads(
        system.cloud("ca", "register", str(devices / "acme-ca.pem"), "--template", "acme",
                     "--json").stdout
    )  # fmt: skip
    imported = system.cloud("thing", "import", "--dir", str(legacy), "--group", GROUP)
    assert "imported 1 thing" in imported.stdout
    things = {t["name"] for t in json.loads(system.cloud("thing", "list", "--json").stdout)}
    assert JIT not in things and LEGACY in things  # admitted just in time, not before
    context = ssl.create_default_context(cafile=str(system.certs / "root-ca.pem"))
    context.load_cert_chain(devices / f"{JIT}.cert.pem", devices / f"{JIT}.key")
    discovery = f"https://127.0.0.1:{system.device_port}/greengrass/discover/thing/{JIT}"
    first = httpx.get(discovery, verify=context, timeout=10)  # the device's first discovery
    assert first.status_code == 200, first.text
    assert first.json()["GGGroups"][0]["GGGroupId"] == GROUP
    # routes name things of the group: the just-in-time device has one now
    system.function(
        "temp-correct", EXAMPLES / "temp_correct", "temp_correct.handler",
        "--pinned", "--env", "FACTOR=5",
    )  # fmt: skip
    system.route(f"thing:{JIT}", "sensors/#", "function:temp-correct")
    system.route("function:temp-correct", "corrected/#", "cloud")
    system.route(f"thing:{LEGACY}", "sensors/#", "cloud")
    system.deploy()

    # the devices, unchanged: the seed's script with the new endpoint and root CA file
    out = _seed_script(system, devices, JIT, 3, tmp_path)
    assert "connected to core" in out
    corrected = wait_until(
        lambda: (p := system.payloads("corrected/#")) and len(p) >= 3 and p,
        timeout=60, what="the just-in-time device's readings, corrected, in the cloud",
    )  # fmt: skip
    assert sorted(r["seq"] for r in corrected[:3]) == [0, 1, 2]
    assert all("cpu_temperature" in r for r in corrected)
    _seed_script(system, legacy, LEGACY, 2, tmp_path)
    wait_until(
        lambda: len(system.messages(f"sensors/{LEGACY}")) >= 2,
        timeout=60, what="the legacy device's readings in the cloud",
    )  # fmt: skip

    # a device of the same CA that goes straight to the core (no discovery): admitted there
    direct = pki.issue(acme, DIRECT, unit="sensor")
    (devices / f"{DIRECT}.cert.pem").write_bytes(direct.cert_pem)
    (devices / f"{DIRECT}.key").write_bytes(direct.key_pem)
    assert v5_connack(system, DIRECT, devices) == (0, "")
    things = {t["name"] for t in json.loads(system.cloud("thing", "list", "--json").stdout)}
    assert {JIT, LEGACY, DIRECT} <= things

    # the registry: the device's own certificate, no key of ours
    shown = json.loads(system.cloud("thing", "show", JIT, "--json").stdout)
    assert shown["groups"] == [GROUP] and shown["attributes"]["vendor"] == "acme"
    assert [c["fingerprint"] for c in shown["certificates"]] == [pki.fingerprint(device.cert)]

    # revoking the CA revokes what it admitted: discovery refuses the device
    system.cloud("ca", "revoke", registered["fingerprint"])
    shown = json.loads(system.cloud("thing", "show", JIT, "--json").stdout)
    assert [c["status"] for c in shown["certificates"]] == ["revoked"]
    refused = httpx.get(discovery, verify=context, timeout=10)
    assert refused.status_code == 401 and "revoked" in refused.json()["errorMessage"]
