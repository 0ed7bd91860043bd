"""Bundles: a function's code (a zip file or a directory) unpacked for running, and its
``requirements.txt`` installed into a per-function package directory cached by hash.

``prepare_bundle`` copies or safely unzips the code into ``<work>/bundles/<name>-<digest>``
(reused when the digest is unchanged). If the code holds a non-empty ``requirements.txt``,
the packages are installed with pip into ``<work>/envs/<hash>`` — the hash covers the
requirements, the wheelhouse's files and the Python version, so identical sets are shared
and installed once. A ``wheelhouse/`` (or ``wheels/``) directory in the bundle makes the
install offline: ``pip install --no-index --find-links wheelhouse``. The worker puts the
package directory on ``sys.path`` right after the function's code.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from hedgerow.functions.errors import BundleError

log = logging.getLogger(__name__)

WHEELHOUSE_DIRS: Final = ("wheelhouse", "wheels")
PIP_TIMEOUT_S: Final = 300.0
#: Limits on a zip bundle, checked before anything is written (from the zip's central
#: directory) and again while unpacking (actual bytes, whatever the headers claim).
MAX_ZIP_BYTES: Final = 256 * 1024 * 1024
MAX_UNPACKED_BYTES: Final = 512 * 1024 * 1024
MAX_ENTRIES: Final = 10_000
_COPY_CHUNK: Final = 1024 * 1024
_SKIP_DIRS: Final = {"__pycache__", ".git"}
READABLE_DIR: Final = 0o755


@dataclass(frozen=True)
class PreparedBundle:
    digest: str
    code_dir: Path
    deps_dir: Path | None = None


def _hash_tree(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if any(part in _SKIP_DIRS for part in path.relative_to(root).parts):
            continue
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _readable_tmpdir(parent: Path, prefix: str) -> Path:
    """A fresh directory others may read: functions may run as another user."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    tmp.chmod(READABLE_DIR)
    return tmp


def bundle_digest(artifact: Path) -> str:
    """A content hash of a zip file or a directory."""
    try:
        if artifact.is_dir():
            return _hash_tree(artifact)
        return hashlib.sha256(artifact.read_bytes()).hexdigest()
    except OSError as exc:
        raise BundleError(f"cannot read bundle {artifact}: {exc}") from exc


def _limit_error(archive: Path, what: str, limit: str, name: str) -> BundleError:
    return BundleError(
        f"bundle {archive.name}: {what}, over the limit of {limit} ({name}); "
        "ship fewer or smaller files (dependencies as a requirements.txt or a wheelhouse)"
    )


def _declared_entries(archive: Path) -> int | None:
    """The entry count the zip's end record declares (read before the central directory is
    parsed, so 100,000 entries are refused without building 100,000 objects); None when
    the record is not found (``zipfile`` then says what is wrong)."""
    with archive.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        tail_len = min(size, 22 + 65535)
        f.seek(size - tail_len)
        tail = f.read(tail_len)
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or at + 22 > len(tail):
            return None
        count = int.from_bytes(tail[at + 10 : at + 12], "little")
        if count != 0xFFFF or at < 20 or tail[at - 20 : at - 16] != b"PK\x06\x07":
            return count
        # ZIP64: the locator points at the ZIP64 end record, which holds the real count
        f.seek(int.from_bytes(tail[at - 12 : at - 4], "little"))
        record = f.read(56)
        if record[:4] != b"PK\x06\x06" or len(record) < 40:
            return None
        return int.from_bytes(record[32:40], "little")


def _unzip(archive: Path, target: Path) -> None:
    """Unpack ``archive`` into ``target`` within ``MAX_ZIP_BYTES``, ``MAX_ENTRIES`` and
    ``MAX_UNPACKED_BYTES``; ``BundleError`` names the limit that was hit."""
    zip_bytes = archive.stat().st_size
    if zip_bytes > MAX_ZIP_BYTES:
        raise _limit_error(archive, f"{zip_bytes} bytes", f"{MAX_ZIP_BYTES} bytes", "MAX_ZIP_BYTES")
    declared = _declared_entries(archive)
    if declared is not None and declared > MAX_ENTRIES:
        raise _limit_error(archive, f"{declared} entries", f"{MAX_ENTRIES}", "MAX_ENTRIES")
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ENTRIES:
                raise _limit_error(
                    archive, f"{len(infos)} entries", f"{MAX_ENTRIES}", "MAX_ENTRIES"
                )
            total = 0
            for info in infos:
                name = PurePosixPath(info.filename)
                if name.is_absolute() or ".." in name.parts:
                    raise BundleError(f"unsafe path in bundle: {info.filename}")
                total += info.file_size
            if total > MAX_UNPACKED_BYTES:
                raise _limit_error(
                    archive,
                    f"unpacks to {total} bytes",
                    f"{MAX_UNPACKED_BYTES} bytes",
                    "MAX_UNPACKED_BYTES",
                )
            written = 0
            for info in infos:
                path = target.joinpath(*PurePosixPath(info.filename).parts)
                if info.is_dir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                # readable by the unprivileged user functions run as, whatever the umask
                with zf.open(info) as src, path.open("wb") as dst:
                    os.fchmod(dst.fileno(), 0o644)
                    while chunk := src.read(_COPY_CHUNK):
                        written += len(chunk)
                        if written > MAX_UNPACKED_BYTES:  # headers that lie about sizes
                            raise _limit_error(
                                archive,
                                "unpacks to more bytes than its headers say",
                                f"{MAX_UNPACKED_BYTES} bytes",
                                "MAX_UNPACKED_BYTES",
                            )
                        dst.write(chunk)
        for directory in {target, *(p for p in target.rglob("*") if p.is_dir())}:
            directory.chmod(READABLE_DIR)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise BundleError(f"not a zip file (or a damaged one): {archive.name}: {exc}") from exc
    except NotImplementedError as exc:  # an unsupported compression method
        raise BundleError(f"bundle {archive.name}: {exc}") from exc


def _has_module(root: Path, module: str) -> bool:
    path = root.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _code_root(target: Path, module: str | None) -> Path:
    """A zip of one top-level folder (``zip -r fn.zip fn/``): use that folder as the code
    root when the handler's module is found in it and not at the top."""
    entries = [e for e in target.iterdir() if e.name != "__MACOSX"]
    if module is None or len(entries) != 1 or not entries[0].is_dir():
        return target
    inner = entries[0]
    if not _has_module(target, module) and _has_module(inner, module):
        return inner
    return target


def unpack(
    name: str, artifact: Path, work_dir: Path, module: str | None = None
) -> tuple[str, Path]:
    """Unpack (or copy) the code; returns (digest, code directory). Blocking.

    ``module`` (the handler's module) lets a zip of one top-level folder work too."""
    if not artifact.exists():
        raise BundleError(f"bundle not found: {artifact}")
    digest = bundle_digest(artifact)
    root = work_dir / "bundles" / f"{name}-{digest[:16]}"
    if not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = _readable_tmpdir(root.parent, f".{name}-")
        try:
            code = tmp / "code"
            if artifact.is_dir():
                shutil.copytree(artifact, code, ignore=shutil.ignore_patterns(*_SKIP_DIRS))
            else:
                code.mkdir()
                _unzip(artifact, code)
            os.replace(tmp, root)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BundleError(f"cannot unpack bundle: {exc}") from exc
        except BundleError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if artifact.is_dir():
        return digest, root / "code"
    return digest, _code_root(root / "code", module)


def requirements_of(code_dir: Path) -> bytes | None:
    path = code_dir / "requirements.txt"
    if not path.is_file():
        return None
    text = path.read_bytes()
    meaningful = [
        line
        for line in text.decode(errors="replace").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    return text if meaningful else None


def wheelhouse_of(code_dir: Path) -> Path | None:
    for candidate in WHEELHOUSE_DIRS:
        if (code_dir / candidate).is_dir():
            return code_dir / candidate
    return None


def environment_key(requirements: bytes, wheelhouse: Path | None, python: str) -> str:
    digest = hashlib.sha256(requirements)
    digest.update(f"\0{python}\0{sys.version_info[:2]}".encode())
    if wheelhouse is not None:
        digest.update(_hash_tree(wheelhouse).encode())
    return digest.hexdigest()


async def install_requirements(
    code_dir: Path, work_dir: Path, *, python: str = sys.executable, limit_s: float = PIP_TIMEOUT_S
) -> Path | None:
    """Install the bundle's requirements (cached by hash); the package directory or None."""
    requirements = requirements_of(code_dir)
    if requirements is None:
        return None
    wheelhouse = wheelhouse_of(code_dir)
    key = environment_key(requirements, wheelhouse, python)
    target = work_dir / "envs" / key[:24]
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _readable_tmpdir(target.parent, ".env-")
    argv = [python, "-m", "pip", "install", "--quiet", "--no-input", "--disable-pip-version-check"]
    argv += ["--target", str(tmp), "-r", str(code_dir / "requirements.txt")]
    if wheelhouse is not None:
        argv += ["--no-index", "--find-links", str(wheelhouse)]
    log.info("requirements_install dir=%s offline=%s", code_dir, wheelhouse is not None)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(code_dir),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(limit_s):
            output, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        raise BundleError(f"requirements install took longer than {limit_s} s") from None
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        lines = [ln for ln in output.decode(errors="replace").splitlines() if ln.strip()]
        detail = lines[-1] if lines else f"pip exited with {proc.returncode}"
        raise BundleError(f"requirements install failed: {detail}")
    (tmp / ".complete").write_text("ok\n")
    try:
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another deploy installed the same set
        if not (target / ".complete").exists():
            raise BundleError("requirements install could not be stored") from None
    return target


async def prepare_bundle(
    name: str,
    artifact: Path,
    work_dir: Path,
    *,
    python: str = sys.executable,
    module: str | None = None,
) -> PreparedBundle:
    digest, code_dir = await asyncio.to_thread(unpack, name, artifact, work_dir, module)
    deps_dir = await install_requirements(code_dir, work_dir, python=python)
    return PreparedBundle(digest, code_dir, deps_dir)


def remove_unused(work_dir: Path, in_use: list[PreparedBundle]) -> None:
    """Delete unpacked bundles and package directories no running function uses."""
    keep: set[Path] = set()
    for bundle in in_use:
        keep.update({bundle.code_dir, *bundle.code_dir.parents})
        if bundle.deps_dir is not None:
            keep.add(bundle.deps_dir)
    for area in ("bundles", "envs"):
        root = work_dir / area
        if not root.is_dir():
            continue
        for entry in root.iterdir():
            if entry not in keep:
                log.info("removing_unused path=%s", entry)
                shutil.rmtree(entry, ignore_errors=True)
