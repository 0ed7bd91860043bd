"""Bundles: zip and directory code, requirements from an offline wheelhouse, failures."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from hedgerow.functions import BundleError, FunctionDeployError, FunctionHost, FunctionSpec
from hedgerow.functions.code_bundle import bundle_digest, unpack

from .helpers import Recorder, write_bundle


def make_wheel(directory: Path, name: str, version: str, module_text: str) -> Path:
    """A minimal pure-Python wheel, built by hand (no network, no build backend)."""
    files = {
        f"{name}/__init__.py": module_text.encode(),
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: hedgerow-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record_lines = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record_lines.append(f"{path},sha256={digest},{len(data)}")
    record = f"{name}-{version}.dist-info/RECORD"
    record_lines.append(f"{record},,")
    files[record] = ("\n".join(record_lines) + "\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


USES_DEP = """
    import tinydep
    def handler(event, context):
        return tinydep.VALUE
"""


async def test_requirements_installed_offline_from_wheelhouse_and_cached(tmp_path: Path) -> None:
    bundles = {}
    for name in ("first", "second"):
        bundle = write_bundle(
            tmp_path, name, {"fn.py": USES_DEP, "requirements.txt": "tinydep==1.0\n"}
        )
        make_wheel(bundle / "wheelhouse", "tinydep", "1.0", "VALUE = 42\n")
        bundles[name] = bundle
    specs = [FunctionSpec(name=n, handler="fn.handler", pinned=True) for n in bundles]
    async with FunctionHost(tmp_path / "work", publish=Recorder()) as host:
        await host.apply(specs, bundles)
        assert json.loads(await host.invoke("first", b"{}")) == 42
        assert json.loads(await host.invoke("second", b"{}")) == 42
    envs = [p for p in (tmp_path / "work" / "envs").iterdir() if not p.name.startswith(".")]
    assert len(envs) == 1  # same requirements + wheelhouse: one install shared by both


async def test_failing_requirements_install_fails_deploy(tmp_path: Path) -> None:
    bundle = write_bundle(
        tmp_path, "needy", {"fn.py": USES_DEP, "requirements.txt": "tinydep==2.0\n"}
    )
    make_wheel(bundle / "wheelhouse", "tinydep", "1.0", "VALUE = 42\n")
    spec = FunctionSpec(name="needy", handler="fn.handler")
    async with FunctionHost(tmp_path / "work", publish=Recorder()) as host:
        with pytest.raises(FunctionDeployError) as info:
            await host.apply([spec], {"needy": bundle})
        assert info.value.function == "needy"
        assert "requirements install failed" in info.value.reason
        assert host.states() == {}


def test_zip_with_a_path_escape_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../escape.py", "x = 1\n")
    with pytest.raises(BundleError, match="unsafe path"):
        unpack("evil", archive, tmp_path / "work")
    assert not (tmp_path / "escape.py").exists()
    not_zip = tmp_path / "plain.zip"
    not_zip.write_text("hello")
    with pytest.raises(BundleError, match="not a zip"):
        unpack("plain", not_zip, tmp_path / "work")


def test_unpack_reuses_by_digest_and_finds_code_in_a_single_top_folder(tmp_path: Path) -> None:
    archive = tmp_path / "nested.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("temp_correct/temp_correct.py", "def handler(e, c):\n    return 1\n")
    digest, code = unpack("nested", archive, tmp_path / "work", "temp_correct")
    assert (code / "temp_correct.py").is_file()
    assert digest == bundle_digest(archive)
    again_digest, again = unpack("nested", archive, tmp_path / "work", "temp_correct")
    assert (again_digest, again) == (digest, code)
    # a handler module inside the folder (temp_correct.temp_correct): the top stays the root
    _, root = unpack("nested", archive, tmp_path / "work", "temp_correct.temp_correct")
    assert (root / "temp_correct" / "temp_correct.py").is_file()
    directory = write_bundle(tmp_path, "d", {"a.py": "x = 1\n"})
    before = bundle_digest(directory)
    (directory / "a.py").write_text("x = 2\n")
    assert bundle_digest(directory) != before


def test_zip_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """One entry of zeros that deflates ~1000:1 past the unpacked-size limit."""
    from hedgerow.functions.code_bundle import MAX_UNPACKED_BYTES

    archive = tmp_path / "bomb.zip"
    chunk = bytes(4 * 1024 * 1024)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("handler.py", "def handler(event, context):\n    return event\n")
        with zf.open("zeros.bin", "w", force_zip64=True) as out:
            for _ in range(MAX_UNPACKED_BYTES // len(chunk) + 1):
                out.write(chunk)
    assert archive.stat().st_size < 2 * 1024 * 1024
    with pytest.raises(BundleError) as e:
        unpack("bomb", archive, tmp_path / "work")
    assert "MAX_UNPACKED_BYTES" in e.value.reason and "unpacks to" in e.value.reason
    assert list((tmp_path / "work" / "bundles").iterdir()) == []  # nothing left behind


def test_zip_of_100k_tiny_entries_is_refused_naming_the_limit(tmp_path: Path) -> None:
    from hedgerow.functions.code_bundle import MAX_ENTRIES

    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for n in range(100_000):
            zf.writestr(f"f/{n}.txt", b"")
    with pytest.raises(BundleError) as e:
        unpack("many", archive, tmp_path / "work")
    assert f"100000 entries, over the limit of {MAX_ENTRIES} (MAX_ENTRIES)" in e.value.reason
    assert "ship fewer or smaller files" in e.value.reason
    assert list((tmp_path / "work" / "bundles").iterdir()) == []


def test_a_zip_at_the_entry_limit_unpacks(tmp_path: Path) -> None:
    archive = tmp_path / "ok.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("handler.py", "def handler(event, context):\n    return event\n")
        for n in range(999):
            zf.writestr(f"data/{n}.txt", str(n))
    _, code = unpack("ok", archive, tmp_path / "work")
    assert (code / "data" / "998.txt").read_text() == "998"
    assert (code / "handler.py").is_file()
