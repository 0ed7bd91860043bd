"""A whole Hedgerow system on loopback: a cloud, a core and things as real processes.

Everything is driven through the ``hedgerow`` CLI as a user would, on free ports, with
logs in the test's temporary directory. ``System.close()`` ends every process it started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "functions"
GROUP = "factory-1"
CORE = "pi-1"


def hedgerow(*args: str) -> list[str]:
    return [sys.executable, "-m", "hedgerow", *args]


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill9(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill9()


@dataclass
class System:
    root: Path
    api_port: int = field(default_factory=free_port)
    device_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    core_port: int = field(default_factory=free_port)
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def cloud_dir(self) -> Path:
        return self.root / "cloud"

    @property
    def certs(self) -> Path:
        return self.root / "things"

    @property
    def token(self) -> str:
        return (self.cloud_dir / "admin-token").read_text().strip()

    # ---- processes ------------------------------------------------------------------------

    def start(self, name: str, argv: Sequence[str], *, cwd: Path | None = None) -> Proc:
        log = self.root / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=cwd,
            )
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        return proc

    def run(self, *args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(hedgerow(*args), capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"hedgerow {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def cloud(self, *args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return self.run("cloud", *args, "--data", str(self.cloud_dir), check=check, timeout=timeout)

    def close(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"===== {p.name}\n{p.output()[-3000:]}" for p in self.procs.values())

    # ---- the pieces -----------------------------------------------------------------------

    def start_cloud(self) -> None:
        if not self.cloud_dir.exists():
            self.run(
                "cloud", "init", "--data", str(self.cloud_dir), "--host", "localhost", "--host", "127.0.0.1",
                "--api-port", str(self.api_port), "--device-port", str(self.device_port),
                "--mqtt-port", str(self.mqtt_port), "--device-host", "127.0.0.1", "--mqtt-host", "127.0.0.1",
            )
        self.start("cloud", hedgerow("cloud", "serve", "--data", str(self.cloud_dir)))
        for port in (self.api_port, self.device_port, self.mqtt_port):
            wait_until(lambda p=port: port_open(p), timeout=60, what=f"cloud port {port}")

    def create_group_and_core(self) -> Path:
        self.cloud("group", "create", GROUP)
        self.cloud("core", "create", "--group", GROUP, "--out", str(self.root), CORE)
        return self.root / f"{CORE}.tar.gz"

    def start_core(self, *, first: bool = True) -> Proc:
        source = ["--bundle", str(self.root / f"{CORE}.tar.gz")] if first else []
        proc = self.start(
            "core",
            hedgerow(
                "core", "run", *source, "--data-dir", str(self.root / "core"),
                "--host", "127.0.0.1", "--port", str(self.core_port),
            ),
        )
        wait_until(lambda: port_open(self.core_port) or proc.popen.poll() is not None, timeout=60, what="core port")
        assert proc.popen.poll() is None, proc.output()
        return proc

    def create_thing(self, name: str) -> None:
        self.cloud("thing", "create", "--group", GROUP, "--out", str(self.certs), name)

    def thing_args(self, name: str) -> list[str]:
        return [
            "-e", f"127.0.0.1:{self.device_port}", "-r", str(self.certs / "root-ca.pem"),
            "-c", str(self.certs / f"{name}.cert.pem"), "-k", str(self.certs / f"{name}.key"),
        ]

    def function(self, name: str, code: Path, handler: str, *extra: str) -> None:
        self.cloud("function", "create", "--group", GROUP, name, "--code", str(code), "--handler", handler, *extra)

    def route(self, source: str, topic: str, target: str) -> None:
        self.cloud("subscription", "add", "--group", GROUP, "--source", source, "--topic", topic, "--target", target)

    def deploy(self, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cloud("deploy", "--group", GROUP, "--wait", "--timeout", "60", check=check)

    # ---- the API ----------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(
            f"http://127.0.0.1:{self.api_port}{path}",
            params=params,
            headers={"authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def messages(self, topic_filter: str, limit: int = 10000) -> list[dict[str, Any]]:
        result = self.api("/api/v1/messages", filter=topic_filter, limit=str(limit), order="asc")
        return list(result["items"])

    def payloads(self, topic_filter: str) -> list[dict[str, Any]]:
        return [json.loads(m["payload"]) for m in self.messages(topic_filter) if "payload" in m]
