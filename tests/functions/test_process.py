"""Process launching helpers: memory backend choice, users, the rotated log."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import hedgerow
from hedgerow.functions import FunctionDeployError, FunctionHost, FunctionSpec
from hedgerow.functions.errors import LaunchError
from hedgerow.functions.process import (
    RotatingLog,
    RunAs,
    can_run_as,
    cgroup2_mount,
    cgroup2_path,
    choose_unprivileged_user,
    describe_exit,
    find_cgroup_base,
    memory_delegated,
    plan_memory_limit,
    resolve_run_as,
)

from .helpers import Recorder, write_bundle

MOUNTINFO_V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
MOUNTINFO_V1 = (
    "30 23 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    "31 23 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
)


def test_cgroup_detection_helpers() -> None:
    assert cgroup2_mount(MOUNTINFO_V2) == Path("/sys/fs/cgroup")
    assert cgroup2_mount(MOUNTINFO_V1) == Path("/sys/fs/cgroup/unified")
    assert cgroup2_mount("30 23 0:26 / /x rw - cgroup cgroup rw\n") is None
    assert (
        cgroup2_path("4:memory:/a\n0::/system.slice/hedgerow.service\n")
        == "/system.slice/hedgerow.service"
    )
    assert cgroup2_path("4:memory:/a\n") is None
    assert memory_delegated("cpu io memory pids")
    assert not memory_delegated("cpu pids")


def test_memory_plan_prefers_cgroup_and_falls_back_to_rlimit(tmp_path: Path) -> None:
    rlimit = plan_memory_limit(64, None, "f")
    assert rlimit.cgroup is None and rlimit.rlimit_as == 64 * 1024 * 1024
    cgroup = plan_memory_limit(64, tmp_path, "f")
    assert cgroup.cgroup is not None and cgroup.cgroup.parent == tmp_path
    assert cgroup.rlimit_as is None and cgroup.limit_bytes == 64 * 1024 * 1024
    # on this machine: whatever the probe says must be usable
    base = find_cgroup_base()
    assert base is None or (base / "cgroup.subtree_control").exists()


def test_run_as_resolution() -> None:
    assert resolve_run_as("nobody", is_root=True) == RunAs(65534, 65534)
    assert resolve_run_as("nobody:0", is_root=True) == RunAs(65534, 0)
    assert resolve_run_as("4321:4321", is_root=True) == RunAs(4321, 4321)
    assert resolve_run_as("nobody", is_root=False) is None  # not root: no switching
    assert resolve_run_as(None, is_root=True) is None
    with pytest.raises(LaunchError, match="no such user"):
        resolve_run_as("no-such-user-hedgerow", is_root=True)
    with pytest.raises(LaunchError, match="no such group"):
        resolve_run_as("nobody:no-such-group-hedgerow", is_root=True)


def test_rotating_log(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "f.log", max_bytes=100, backups=2)
    for index in range(10):
        log.write(f"line {index:02d} ".encode() * 4 + b"\n")
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["f.log", "f.log.1", "f.log.2"]
    assert all(p.stat().st_size <= 100 for p in tmp_path.iterdir())
    assert "line 09" in (tmp_path / "f.log").read_text()
    assert log.last_line().startswith("line 09")


def test_describe_exit() -> None:
    assert describe_exit(4) == "memory limit exceeded"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(1) == "exited with code 1"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp_path is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="hedgerow-test-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


async def test_run_as_user_switch_and_unknown_user(shared_dir: Path) -> None:
    bundle = write_bundle(
        shared_dir,
        "who",
        {
            "who.py": """
                import os
                def handler(e, c):
                    return [os.getuid(), os.getgid(), os.getgroups(), os.getcwd()]
            """
        },
    )
    spec = FunctionSpec(name="who", handler="who.handler", pinned=True, run_as="nobody")
    async with FunctionHost(shared_dir / "work", publish=Recorder()) as host:
        (shared_dir / "work").chmod(0o755)
        await host.apply([spec], {"who": bundle})
        uid, gid, groups, cwd = json.loads(await host.invoke("who", b"{}"))
        if os.geteuid() == 0:
            assert (uid, gid, groups) == (65534, 65534, [])
            workdir = shared_dir / "work" / "functions" / "who"
            assert cwd == str(workdir) and workdir.stat().st_uid == 65534
            ghost = FunctionSpec(
                name="ghost", handler="who.handler", run_as="no-such-user-hedgerow"
            )
            with pytest.raises(FunctionDeployError, match="no such user"):
                await host.apply([spec, ghost], {"who": bundle, "ghost": bundle})
            assert host.states() == {"who": "RUNNING"}
        else:
            assert uid == os.geteuid()  # not root: functions run as the core's user


async def test_unprivileged_default_user_is_probed(tmp_path: Path) -> None:
    source_root = str(Path(hedgerow.__file__).resolve().parents[1])
    assert (
        await choose_unprivileged_user(sys.executable, tmp_path, source_root, ("no-such-user-x",))
        is None
    )
    async with FunctionHost(tmp_path / "work", publish=Recorder()) as host:
        if os.geteuid() == 0:
            expected = await choose_unprivileged_user(
                sys.executable, tmp_path / "work", source_root
            )
            assert host.default_user == expected
            assert await can_run_as("root", sys.executable, tmp_path, source_root)
        else:
            assert host.default_user is None
    async with FunctionHost(tmp_path / "work2", publish=Recorder(), default_run_as="") as host:
        assert host.default_user is None


async def test_cgroup_backend_writes_the_limit_and_joins_the_worker(tmp_path: Path) -> None:
    """With a cgroup base (here a stand-in directory), no RLIMIT_AS: memory.max instead."""
    base = tmp_path / "cgroup"
    base.mkdir()
    bundle = write_bundle(
        tmp_path,
        "probe",
        {
            "probe.py": """
                import os, resource
                def handler(e, c):
                    return [os.getpid(), resource.getrlimit(resource.RLIMIT_AS)[0]]
            """
        },
    )
    spec = FunctionSpec(name="probe", handler="probe.handler", pinned=True, memory_mb=96)
    async with FunctionHost(tmp_path / "work", publish=Recorder(), cgroup_base=base) as host:
        assert host.memory_backend == "cgroup-v2"
        await host.apply([spec], {"probe": bundle})
        pid, rlimit = json.loads(await host.invoke("probe", b"{}"))
        (group,) = list(base.iterdir())
        assert group.name.startswith("hedgerow-probe-")
        assert (group / "memory.max").read_text() == str(96 * 1024 * 1024)
        assert (group / "cgroup.procs").read_text() == str(pid)
        assert rlimit == -1  # RLIM_INFINITY: the cgroup limits memory, not the address space


@pytest.mark.skipif(os.geteuid() != 0, reason="the core's root path: CI and the lab run as root")
async def test_functions_never_run_as_root_when_the_core_does(tmp_path: Path) -> None:
    """The work directory sits under pytest's root-only tmp_path and the interpreter may
    live under a private home: the function still runs, as the dedicated user, and
    imports modules the worker had not loaded before switching."""
    import pwd

    from hedgerow.functions.process import FUNCTION_USER

    bundle = write_bundle(
        tmp_path,
        "who",
        {
            "who.py": """
                import os
                def handler(e, c):
                    import decimal, email.mime.text, sqlite3
                    return [os.getuid(), os.getgid(), str(decimal.Decimal("1.5") * 2)]
            """
        },
    )
    spec = FunctionSpec(name="who", handler="who.handler", pinned=True)
    async with FunctionHost(tmp_path / "work", publish=Recorder()) as host:
        await host.apply([spec], {"who": bundle})
        uid, gid, product = json.loads(await host.invoke("who", b"{}"))
        assert uid != 0 and gid != 0
        assert host.default_user == FUNCTION_USER
        assert pwd.getpwnam(FUNCTION_USER).pw_uid == uid
        assert product == "3.0"
        # named root explicitly: refused, the running function untouched
        as_root = FunctionSpec(name="boss", handler="who.handler", run_as="root")
        with pytest.raises(FunctionDeployError, match="would run as root"):
            await host.apply([spec, as_root], {"who": bundle, "boss": bundle})
        assert host.states() == {"who": "RUNNING"}
    # no unprivileged user at all ("" = none to choose from): refused with advice
    async with FunctionHost(tmp_path / "work3", publish=Recorder(), default_run_as="") as host:
        with pytest.raises(FunctionDeployError, match="useradd --system"):
            await host.apply([spec], {"who": bundle})
        assert host.states() == {}
