"""Hedgerow releases built from this tree for over-the-air update tests (once per session).

``build_releases(root)`` copies the tree (``src``, ``pyproject.toml``, ``README.md``), sets a
bumped version number in the copy and builds its wheel with ``pip wheel --no-deps`` (the
build backend comes from the machine's configured index, as for ``make``); a second copy,
one number higher, gets a ``__main__`` that raises: a release that fails at start; a third,
one higher again, is a good release to update to last. The
dependencies' wheels (``pip download``) make the wheelhouse a gateway without internet
installs from.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hedgerow
from tests.e2e.harness import GROUP, System

REPO = Path(__file__).resolve().parents[2]
FAILING_MAIN = 'raise RuntimeError("this release fails at start (test)")\n'


@dataclass(frozen=True)
class Releases:
    good: Path  # the wheel of the bumped version
    good_version: str
    failing: Path  # the wheel of a version whose entry point raises
    failing_version: str
    wheelhouse: Path  # the dependencies' wheels
    later: Path  # a third version, to update to after the others (old releases pruned)
    later_version: str


def bumped(version: str, by: int) -> str:
    parts = version.split(".")
    return ".".join([*parts[:-1], str(int(parts[-1]) + by)])


def _tree(root: Path, version: str) -> Path:
    copy = root / f"tree-{version}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(
        REPO / "src",
        copy / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
        symlinks=True,
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, copy / name)
    pyproject = copy / "pyproject.toml"
    pyproject.write_text(
        re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject.read_text(), count=1)
    )
    init = copy / "src" / "hedgerow" / "__init__.py"
    init.write_text(re.sub(r'__version__ = ".*"', f'__version__ = "{version}"', init.read_text()))
    return copy


def _wheel(tree: Path, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(tree)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("hedgerow-*.whl")
    return wheel


def build_release(root: Path, version: str, *, failing: bool = False) -> Path:
    """The wheel of this tree as ``version`` (``failing``: its entry point raises)."""
    tree = _tree(root, version)
    if failing:
        (tree / "src" / "hedgerow" / "__main__.py").write_text(FAILING_MAIN)
    return _wheel(tree, root / f"wheel-{version}")


def build_wheelhouse(root: Path, wheel: Path) -> Path:
    """The wheels of ``wheel``'s dependencies (not its own)."""
    wheelhouse = root / "wheelhouse"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "-d", str(wheelhouse), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheelhouse / wheel.name).unlink()
    return wheelhouse


def build_releases(root: Path) -> Releases:
    good_version = bumped(hedgerow.__version__, 1)
    failing_version = bumped(hedgerow.__version__, 2)
    later_version = bumped(hedgerow.__version__, 3)
    good = build_release(root, good_version)
    failing = build_release(root, failing_version, failing=True)
    later = build_release(root, later_version)
    wheelhouse = build_wheelhouse(root, good)
    return Releases(good, good_version, failing, failing_version, wheelhouse, later, later_version)


@dataclass(frozen=True)
class Update:
    """One ``hedgerow cloud deploy --core-version X --wait``: the command's result, the
    deployment it made (with its events), when it started (epoch) and how long it took."""

    done: subprocess.CompletedProcess[str]
    deployment: dict[str, Any]
    started: float
    took: float


def deploy_core_version(system: System, version: str) -> Update:
    started = time.time()
    done = system.cloud(
        "deploy", "--group", GROUP, "--core-version", version, "--wait", "--timeout", "150",
        check=False, timeout=200,
    )  # fmt: skip
    took = time.time() - started
    newest = system.api(f"/api/v1/groups/{GROUP}/deployments", limit="1")["items"][0]
    deployment = system.api(f"/api/v1/deployments/{newest['deployment_id']}")
    print(done.stdout, done.stderr)
    return Update(done, deployment, started, took)
