"""Hedgerow releases built from this tree for over-the-air update tests (once per session).

``build_releases(root)`` copies the tree (``src``, ``pyproject.toml``, ``README.md``), sets a
bumped version number in the copy and builds its wheel with ``pip wheel --no-deps`` (the
build backend comes from the machine's configured index, as for ``make``); a second copy,
one number higher, gets a ``__main__`` that raises: a release that fails at start. The
dependencies' wheels (``pip download``) make the wheelhouse a gateway without internet
installs from.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import hedgerow

REPO = Path(__file__).resolve().parents[2]
FAILING_MAIN = 'raise RuntimeError("this release fails at start (test)")\n'


@dataclass(frozen=True)
class Releases:
    good: Path  # the wheel of the bumped version
    good_version: str
    failing: Path  # the wheel of a version whose entry point raises
    failing_version: str
    wheelhouse: Path  # the dependencies' wheels


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


def build_releases(root: Path) -> Releases:
    good_version = bumped(hedgerow.__version__, 1)
    failing_version = bumped(hedgerow.__version__, 2)
    good = _wheel(_tree(root, good_version), root / "good")
    failing_tree = _tree(root, failing_version)
    (failing_tree / "src" / "hedgerow" / "__main__.py").write_text(FAILING_MAIN)
    failing = _wheel(failing_tree, root / "failing")
    wheelhouse = root / "wheelhouse"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "-d", str(wheelhouse), str(good)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheelhouse / good.name).unlink()
    return Releases(good, good_version, failing, failing_version, wheelhouse)
