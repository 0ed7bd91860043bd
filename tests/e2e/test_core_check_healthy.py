"""``hedgerow core check`` on a freshly provisioned, healthy core says nothing is wrong.

The core was started as the README says, with run-time flags (``--host``, ``--port``): they
are saved to its config, so ``check`` looks at the port the core really serves, the cloud's
device server sends a ``Date`` header to compare clocks with, and the ~8-day server
certificate is judged against its own lifetime.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.e2e.harness import System, hedgerow, wait_until

pytestmark = pytest.mark.slow

#: warnings that depend on the machine, not on Hedgerow (a container without cgroup v2)
MACHINE_ONLY = {"cgroup v2"} if not Path("/sys/fs/cgroup/cgroup.controllers").exists() else set()


def test_core_check_on_a_fresh_core_prints_no_warning(system: System) -> None:
    data = system.root / "core"
    config = tomllib.loads((data / "config.toml").read_text())
    assert config["local"]["port"] == system.core_port  # the run-time flag, saved
    assert config["local"]["host"] == "127.0.0.1"
    wait_until(
        lambda: (data / "server" / "server.cert.pem").exists(), timeout=30, what="server cert"
    )
    done = system.run("core", "check", "--data-dir", str(data), check=False)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert f"ok    port 127.0.0.1:{system.core_port}" in out and "served by the running core" in out
    assert "cloud time unknown" not in out
    assert "s from the cloud's clock" in out
    lines = [line for line in out.splitlines() if line.startswith(("warn", "fail"))]
    unexpected = [line for line in lines if not any(m in line for m in MACHINE_ONLY)]
    assert unexpected == [], out
    assert "ok    certificate server" in out

    # the service would listen where the user ran the core, and says how to go on
    unit = system.root / "hedgerow-core.service"
    done = system.run(
        "core", "install-service", "--data-dir", str(data),
        "--unit-path", str(unit), "--no-systemctl",
    )  # fmt: skip
    assert f"listens on 127.0.0.1:{system.core_port}" in done.stdout
    assert "systemctl start" in done.stdout and "journalctl -u" in done.stdout
    assert f"--config {(data / 'config.toml').resolve()}" in unit.read_text()
    assert hedgerow()[0] in unit.read_text()
