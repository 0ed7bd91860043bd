"""Installing a release of the core (real ``venv`` and offline ``pip``, small wheels made
here): a complete environment is marked ready, a failed install switches nothing."""

from __future__ import annotations

import asyncio
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from hedgerow.contract import CoreRelease
from hedgerow.core import launcher
from hedgerow.core.errors import UpdateError
from hedgerow.core.runtime import RuntimeUpdater


def wheel(directory: Path, name: str, version: str, requires: str = "") -> Path:
    """A pure-Python wheel pip accepts: one module, METADATA, WHEEL, RECORD."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}_probe.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + (f"Requires-Dist: {requires}\n" if requires else ""),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    path = directory / f"{name}-{version}-py3-none-any.whl"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member, text in {**files, f"{dist}/RECORD": record}.items():
            archive.writestr(member, text)
    path.write_bytes(buffer.getvalue())
    return path


def release_of(version: str, *wheels: Path) -> tuple[CoreRelease, dict[str, Path]]:
    entries = []
    stored = {}
    for path in wheels:
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        entries.append({"filename": path.name, "sha256": sha, "size": len(data)})
        stored[sha] = path
    return CoreRelease.from_json({"version": version, "wheels": entries}), stored


def test_install_offline_then_switch(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    release, stored = release_of(
        "9.9.9",
        wheel(wheels, "hedgerow", "9.9.9", requires="tinydep"),
        wheel(wheels, "tinydep", "1.0"),
    )
    updater = RuntimeUpdater(tmp_path / "data", running_version="1.0")
    assert updater.needs(release) and not updater.needs(None)
    asyncio.run(updater.install(release, stored))
    env = launcher.env_dir(updater.runtime, "9.9.9")
    assert launcher.env_ready(updater.runtime, "9.9.9")
    assert list(env.glob("lib/python*/site-packages/tinydep_probe.py"))  # from the wheelhouse
    assert not (updater.runtime / "wheelhouse" / "9.9.9").exists()
    asyncio.run(updater.install(release, stored))  # ready: kept, not made again
    updater.switch("9.9.9", "d-1")
    assert launcher.current_env(updater.runtime) == "9.9.9"
    pending = launcher.read_pending(updater.runtime)
    assert pending is not None and pending.previous == launcher.BASE
    assert pending.previous_version == "1.0" and pending.deployment_id == "d-1"


def test_a_missing_dependency_fails_the_install_and_switches_nothing(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    release, stored = release_of(
        "9.9.8", wheel(wheels, "hedgerow", "9.9.8", requires="not-in-the-wheelhouse")
    )
    updater = RuntimeUpdater(tmp_path / "data", running_version="1.0")
    with pytest.raises(UpdateError) as caught:
        asyncio.run(updater.install(release, stored))
    assert caught.value.version == "9.9.8"
    assert "pip install failed" in caught.value.reason
    assert "not-in-the-wheelhouse" in caught.value.reason  # pip's own words, offline
    assert not launcher.env_ready(updater.runtime, "9.9.8")
    assert launcher.current_env(updater.runtime) == launcher.BASE
    assert launcher.read_pending(updater.runtime) is None
