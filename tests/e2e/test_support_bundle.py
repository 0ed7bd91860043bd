"""A support bundle fetched from a running core through the cloud, with real processes.

`hedgerow cloud core support-bundle` asks over the core's MQTT link; the core uploads over
HTTPS. The bundle holds what an operator needs (versions, config, core check, the core's
state, recent logs, the last deployments) and none of the secrets the core holds: its
private key, the group secret a function declares (in clear or sealed), a token in a
function's environment, the cloud's admin token. A bundle asked while the core is down
waits for it and arrives once it is back.
"""

from __future__ import annotations

import json
import re
import tarfile
import time
from pathlib import Path

import pytest

from tests.e2e.harness import CORE, EXAMPLES, GROUP, System, wait_until

pytestmark = pytest.mark.slow

SECRET_VALUE = "hunter2-Sb4-unique-secret-value"
ENV_TOKEN = "tok-Qw8-unique-environment-token"


def read_bundle(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        out = {}
        for member in tar.getmembers():
            f = tar.extractfile(member)
            assert f is not None and member.name.startswith(f"{CORE}-support/"), member.name
            out[member.name.partition("/")[2]] = f.read()
    return out


def deploy_secret_reader(system: System) -> None:
    """A function that declares a group secret and has a token in its environment."""
    system.cloud("secret", "create", "--group", GROUP, "greengrass-api-key",
                 "--value", SECRET_VALUE)  # fmt: skip
    system.function(
        "reader", EXAMPLES / "v1_secret_reader", "v1_secret_reader.function_handler",
        "--runtime", "greengrass-v1", "--pinned", "--secret", "greengrass-api-key",
        "--env", "SECRET_NAME=greengrass-api-key", "--env", f"API_TOKEN={ENV_TOKEN}",
    )  # fmt: skip
    system.deploy()


def test_support_bundle_through_the_cloud_holds_no_secret(system: System, tmp_path: Path) -> None:
    deploy_secret_reader(system)
    out = tmp_path / "bundle.tar.gz"
    done = system.cloud("core", "support-bundle", CORE, "--out", str(out), "--timeout", "60")
    assert f"support bundle of {CORE}: {out}" in done.stdout and "asked" in done.stdout
    assert_what_an_operator_needs_and_no_secret(system, read_bundle(out))


def assert_what_an_operator_needs_and_no_secret(system: System, files: dict[str, bytes]) -> None:

    # what an operator needs
    manifest = json.loads(files["manifest.json"])
    assert manifest["core"] == CORE and set(manifest["files"]) == set(files) - {"manifest.json"}
    assert json.loads(files["versions.json"])["group"] == GROUP
    assert json.loads(files["config.json"])["name"] == CORE
    check = files["check.txt"].decode()
    assert "checks:" in check and "core" in check
    status = json.loads(files["status.json"])
    assert status["cloud_connected"] is True and status["functions"] == {"reader": "RUNNING"}
    assert any(name.startswith("logs/") and files[name] for name in files), sorted(files)
    index = json.loads(files["deployments/index.json"])
    document = json.loads(files[f"deployments/{index['current']}.json"])
    assert document["secrets"][0]["name"] == "greengrass-api-key"
    assert "sealed" not in document["secrets"][0]
    assert document["functions"][0]["environment"]["API_TOKEN"] == "<redacted>"

    # and none of the secrets the core holds
    core_dir = system.root / "core"
    on_disk = json.loads((core_dir / "deployments" / f"{index['current']}.json").read_text())
    sealed = on_disk["secrets"][0]["sealed"]
    key_lines = [
        line
        for line in (core_dir / "core.key").read_text().splitlines()
        if line and not line.startswith("-----")
    ]
    forbidden = [SECRET_VALUE, ENV_TOKEN, sealed, system.token, *key_lines]
    everything = b"\n".join(files.values())
    for secret in forbidden:
        assert secret.encode() not in everything, f"{secret[:12]}... is in the bundle"
    assert b"PRIVATE KEY-----\n" not in everything


def test_a_bundle_asked_while_the_core_is_down_arrives_when_it_returns(
    system: System, tmp_path: Path
) -> None:
    deploy_secret_reader(system)
    system.procs["core"].stop()
    wait_until(lambda: system.api(f"/api/v1/cores/{CORE}")["connected"] is False,
               timeout=10, what="the core to be disconnected")  # fmt: skip

    # asked now: the request is kept for the core, and the command says how to fetch it
    out = tmp_path / "bundle.tar.gz"
    asked = system.cloud("core", "support-bundle", CORE, "--out", str(out), "--timeout", "1",
                         check=False)  # fmt: skip
    assert asked.returncode == 2 and not out.exists(), asked.stdout + asked.stderr
    assert f"waiting for {CORE} to connect" in asked.stdout, asked.stdout
    later = re.search(r"--request (sb-[0-9a-f]+)", asked.stderr)
    assert later is not None, asked.stderr
    request_id = later[1]
    shown = system.api(f"/api/v1/cores/{CORE}/support-bundles/{request_id}")
    assert shown["status"] == "waiting", shown

    # the core comes back: it hears the request at its connect and uploads
    returned = time.monotonic()
    system.start_core(first=False)
    done = system.cloud("core", "support-bundle", CORE, "--request", request_id,
                        "--out", str(out), "--timeout", "60")  # fmt: skip
    print(f"bundle in {time.monotonic() - returned:.1f} s after the core was started again")
    assert f"support bundle of {CORE}: {out}" in done.stdout, done.stdout
    assert system.api(f"/api/v1/cores/{CORE}/support-bundles/{request_id}")["status"] == "received"
    assert_what_an_operator_needs_and_no_secret(system, read_bundle(out))
