"""The core's launcher: runs the Hedgerow environment the ``current`` pointer names, and
rolls an update back that did not commit — without running any code of the new version.

This file imports the standard library only, and is copied to ``<data>/runtime/launcher.py``
(``install``): the systemd unit starts that copy with the Python Hedgerow was first
installed in (the ``base`` environment), so an update that breaks the package cannot break
the launcher. It supervises one child, ``<env python> -m hedgerow core run ...``:

- exit code ``RESTART`` (75): the core switched ``current`` (an update, or a rollback it
  decided itself); start again with whatever ``current`` names now;
- while an update is pending (``pending.json``, written before ``current`` is switched),
  each start of the new version is counted first (``attempts``); at ``MAX_BOOT_ATTEMPTS``
  failed starts, or when the version has not committed within its deadline, the launcher
  rolls back: it records the outcome, points ``current`` at ``previous`` and removes
  ``pending.json`` — in that order, so a power cut at any point leaves a state this same
  decision finishes (``decide``, pure);
- any other exit of a committed version: the launcher exits with the same code (systemd's
  ``Restart=always`` starts it again).

Layout under ``<data>/runtime``::

    launcher.py        this file
    current, previous  environment names: a version, or "base" (the launcher's own Python)
    pending.json       {"version", "previous", "deployment_id", "attempts", "deadline_s"}
    outcomes.json      rollbacks for the core to report: [{"deployment_id", "version",
                       "status", "reason", "reported"}]
    venvs/<version>/   one virtual environment per release; ``.hedgerow-ready`` when complete
    start.log          the standard error of an uncommitted version's last start

Every file is replaced by rename after an fsync (``write_atomic``), then its directory is
fsynced.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

#: the core's exit code for "start me again: ``current`` changed" (EX_TEMPFAIL)
RESTART = 75
#: starts of an uncommitted version before the launcher rolls it back
MAX_BOOT_ATTEMPTS = 2
#: seconds an uncommitted version has to commit, unless ``pending.json`` says otherwise
DEFAULT_DEADLINE_S = 120.0
#: seconds between SIGTERM and SIGKILL when the launcher stops an unhealthy version
STOP_GRACE_S = 15.0
BASE = "base"
READY_MARKER = ".hedgerow-ready"
#: environment variables the launcher gives the core
ENV_LAUNCHER = "HEDGEROW_LAUNCHER"
ENV_RUNTIME = "HEDGEROW_RUNTIME_ENV"
ENV_BASE_PYTHON = "HEDGEROW_BASE_PYTHON"
MAX_OUTCOMES = 20


@dataclass(frozen=True)
class Pending:
    version: str
    previous: str
    deployment_id: str
    attempts: int = 0
    deadline_s: float = DEFAULT_DEADLINE_S
    #: the Hedgerow version of ``previous`` (for reports)
    previous_version: str = ""


@dataclass(frozen=True)
class Launch:
    env: str
    #: the start of an uncommitted version: counted, its stderr kept, its deadline kept
    trial: bool = False


@dataclass(frozen=True)
class RollBack:
    to: str
    reason: str


@dataclass(frozen=True)
class DropPending:
    """``pending.json`` names a version ``current`` never switched to (cut in between)."""


Decision = Launch | RollBack | DropPending


def decide(current: str, pending: Pending | None, ready: bool, last_error: str = "") -> Decision:
    """What to do before a start, from the pointers alone (pure)."""
    if pending is None:
        return Launch(current)
    if pending.version != current:
        return DropPending()
    if not ready:
        return RollBack(pending.previous, f"the environment of {pending.version} is incomplete")
    if pending.attempts >= MAX_BOOT_ATTEMPTS:
        detail = f": {last_error}" if last_error else ""
        return RollBack(
            pending.previous,
            f"version {pending.version} did not start ({pending.attempts} attempts){detail}",
        )
    return Launch(pending.version, trial=True)


# ---- files --------------------------------------------------------------------------------


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: write a temporary file, fsync it, rename, fsync the
    directory. A cut at any moment leaves the old content or the new, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def remove_durably(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def read_pointer(runtime: Path, name: str) -> str | None:
    try:
        value = (runtime / name).read_text().strip()
    except OSError:
        return None
    return value or None


def write_pointer(runtime: Path, name: str, value: str) -> None:
    write_atomic(runtime / name, value.encode())


def current_env(runtime: Path) -> str:
    return read_pointer(runtime, "current") or BASE


def read_pending(runtime: Path) -> Pending | None:
    try:
        data = json.loads((runtime / "pending.json").read_text())
        return Pending(
            version=str(data["version"]),
            previous=str(data["previous"]),
            deployment_id=str(data["deployment_id"]),
            attempts=int(data.get("attempts", 0)),
            deadline_s=float(data.get("deadline_s", DEFAULT_DEADLINE_S)),
            previous_version=str(data.get("previous_version", "")),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # unreadable: a file this code did not write whole; nothing pending can be trusted
        return None


def write_pending(runtime: Path, pending: Pending) -> None:
    write_atomic(runtime / "pending.json", json.dumps(asdict(pending)).encode())


def read_outcomes(runtime: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads((runtime / "outcomes.json").read_text())
    except (OSError, ValueError):
        return []
    return [entry for entry in data if isinstance(entry, dict)] if isinstance(data, list) else []


def write_outcomes(runtime: Path, outcomes: list[dict[str, Any]]) -> None:
    write_atomic(runtime / "outcomes.json", json.dumps(outcomes[-MAX_OUTCOMES:]).encode())


def env_dir(runtime: Path, env: str) -> Path:
    return runtime / "venvs" / env


def env_ready(runtime: Path, env: str) -> bool:
    return env == BASE or (env_dir(runtime, env) / READY_MARKER).exists()


def python_of(runtime: Path, env: str, base_python: str) -> str:
    return base_python if env == BASE else str(env_dir(runtime, env) / "bin" / "python")


def roll_back(runtime: Path, pending: Pending, reason: str) -> None:
    """Record the outcome, point ``current`` back, then forget the pending update: each
    step durable before the next, and repeating them after a cut does no harm."""
    outcomes = [
        o for o in read_outcomes(runtime) if o.get("deployment_id") != pending.deployment_id
    ]
    outcomes.append(
        {
            "deployment_id": pending.deployment_id,
            "version": pending.version,
            "status": "RolledBack",
            "reason": reason,
            "reported": False,
        }
    )
    write_outcomes(runtime, outcomes)
    write_pointer(runtime, "current", pending.previous)
    remove_durably(runtime / "pending.json")


def last_line(path: Path, limit: int = 65536) -> str:
    """The last non-empty line of a log (the exception of a crashed start)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - limit))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


# ---- the supervising loop -----------------------------------------------------------------


def _say(event: str, **fields: object) -> None:
    pairs = " ".join(f"{k}={v}" for k, v in fields.items())
    sys.stderr.write(f"hedgerow-launcher {event} {pairs}".rstrip() + "\n")
    sys.stderr.flush()


class Launcher:
    def __init__(self, data_dir: Path, args: list[str], base_python: str = sys.executable):
        self.runtime = data_dir / "runtime"
        self.args = args
        self.base_python = base_python
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None
        #: systemd's notifications from the child, sent on from this (the main) process
        self.relay: NotifyRelay | None = None

    def stop(self, signum: int, _frame: object = None) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.relay = NotifyRelay.open(os.environ.get("NOTIFY_SOCKET"))
        try:
            return self.loop()
        finally:
            if self.relay is not None:
                self.relay.close()

    def loop(self) -> int:
        while True:
            launch = self.next_launch()
            code = self.start(launch)
            if self.stopping:
                return code
            if code == RESTART:
                _say("restart", env=launch.env)
                continue
            if launch.trial and read_pending(self.runtime) is not None:
                _say("trial_failed", env=launch.env, code=code)
                continue
            return code

    def next_launch(self) -> Launch:
        while True:
            current = current_env(self.runtime)
            pending = read_pending(self.runtime)
            ready = env_ready(self.runtime, current)
            decision = decide(current, pending, ready, last_line(self.runtime / "start.log"))
            if isinstance(decision, Launch):
                if decision.trial and pending is not None:
                    attempts = pending.attempts + 1
                    write_pending(self.runtime, replace(pending, attempts=attempts))
                if not env_ready(self.runtime, decision.env):
                    _say("missing_env", env=decision.env, fallback=BASE)
                    return Launch(BASE)
                return decision
            if isinstance(decision, DropPending):
                _say("stale_pending", current=current)
                remove_durably(self.runtime / "pending.json")
                continue
            assert pending is not None
            _say("rollback", version=pending.version, to=decision.to, reason=decision.reason)
            roll_back(self.runtime, pending, decision.reason)

    def start(self, launch: Launch) -> int:
        env = dict(os.environ)
        env.pop("WATCHDOG_PID", None)  # the child pings systemd's watchdog (relayed)
        if self.relay is not None:
            env["NOTIFY_SOCKET"] = self.relay.address
        env[ENV_LAUNCHER] = str(os.getpid())
        env[ENV_RUNTIME] = launch.env
        env[ENV_BASE_PYTHON] = self.base_python
        python = python_of(self.runtime, launch.env, self.base_python)
        command = [python, "-m", "hedgerow", *self.args]
        _say("start", env=launch.env, trial=launch.trial)
        stderr = None
        if launch.trial:
            self.runtime.mkdir(parents=True, exist_ok=True)
            stderr = open(self.runtime / "start.log", "wb")  # noqa: SIM115 (closed below)
        try:
            self.child = subprocess.Popen(command, env=env, stderr=stderr)
            return self.wait(launch)
        finally:
            if stderr is not None:
                stderr.close()

    def wait(self, launch: Launch) -> int:
        assert self.child is not None
        started = time.monotonic()
        while True:
            try:
                code: int | None = self.child.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                code = None
            if self.relay is not None:
                self.relay.forward()  # also what the child said just before it exited
            if code is not None:
                return code
            if not launch.trial or self.stopping:
                continue
            pending = read_pending(self.runtime)
            if pending is None or pending.version != launch.env:
                launch = Launch(launch.env)  # committed (or rolled back by the core itself)
                continue
            if time.monotonic() - started > pending.deadline_s:
                reason = f"version {pending.version} not healthy within {pending.deadline_s:g} s"
                _say("deadline", version=pending.version, deadline_s=pending.deadline_s)
                self.child.terminate()
                try:
                    self.child.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    self.child.kill()
                    self.child.wait()
                roll_back(self.runtime, pending, reason)
                return RESTART


class NotifyRelay:
    """systemd accepts notifications (``READY=1``, ``WATCHDOG=1``) from the unit's main
    process: the launcher. The child gets a socket of the launcher's (abstract namespace)
    as ``NOTIFY_SOCKET`` and the launcher sends each datagram on, so the unit works with
    ``NotifyAccess=main`` and the watchdog watches the core, not the launcher."""

    def __init__(self, target: str, sock: socket.socket, address: str) -> None:
        self.target = "\0" + target[1:] if target.startswith("@") else target
        self.sock = sock
        self.address = address

    @classmethod
    def open(cls, target: str | None) -> NotifyRelay | None:
        if not target:
            return None
        name = f"hedgerow-launcher-{os.getpid()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind("\0" + name)
        sock.setblocking(False)
        return cls(target, sock, "@" + name)

    def forward(self) -> None:
        while True:
            try:
                message = self.sock.recv(4096)
            except BlockingIOError:
                return
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
                    out.connect(self.target)
                    out.sendall(message)
            except OSError as exc:
                _say("notify_failed", error=exc)

    def close(self) -> None:
        self.sock.close()


def install(data_dir: Path) -> Path:
    """Copy this file to ``<data>/runtime/launcher.py`` (atomically) and return its path."""
    target = data_dir / "runtime" / "launcher.py"
    write_atomic(target, Path(__file__).read_bytes())
    return target


def command(data_dir: Path, python: str, args: list[str]) -> list[str]:
    """The command line that runs the launcher copy for ``hedgerow ARGS``."""
    return [python, str(data_dir / "runtime" / "launcher.py"), str(data_dir), *args]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write("usage: launcher.py DATA_DIR HEDGEROW_ARGS...\n")
        return 2
    return Launcher(Path(argv[0]), argv[1:]).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
