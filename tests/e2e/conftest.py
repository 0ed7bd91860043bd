"""The whole-system fixture: a cloud, the group factory-1 and its core, running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import System, running_system
from tests.e2e.releases import Releases, build_releases


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    with running_system(tmp_path) as s:
        yield s


@pytest.fixture(scope="session")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Releases:
    """Wheels of this tree with bumped versions (one failing at start) and the wheelhouse of
    their dependencies, built once per session (per xdist worker)."""
    return build_releases(tmp_path_factory.mktemp("releases"))
