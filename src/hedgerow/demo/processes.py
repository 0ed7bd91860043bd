"""Child processes of the demo: started with logs to files, all stopped together.

Every child gets its own process group so that stopping the demo (Ctrl-C, an error, the
end of ``--duration``) ends everything it started: SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

#: How long a child has between SIGTERM and SIGKILL.
STOP_GRACE_S = 5.0


class DemoError(Exception):
    """The demo cannot go on; the message says what failed and where its log is."""


def hedgerow_command(*args: str) -> list[str]:
    """Run the ``hedgerow`` CLI with this interpreter (works inside and outside a venv)."""
    return [sys.executable, "-m", "hedgerow", *args]


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class ProcessGroup:
    """Starts named children and stops all of them on exit, in reverse order."""

    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)

    def __enter__(self) -> ProcessGroup:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start(self, name: str, argv: Sequence[str]) -> Child:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._environment(),
                start_new_session=True,
            )
        child = Child(name, process, log_path)
        self.children.append(child)
        log.info("demo.started name=%s pid=%s log=%s", name, process.pid, log_path)
        return child

    def run(self, name: str, argv: Sequence[str], *, timeout: float = 120.0) -> str:
        """Run a command to completion; its output is returned and kept in the log."""
        log_path = self.log_dir / f"{name}.log"
        try:
            done = subprocess.run(
                list(argv),
                capture_output=True,
                env=self._environment(),
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DemoError(f"{name} did not finish within {timeout:.0f} s") from exc
        output = (done.stdout + done.stderr).decode(errors="replace")
        with log_path.open("a") as out:
            out.write(f"$ {' '.join(argv)}\n{output}\n")
        if done.returncode != 0:
            raise DemoError(f"{name} failed (exit {done.returncode}): {output.strip()[-800:]}")
        return done.stdout.decode(errors="replace")

    def check_alive(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                tail = child.log_path.read_text(errors="replace")[-1500:]
                raise DemoError(f"{child.name} exited with {code}; see {child.log_path}:\n{tail}")

    def stop_all(self) -> None:
        for child in reversed(self.children):
            _signal_group(child.process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in reversed(self.children):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                log.warning("demo.killing name=%s reason=%r", child.name, "did not stop in time")
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait(timeout=5)
        self.children.clear()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int, taken: set[int], host: str = "127.0.0.1") -> int:
    """The preferred port when free, else the next free one above it."""
    for candidate in range(preferred, preferred + 200):
        if candidate not in taken and port_free(candidate, host):
            return candidate
    raise DemoError(
        f"no free port near {preferred}; free one or choose the ports with --api-port,"
        " --device-port, --mqtt-port, --core-port or --port-base"
    )


def wait_for_port(
    port: int, *, timeout: float, group: ProcessGroup, host: str = "127.0.0.1"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        group.check_alive()
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise DemoError(f"nothing listens on {host}:{port} after {timeout:.0f} s")
