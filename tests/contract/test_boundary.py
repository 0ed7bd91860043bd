"""``hedgerow.contract`` may import the standard library only (docs/architecture.md): the
core loads it and counts its memory, and both sides must be able to use it."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_contract_imports_nothing_but_the_standard_library() -> None:
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import hedgerow.contract\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(done.stdout)
    assert "hedgerow.contract.deployment" in loaded
    outside = [
        name
        for name in loaded
        if name.split(".")[0] not in sys.stdlib_module_names
        and name not in ("hedgerow", "hedgerow._version")
        and not name.startswith("hedgerow.contract")
    ]
    assert outside == []
