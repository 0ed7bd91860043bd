"""Over-the-air updates of the core itself: install a release beside the running one,
switch, then commit — or roll back.

The files and the start-time decisions belong to ``launcher.py`` (stdlib only, run from its
own copy, so the rollback never depends on the new version's code); this module is the
running core's side of the same layout:

1. ``install``: a virtual environment ``runtime/venvs/<version>`` made by this Python's
   ``venv`` (without pip: this environment's pip, or the base one's, installs into it with
   ``--python``), then ``pip install --no-index --find-links <wheelhouse>
   hedgerow==<version>`` with pip's configuration files ignored — fully offline, from the
   wheels the deployment carries (the release and its dependencies, checked by hash like
   function artifacts).
   ``.hedgerow-ready`` is written last: an environment without it is removed and made again.
2. ``switch``: ``pending.json`` (the version, the environment to go back to, the deployment,
   the deadline), then ``current``; then the core exits with ``launcher.RESTART`` (or, not
   started by the launcher, replaces itself with it).
3. the new version, started by the launcher as a trial, applies the deployment, checks its
   health (functions running, linked to the cloud, within the deadline) and ``commit``s
   (removes ``pending.json``), or ``roll_back``s and exits for the launcher to start the
   previous one. A version that crashes at start, hangs or is cut off by a power loss
   never commits: the launcher rolls it back (``launcher.decide``).
4. after a commit, ``prune``: every environment but the running one and the one to roll
   back to (and an install's leftover wheelhouse) is removed, the bytes freed logged
   (``core.update.cleaned``); the deployment agent removes the artifacts — a release's
   wheels among them — that neither its ``current`` nor its ``previous`` deployment names.
   A cancelled install (a newer deployment superseded it) kills pip and removes its
   half-made environment at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hedgerow import __version__
from hedgerow.contract.deployment import CoreRelease

from . import launcher
from .errors import UpdateError

log = logging.getLogger(__name__)

#: environment variables pip gets: no configuration file, no index, no version check
_PIP_ENV = {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@dataclass(frozen=True)
class RuntimeUpdater:
    """The running core's view of ``<data>/runtime``. ``running_env`` is the environment
    the launcher started (``HEDGEROW_RUNTIME_ENV``; ``base`` otherwise)."""

    data_dir: Path
    running_env: str = launcher.BASE
    running_version: str = __version__
    supervised: bool = False
    install_timeout: float = 600.0
    update_timeout: float = 120.0
    #: the launcher's own interpreter (``HEDGEROW_BASE_PYTHON``), whose pip can install
    base_python: str | None = None

    @classmethod
    def from_environ(
        cls, data_dir: Path, environ: Mapping[str, str] = os.environ, **kwargs: Any
    ) -> RuntimeUpdater:
        return cls(
            data_dir,
            running_env=environ.get(launcher.ENV_RUNTIME) or launcher.BASE,
            supervised=bool(environ.get(launcher.ENV_LAUNCHER)),
            base_python=environ.get(launcher.ENV_BASE_PYTHON),
            **kwargs,
        )

    def _pip_python(self) -> str | None:
        """An interpreter with pip to install into a new environment from outside (much
        faster than bootstrapping pip into it): this one's, or the base environment's the
        launcher names; None: bootstrap pip into the new environment (``ensurepip``)."""
        if importlib.util.find_spec("pip") is not None:
            return sys.executable
        if self.base_python and Path(self.base_python).exists():
            return self.base_python
        return None

    @property
    def runtime(self) -> Path:
        return self.data_dir / "runtime"

    def needs(self, release: CoreRelease | None) -> bool:
        """Whether a document's ``core_version`` asks for another version than this one."""
        return release is not None and release.version != self.running_version

    # ---- install --------------------------------------------------------------------

    async def install(self, release: CoreRelease, wheels: Mapping[str, Path]) -> None:
        """Make ``venvs/<version>`` from the wheels (``sha256 → stored file``); a complete
        one is kept. ``UpdateError`` says which step failed."""
        version = release.version
        target = launcher.env_dir(self.runtime, version)
        if launcher.env_ready(self.runtime, version):
            log.info("core.update.installed_already version=%s", version)
            return
        if target.exists():  # a cut install: start again
            await asyncio.to_thread(shutil.rmtree, target)
        log.info("core.update.installing version=%s wheels=%d", version, len(release.wheels))
        wheelhouse = self.runtime / "wheelhouse" / version
        await asyncio.to_thread(_fill_wheelhouse, wheelhouse, release, wheels)
        pip_python = self._pip_python()
        pip_args = [
            "install",
            "--no-index",
            "--find-links",
            str(wheelhouse),
            "--no-cache-dir",
            "--no-compile",  # the core imports a fraction of it: compiled on first import
            "--quiet",
            f"hedgerow=={version}",
        ]
        try:
            if pip_python is not None:  # no pip in the new environment: this one's pip fills it
                await self._run(
                    version, "venv", sys.executable, "-m", "venv", "--without-pip", str(target)
                )
                new_python = str(target / "bin" / "python")
                pip = [pip_python, "-m", "pip", "--python", new_python, *pip_args]
            else:
                await self._run(version, "venv", sys.executable, "-m", "venv", str(target))
                pip = [str(target / "bin" / "python"), "-m", "pip", *pip_args]
            await self._run(version, "pip install", *pip)
            launcher.write_atomic(target / launcher.READY_MARKER, version.encode())
        except asyncio.CancelledError:
            # a newer deployment superseded this one: no half-made environment stays
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, target, True))
            log.info("core.update.install_cancelled version=%s", version)
            raise
        finally:
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, wheelhouse, True))
        log.info("core.update.installed version=%s env=%s", version, target)

    async def _run(self, version: str, step: str, *command: str) -> None:
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **_PIP_ENV},
        )
        try:
            async with asyncio.timeout(self.install_timeout):
                output, _ = await process.communicate()
        except TimeoutError as exc:
            with contextlib.suppress(ProcessLookupError):  # it may have ended meanwhile
                process.kill()
            await process.wait()
            raise UpdateError(version, f"{step} took more than {self.install_timeout:g} s") from exc
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):  # it may have ended meanwhile
                process.kill()
            await asyncio.shield(process.wait())
            raise
        if process.returncode != 0:
            tail = output.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise UpdateError(
                version, f"{step} failed (exit {process.returncode}): {' | '.join(tail)}"
            )
        log.info(
            "core.update.step version=%s step=%s seconds=%.1f",
            version,
            step.replace(" ", "-"),
            time.monotonic() - started,
        )

    # ---- switch, commit, roll back ------------------------------------------------------

    def switch(self, version: str, deployment_id: str) -> None:
        """Make ``version`` the one the launcher starts next, as a trial."""
        pending = launcher.Pending(
            version,
            self.running_env,
            deployment_id,
            deadline_s=self.update_timeout,
            previous_version=self.running_version,
        )
        launcher.write_pending(self.runtime, pending)
        launcher.write_pointer(self.runtime, "current", version)
        launcher.write_pointer(self.runtime, "previous", self.running_env)
        log.info(
            "core.update.switched version=%s previous=%s deployment=%s",
            version,
            self.running_env,
            deployment_id,
        )

    def trial(self) -> launcher.Pending | None:
        """The pending update when this process is its trial start."""
        pending = launcher.read_pending(self.runtime)
        if pending is None or pending.version != self.running_env:
            return None
        return pending

    def commit(self, pending: launcher.Pending) -> int:
        """Make the trial the running release; older environments go (returns the bytes
        freed)."""
        launcher.remove_durably(self.runtime / "pending.json")
        launcher.install(self.data_dir)
        log.info("core.update.committed version=%s previous=%s", pending.version, pending.previous)
        return self.prune(pending)

    def roll_back(self, pending: launcher.Pending, reason: str) -> None:
        launcher.roll_back(self.runtime, pending, reason)
        log.warning(
            "core.update.rolled_back version=%s to=%s reason=%s",
            pending.version,
            pending.previous,
            reason,
        )

    def prune(self, pending: launcher.Pending) -> int:
        """After a committed update: remove every environment but the running one and the
        one to roll back to (``pending``'s, and whatever ``current`` and ``previous`` name),
        and wheelhouses an install left behind. Returns the bytes freed (logged)."""
        keep = {
            pending.version,
            pending.previous,
            launcher.current_env(self.runtime),
            launcher.read_pointer(self.runtime, "previous") or launcher.BASE,
        }
        venvs = self.runtime / "venvs"
        present = [e.name for e in venvs.iterdir()] if venvs.is_dir() else []
        doomed = [venvs / name for name in stale_envs(present, keep)]
        wheelhouse = self.runtime / "wheelhouse"  # a killed install's leftovers
        if wheelhouse.is_dir():
            doomed += sorted(wheelhouse.iterdir())
        freed = 0
        for path in doomed:
            size = tree_bytes(path)
            shutil.rmtree(path, ignore_errors=True)
            freed += size
            log.info("core.update.pruned path=%s bytes=%d", path.relative_to(self.runtime), size)
        log.info(
            "core.update.cleaned kept=%s removed=%d freed_bytes=%d",
            ",".join(sorted(keep & {*present, launcher.BASE})),
            len(doomed),
            freed,
        )
        return freed

    # ---- outcomes ------------------------------------------------------------------

    def outcomes(self) -> list[dict[str, Any]]:
        return launcher.read_outcomes(self.runtime)

    def mark_reported(self) -> None:
        outcomes = self.outcomes()
        if any(not o.get("reported") for o in outcomes):
            launcher.write_outcomes(self.runtime, [{**o, "reported": True} for o in outcomes])


def stale_envs(present: Iterable[str], keep: Iterable[str]) -> list[str]:
    """The environments to remove: all of ``present`` but those in ``keep`` (pure)."""
    kept = set(keep)
    return sorted(name for name in present if name not in kept)


def tree_bytes(path: Path) -> int:
    """The bytes of the files under ``path`` (symbolic links not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _fill_wheelhouse(directory: Path, release: CoreRelease, wheels: Mapping[str, Path]) -> None:
    """The release's wheels under their file names (pip reads name and version from them)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for wheel in release.wheels:
        source = wheels.get(wheel.sha256)
        if source is None:
            raise UpdateError(release.version, f"wheel {wheel.filename} was not fetched")
        try:
            os.link(source, directory / wheel.filename)
        except OSError:
            shutil.copyfile(source, directory / wheel.filename)


def restart_command(data_dir: Path, args: list[str]) -> list[str]:
    """The command that replaces a core not started by the launcher: the launcher's copy
    (installed now) supervising ``hedgerow ARGS`` with this Python as ``base``."""
    launcher.install(data_dir)
    return launcher.command(data_dir, sys.executable, args)
