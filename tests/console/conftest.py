"""A real cloud (``hedgerow cloud serve`` in a subprocess), a real core and thing, and chromium.

One cloud per test session (per xdist worker; each test uses its own group, thing and
core names) and one browser per module (Playwright's sync API holds the thread's event
loop while it runs, so it must end before async tests elsewhere run); each test gets a
fresh browser context.

The browser is Debian's ``/usr/bin/chromium`` driven by Playwright (never a downloaded
browser). Screenshots go to ``build/screenshots/``.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import tomli_w

from hedgerow.cli.cloud import SERVE_STATE
from tests.conftest import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
#: Seconds a page condition may take (deployments and discovery included).
WAIT_S = 20.0


def wait_until(check: Callable[[], Any], timeout: float = WAIT_S, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@dataclass
class Processes:
    """Subprocesses of the test session, stopped with SIGTERM, then SIGKILL."""

    logs: Path
    running: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "hedgerow", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.logs,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        self.running.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop(self, name: str) -> None:
        for entry in [e for e in self.running if e[0] == name]:
            self._stop(entry[1])
            self.running.remove(entry)

    def kill(self, name: str) -> None:
        """SIGKILL: the process gets no chance to say goodbye (its sockets just close)."""
        for entry in [e for e in self.running if e[0] == name]:
            entry[1].kill()
            entry[1].wait(timeout=5)
            self.running.remove(entry)

    def stop_all(self) -> None:
        for _, proc in reversed(self.running):
            self._stop(proc)
        self.running.clear()

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@dataclass
class RunningCloud:
    url: str
    data: Path
    device_port: int
    mqtt_port: int
    processes: Processes

    @property
    def token(self) -> str:
        return (self.data / "admin-token").read_text().strip()

    @property
    def root_ca(self) -> Path:
        return self.data / "pki" / "root-ca.pem"

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {self.token}"}, timeout=10
        )

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        with self.api() as client:
            response = client.request(method, path, **kwargs)
        assert response.status_code < 300, response.text
        return response.json()

    def core_identity(self, name: str, group: str, directory: Path) -> tuple[Path, Path]:
        """Create a core through the API; its identity certificate and key as files."""
        from hedgerow.cloud import core_bundle as bundle

        made = self.ok("POST", "/api/v1/cores", json={"name": name, "group": group})
        files = bundle.read_bundle(base64.b64decode(made["bundle"]))
        cert, key = directory / f"{name}.cert.pem", directory / f"{name}.key"
        cert.write_bytes(files[bundle.CORE_CERT])
        key.write_bytes(files[bundle.CORE_KEY])
        return cert, key

    def publish_as_core(
        self, cert: Path, key: Path, client_id: str, messages: list[tuple[str, bytes]]
    ) -> None:
        """Publish at the cloud's MQTT endpoint with a core's identity, QoS 1, in order
        (from a thread: Playwright's sync API holds this thread's event loop)."""
        import asyncio
        import threading

        from hedgerow import pki
        from hedgerow.client import Client

        failed: list[BaseException] = []

        async def publish() -> None:
            ctx = pki.client_context(str(self.root_ca), str(cert), str(key))
            async with Client("127.0.0.1", self.mqtt_port, ssl=ctx, client_id=client_id) as c:
                for topic, payload in messages:
                    await c.publish(topic, payload, qos=1)

        def run() -> None:
            try:
                asyncio.run(publish())
            except BaseException as exc:  # reported to the test
                failed.append(exc)

        thread = threading.Thread(target=run, name=f"publish-as-{client_id}")
        thread.start()
        thread.join(timeout=WAIT_S)
        assert not thread.is_alive(), "publishing at the cloud did not finish"
        assert not failed, failed

    def thing_files(self, name: str, group: str, directory: Path) -> tuple[Path, Path]:
        """Create a thing in ``group``; its certificate and key as ``<name>.cert.pem``/``.key``."""
        created = self.ok("POST", "/api/v1/things", json={"name": name, "groups": [group]})
        cert, key = directory / f"{name}.cert.pem", directory / f"{name}.key"
        cert.write_text(created["certificate"])
        key.write_text(created["private_key"])
        return cert, key

    def core_bundle(self, name: str, group: str, directory: Path) -> Path:
        """Create a core in ``group``; its provisioning bundle as a file."""
        made = self.ok("POST", "/api/v1/cores", json={"name": name, "group": group})
        bundle = directory / made["bundle_name"]
        bundle.write_bytes(base64.b64decode(made["bundle"]))
        return bundle

    def start_core(
        self, bundle_path: Path, directory: Path, heartbeat_interval: float = 1.0
    ) -> int:
        """Run ``hedgerow core run`` from a bundle on a free local port; returns the port."""
        from hedgerow.core.bundle_unpack import unpack_bundle

        config_path = unpack_bundle(bundle_path, directory)
        config = tomllib.loads(config_path.read_text())
        config["status"] = {"heartbeat_interval": heartbeat_interval, "metrics_port": 0}
        config["spool"] = {"fsync": "off"}
        for _ in range(3):
            # the core reports its port before it listens, so it needs a fixed one
            port = free_port()
            config["local"] = {"host": "127.0.0.1", "port": port, "hosts": ["127.0.0.1"]}
            config_path.write_text(tomli_w.dumps(config))
            proc = self.processes.start("core", "core", "run", "--config", str(config_path))

            def started(proc: subprocess.Popen[bytes] = proc) -> bool | None:
                if proc.poll() is not None:
                    return True
                return "serving on" in self.processes.log("core") or None

            wait_until(started, what="the core to start")
            if proc.poll() is None:
                return port
            if "in use" not in self.processes.log("core"):
                raise AssertionError(self.processes.log("core"))
            self.processes.stop("core")
        raise AssertionError("no free port for the core")

    def start_thing(
        self, name: str, cert: Path, key: Path, state: Path, topic: str, process: str = "thing"
    ) -> None:
        """``hedgerow thing run`` as process ``process`` (its log is ``<process>.log``)."""
        self.processes.start(
            process,
            "thing",
            "run",
            "-e",
            f"127.0.0.1:{self.device_port}",
            "-r",
            str(self.root_ca),
            "-c",
            str(cert),
            "-k",
            str(key),
            "-id",
            name,
            "-t",
            topic,
            "--sensor",
            "sim",
            "--interval",
            "0.25",
            "--backoff-base",
            "0.2",
            "--backoff-cap",
            "1",
            "--state-dir",
            str(state),
            "--quiet",
        )


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    """``hedgerow cloud init`` and ``hedgerow cloud serve`` on free loopback ports."""
    base = tmp_path_factory.mktemp("console")
    processes = Processes(base)
    data = base / "cloud"
    ports = [
        "--api-host", "127.0.0.1", "--api-port", "0",
        "--device-host", "127.0.0.1", "--device-port", "0",
        "--mqtt-host", "127.0.0.1", "--mqtt-port", "0",
    ]  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "hedgerow", "cloud", "init", "--data", str(data), *ports],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = processes.start("cloud", "cloud", "serve", "--data", str(data))
    state_file = data / SERVE_STATE

    def serving() -> dict[str, Any] | None:
        assert server.poll() is None, processes.log("cloud")
        if not state_file.exists():
            return None
        try:
            state: dict[str, Any] = json.loads(state_file.read_text())
        except ValueError:
            return None
        return state

    try:
        state = wait_until(serving, 30, "the cloud to serve")
        running = RunningCloud(
            state["api"],
            data,
            urlsplit(state["device"]).port or 0,
            urlsplit(state["mqtt"]).port or 0,
            processes,
        )
        assert httpx.get(running.url + "/api/v1/health", timeout=5).status_code == 200
        yield running
    finally:
        processes.stop_all()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, cloud: RunningCloud) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(WAIT_S * 1000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def shot(page: Any, name: str, *, full: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    return path


def screenshots(page: Any, name: str) -> None:
    """The page as it is now, desktop and phone sized (the phone one must not overflow)."""
    shot(page, f"{name}-desktop")
    desktop = page.viewport_size
    page.set_viewport_size(PHONE)
    page.evaluate(
        "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"
    )
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    shot(page, f"{name}-phone")
    page.set_viewport_size(desktop)
    assert overflow <= 0, f"{name}: the page is {overflow}px wider than a phone screen"


def login(page: Any, cloud: RunningCloud, where: str = "#/overview") -> None:
    page.goto(f"{cloud.url}/console/{where}")
    page.get_by_label("API token").fill(cloud.token)
    page.get_by_role("button", name="Log in").click()
    page.locator("#nav").wait_for(state="visible")
