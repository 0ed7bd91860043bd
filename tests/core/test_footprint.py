"""The daemon's resident set stays small: what ``hedgerow core run`` imports holds neither
``cryptography`` (≈12 MB, used only by the short-lived keytool child) nor ``httpx`` (≈6 MB
with click, rich and pygments). The running process is checked in tests/e2e."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "cryptography",
    "httpx",
    "click",
    "rich",
    "pygments",
    "anyio",
    "hedgerow.pki",
    "pymodbus",  # industrial connectors: loaded only when a deployment names one
    "asyncua",
    "serial",
    "hedgerow.connectors.modbus",
    "hedgerow.connectors.opcua",
    "hedgerow.core._keytool_child",  # the child's side: only in the short-lived process
)


def test_what_core_run_imports_leaves_out_the_heavy_libraries() -> None:
    code = (
        "import json, sys\n"
        "import hedgerow.cli, hedgerow.cli.core, hedgerow.core.daemon\n"
        "import hedgerow.functions.host, hedgerow.core.keytool, hedgerow.core.https\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(done.stdout)
    assert "hedgerow.core.daemon" in loaded
    assert "hedgerow.connectors.host" in loaded  # the host is there, its libraries are not
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY]
    assert heavy == []
