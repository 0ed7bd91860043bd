"""The launcher and the update's files: its decisions (pure), its loop with real child
processes, and a SIGKILL at every file operation of an update, a commit and a rollback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hedgerow.core import launcher
from hedgerow.core.launcher import BASE, DropPending, Launch, Launcher, Pending, RollBack, decide
from hedgerow.core.runtime import RuntimeUpdater

NEW = "9.9.9"


def test_decisions() -> None:
    pending = Pending(NEW, BASE, "d-1")
    assert decide(BASE, None, True) == Launch(BASE)
    assert decide(NEW, None, True) == Launch(NEW)
    assert decide(BASE, pending, True) == DropPending()  # cut before `current` switched
    assert decide(NEW, pending, True) == Launch(NEW, trial=True)
    assert decide(NEW, pending, False) == RollBack(BASE, f"the environment of {NEW} is incomplete")
    tried = Pending(NEW, BASE, "d-1", attempts=launcher.MAX_BOOT_ATTEMPTS)
    assert decide(NEW, tried, True, "RuntimeError: boom") == RollBack(
        BASE, f"version {NEW} did not start (2 attempts): RuntimeError: boom"
    )


def fake_env(runtime: Path, name: str, script: str) -> None:
    """An environment whose ``bin/python`` is a shell script (the launcher runs
    ``bin/python -m hedgerow ARGS``)."""
    python = launcher.env_dir(runtime, name) / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n" + script)
    python.chmod(0o755)
    (launcher.env_dir(runtime, name) / launcher.READY_MARKER).write_text(name)


def base_python(tmp_path: Path) -> str:
    """The base environment: records each start, exits 0 (a core stopped normally)."""
    script = tmp_path / "base-python"
    script.write_text(f'#!/bin/sh\necho "$HEDGEROW_RUNTIME_ENV $*" >> {tmp_path}/starts\n')
    script.chmod(0o755)
    return str(script)


def test_a_release_that_crashes_at_start_is_rolled_back(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    fake_env(runtime, NEW, 'echo "RuntimeError: boom" >&2\nexit 1\n')
    RuntimeUpdater(tmp_path).switch(NEW, "d-1")
    code = Launcher(tmp_path, ["core", "run"], base_python(tmp_path)).run()
    assert code == 0
    assert (tmp_path / "starts").read_text() == "base -m hedgerow core run\n"
    assert launcher.current_env(runtime) == BASE
    assert launcher.read_pending(runtime) is None
    (outcome,) = launcher.read_outcomes(runtime)
    assert outcome["deployment_id"] == "d-1" and outcome["status"] == "RolledBack"
    assert outcome["reason"] == f"version {NEW} did not start (2 attempts): RuntimeError: boom"


def test_a_release_that_never_commits_is_stopped_at_its_deadline(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    fake_env(runtime, NEW, "exec sleep 60\n")
    RuntimeUpdater(tmp_path, update_timeout=1.0).switch(NEW, "d-2")
    assert Launcher(tmp_path, ["core", "run"], base_python(tmp_path)).run() == 0
    (outcome,) = launcher.read_outcomes(runtime)
    assert outcome["reason"] == f"version {NEW} not healthy within 1 s"
    assert launcher.current_env(runtime) == BASE


def test_a_committed_release_restarts_on_request_and_exits_with_its_code(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    # first start: asks for a restart (RESTART); second: exits 3 (a crash systemd restarts)
    fake_env(
        runtime,
        NEW,
        f"if [ -e {tmp_path}/once ]; then exit 3; fi\ntouch {tmp_path}/once\nexit 75\n",
    )
    launcher.write_pointer(runtime, "current", NEW)
    assert Launcher(tmp_path, ["core", "run"], base_python(tmp_path)).run() == 3


# ---- SIGKILL at every file operation -------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from hedgerow.core import launcher, runtime

    data, kill_at, scenario = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    calls = 0
    for name in ("write_atomic", "remove_durably", "fsync_dir"):
        real = getattr(launcher, name)
        def counted(*args, _real=real, **kwargs):
            global calls
            calls += 1
            if calls == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # before this operation completes
            return _real(*args, **kwargs)
        setattr(launcher, name, counted)
    updater = runtime.RuntimeUpdater(data, running_version="1.0")
    rt = data / "runtime"
    if scenario == "commit":
        updater.switch("9.9.9", "d-1")
        step = launcher.Launcher(data, [])
        step.next_launch()  # the launcher counts the trial's start
        trial = runtime.RuntimeUpdater(data, running_env="9.9.9").trial()
        runtime.RuntimeUpdater(data, running_env="9.9.9").commit(trial)
    else:
        updater.switch("9.9.9", "d-1")
        launcher.roll_back(rt, launcher.read_pending(rt), "unhealthy")
    print("done", calls)
    """
)


def run_child(data: Path, kill_at: int, scenario: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(data), str(kill_at), scenario],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("scenario", ["commit", "rollback"])
def test_sigkill_at_every_step_leaves_a_state_the_launcher_finishes(
    tmp_path: Path, scenario: str
) -> None:
    fake_env(tmp_path / "count" / "runtime", NEW, "exit 0\n")
    full = run_child(tmp_path / "count", 0, scenario)
    assert full.returncode == 0, full.stderr
    operations = int(full.stdout.split()[-1])
    assert operations >= 10
    for kill_at in range(1, operations + 1):
        data = tmp_path / f"kill-{kill_at}"
        fake_env(data / "runtime", NEW, "exit 0\n")
        done = run_child(data, kill_at, scenario)
        assert done.returncode == -signal.SIGKILL, (kill_at, done.stderr)
        rt = data / "runtime"
        # what the launcher does next, from whatever the cut left
        launch = Launcher(data, []).next_launch()
        pending = launcher.read_pending(rt)
        assert launch.env in (BASE, NEW), (kill_at, launch)
        assert launcher.current_env(rt) == launch.env, kill_at
        if launch.trial:  # the update stands: the new version gets its (counted) start
            assert pending is not None and pending.version == NEW and pending.attempts >= 1
        else:
            assert pending is None, (kill_at, pending)
        if launcher.read_outcomes(rt):  # a rollback began: back on BASE, or still pending
            assert launch.env == BASE or (pending is not None and pending.attempts >= 1)
        leftovers = [p.name for p in rt.iterdir() if p.name.endswith(".tmp")]
        for name in leftovers:  # a cut write leaves at most its temporary file
            assert name.startswith("."), name
        assert all(
            json.loads((rt / f).read_text()) is not None
            for f in ("pending.json", "outcomes.json")
            if (rt / f).exists()
        )
    expected = NEW if scenario == "commit" else BASE
    assert launcher.current_env(tmp_path / "count" / "runtime") == expected


def test_the_childs_systemd_notifications_are_relayed_by_the_launcher(tmp_path: Path) -> None:
    """Under systemd (``NOTIFY_SOCKET``), the core's READY and WATCHDOG pings reach systemd
    from the launcher, the unit's main process; the core never sees systemd's socket."""
    runtime = tmp_path / "runtime"
    send = (
        f'exec {sys.executable} -c "import os; from hedgerow.core.service import sd_notify; '
        f"open('{tmp_path}/child-socket', 'w').write(os.environ['NOTIFY_SOCKET']); "
        "sd_notify('READY=1'); sd_notify('WATCHDOG=1')\"\n"
    )
    fake_env(runtime, NEW, send)
    launcher.write_pointer(runtime, "current", NEW)
    systemd = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(systemd))
        sock.settimeout(10)
        environ = {**os.environ, "NOTIFY_SOCKET": str(systemd)}
        done = subprocess.run(
            [sys.executable, str(launcher.install(tmp_path)), str(tmp_path), "core", "run"],
            env=environ,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert [sock.recv(100), sock.recv(100)] == [b"READY=1", b"WATCHDOG=1"]
    assert (tmp_path / "child-socket").read_text().startswith("@hedgerow-launcher-")
