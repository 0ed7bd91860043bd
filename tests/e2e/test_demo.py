"""`hedgerow demo`, as `make demo` runs it: the seed's scenario end to end, bounded, leaving nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, free_port_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # above the demo's own 240 s


def run_demo(data: Path, *args: str) -> str:
    # ports of its own: demos of other test runs on this machine take the defaults
    ports = [str(free_port()) for _ in range(4)]
    command = [
        sys.executable, "-m", "hedgerow", "demo", "--data", str(data), *args,
        "--api-port", ports[0], "--device-port", ports[1], "--mqtt-port", ports[2],
        "--core-port", ports[3],
    ]  # fmt: skip
    # its own process group: a demo that overruns is killed with its cloud and core
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as demo:
        try:
            stdout, stderr = demo.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            stdout, stderr = demo.communicate()
            pytest.fail(f"the demo ran over 240 s:\n{stdout}{stderr}")
        except BaseException:  # pytest's own timeout, Ctrl-C: nothing may outlive the test
            os.killpg(demo.pid, signal.SIGKILL)
            raise
    done = subprocess.CompletedProcess(command, demo.returncode, stdout, stderr)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert not stray_processes(data), output
    return output


def stray_processes(data: Path) -> list[str]:
    """Processes whose command line names the demo's directory (none may outlive it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(data) in cmdline:
            found.append(cmdline)
    return found


def test_demo_corrects_temperature_at_the_edge(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    output = run_demo(data, "--duration", "12", "--interval", "0.5", "--factor", "5")
    assert "console http://127.0.0.1:" in output
    lines = re.findall(r"sensor +([\d.]+) °C +cpu +([\d.]+) °C +-> corrected +([\d.]+) °C", output)
    assert len(lines) >= 3, output
    for raw, cpu, corrected in map(lambda t: tuple(map(float, t)), lines):
        assert corrected == pytest.approx(raw - (cpu - raw) / 5, abs=0.02)
    assert re.search(r"(\d+) corrected readings reached the cloud", output)
    # a second run cleanly recreates its directory
    again = run_demo(data, "--duration", "6", "--interval", "0.5")
    assert "recreating" in again


def test_demo_vibration_sends_a_thousandth_of_what_it_samples(tmp_path: Path) -> None:
    output = run_demo(tmp_path / "vib", "--scenario", "vibration", "--duration", "22")
    match = re.search(
        r"bytes sampled at the edge: ([\d,]+).*bytes sent to the cloud: ([\d,]+); ([\d,]+)x less",
        output,
    )
    assert match, output
    sampled, sent = (int(match.group(i).replace(",", "")) for i in (1, 2))
    assert sampled >= 1000 * sent
    assert re.search(r"window 1: x rms [\d.]+ g", output)


def test_ctrl_c_stops_every_process_the_demo_started(tmp_path: Path) -> None:
    import signal
    import time

    data = tmp_path / "interrupted"
    log = tmp_path / "demo.out"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "hedgerow", "demo", "--data", str(data), "--interval", "0.5"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while "readings arriving" not in log.read_text() and time.monotonic() < deadline:
                assert demo.poll() is None, log.read_text()
                time.sleep(0.2)
            assert stray_processes(data), "the demo's cloud, core and thing should be running"
            demo.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the foreground process
            assert demo.wait(timeout=60) == 0, log.read_text()
        finally:
            if demo.poll() is None:
                demo.kill()
    assert "stopped" in log.read_text()
    assert not stray_processes(data)


def test_demo_ports_are_chosen_by_flags(tmp_path: Path) -> None:
    import socket

    from hedgerow.demo import DemoError
    from hedgerow.demo.scenario import Ports

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(DemoError, match=rf"port {taken} \(core MQTT\) is in use.*--core-port"):
            Ports.choose(lambda _: None, {"core": taken})
    said: list[str] = []
    base = free_port_run(11)
    ports = Ports.choose(said.append, {"mqtt": base + 10}, base)
    assert ports == Ports(api=base, device=base + 1, mqtt=base + 10, core=base + 3)
    with pytest.raises(DemoError, match="four different ports"):
        Ports.choose(said.append, {"api": base, "device": base})
    assert said == []  # nothing given was moved silently
