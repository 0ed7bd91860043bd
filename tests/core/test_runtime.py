"""Installing a release of the core (real ``venv`` and offline ``pip``, small wheels made
here): a complete environment is marked ready, a failed install switches nothing."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
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


def test_three_successive_updates_leave_exactly_two_environments(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each update as the core does it: installed by the running version, switched, then
    committed by the new version (its trial); the running and the rollback environment
    stay, older ones go, and the log says how many bytes that freed."""
    caplog.set_level("INFO", logger="hedgerow.core.runtime")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    data = tmp_path / "data"
    running_env, running_version = launcher.BASE, "1.0"
    freed: list[int] = []
    for version in ("2.0", "3.0", "4.0"):
        release, stored = release_of(version, wheel(wheels, "hedgerow", version))
        old = RuntimeUpdater(data, running_env=running_env, running_version=running_version)
        asyncio.run(old.install(release, stored))
        old.switch(version, f"d-{version}")
        if version == "4.0":  # what an install killed by a power cut leaves behind
            leftover = data / "runtime" / "wheelhouse" / "9.9.9"
            leftover.mkdir(parents=True)
            (leftover / "dep-1.0-py3-none-any.whl").write_bytes(b"w" * 1000)
        new = RuntimeUpdater(data, running_env=version, running_version=version)
        trial = new.trial()
        assert trial is not None and trial.previous == running_env
        freed.append(new.commit(trial))
        running_env, running_version = version, version
    runtime = data / "runtime"
    assert sorted(p.name for p in (runtime / "venvs").iterdir()) == ["3.0", "4.0"]
    assert launcher.current_env(runtime) == "4.0"
    assert launcher.read_pointer(runtime, "previous") == "3.0"  # the rollback target stays
    assert launcher.env_ready(runtime, "3.0") and launcher.env_ready(runtime, "4.0")
    assert not list((runtime / "wheelhouse").iterdir())
    assert freed[0] == 0 and freed[1] == 0 and freed[2] > 1000  # venv 2.0 and the leftover
    pruned = [r.getMessage() for r in caplog.records if "core.update.pruned" in r.getMessage()]
    assert pruned == [
        f"core.update.pruned path=venvs/2.0 bytes={freed[2] - 1000}",
        "core.update.pruned path=wheelhouse/9.9.9 bytes=1000",
    ]
    cleaned = [r.getMessage() for r in caplog.records if "core.update.cleaned" in r.getMessage()]
    assert cleaned[-1] == f"core.update.cleaned kept=3.0,4.0 removed=2 freed_bytes={freed[2]}"


async def test_a_cancelled_install_leaves_no_environment_and_no_pip(tmp_path: Path) -> None:
    """A newer deployment supersedes an update while it installs: pip is killed and the
    half-made environment removed; a wheelhouse left by an install killed harder goes at
    the next commit."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    release, stored = release_of("9.9.7", wheel(wheels, "hedgerow", "9.9.7"))
    updater = RuntimeUpdater(tmp_path / "data", running_version="1.0")
    target = launcher.env_dir(updater.runtime, "9.9.7")
    ours = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    before = set(ours.read_text().split())  # other tests' processes in this worker, if any
    install = asyncio.create_task(updater.install(release, stored))
    async with asyncio.timeout(60):
        while not target.exists():  # the venv step has begun
            await asyncio.sleep(0.01)
    install.cancel()
    with pytest.raises(asyncio.CancelledError):
        await install
    assert not target.exists()
    assert not (updater.runtime / "wheelhouse" / "9.9.7").exists()
    assert set(ours.read_text().split()) <= before  # venv or pip killed and reaped
    assert launcher.current_env(updater.runtime) == launcher.BASE
