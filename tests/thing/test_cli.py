"""``hedgerow thing run`` / ``simulate``: a real subprocess once, user errors in-process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from hedgerow import pki
from hedgerow.cli import main
from tests.conftest import free_port

from .conftest import DiscoveryStandIn, Env, Recorder, core_broker, discovery_body
from .test_core_link import collect, observer

TIMEOUT = 30


def run_args(env: Env, endpoint: str, *extra: str) -> list[str]:
    return [
        "thing", "run",
        "-e", endpoint,
        "-r", str(env.pki.ca_file),
        "-c", str(env.thing.cert),
        "-k", str(env.thing.key),
        "-id", env.thing_name,
        "-t", "sensors/bme680-1",
        "--state-dir", str(env.directory / "state"),
        "--backoff-base", "0.05",
        "--backoff-cap", "0.2",
        *extra,
    ]  # fmt: skip


async def test_thing_run_subprocess_publishes_readings(
    env: Env, discovery: DiscoveryStandIn
) -> None:
    port = free_port()
    discovery.response = (200, discovery_body([env.groups[0].pem], port))
    async with core_broker(env, env.groups[0], port), observer(env, port) as obs:
        await obs.subscribe("sensors/#", qos=1)
        args = run_args(
            env,
            discovery.endpoint,
            "--sensor",
            "sim",
            "--interval",
            "0.05",
            "--count",
            "3",
            "--give-up",
            "20",
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hedgerow", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            received = await collect(obs, 3)
            async with asyncio.timeout(TIMEOUT):
                out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, err.decode()
    docs = [json.loads(m.payload) for m in received]
    assert [d["sequence"] for d in docs] == [0, 1, 2]
    for doc in docs:
        assert {
            "thing",
            "timestamp",
            "temperature",
            "humidity",
            "pressure",
            "gas_resistance",
            "cpu_temperature",
        } <= set(doc)
        assert doc["thing"] == "bme680-1"
        assert doc["temperature"] > 15
    # a reading is "queued" when taken; delivery is what the core acknowledged
    assert (
        out.decode().count("queued sensors/bme680-1 ")
        + out.decode().count("queued (not connected) sensors/bme680-1 ")
        == 3
    )
    assert "connected to the core at " in err.decode()
    assert "3 delivered, 0 still queued" in err.decode()


async def cli(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if line.startswith("hedgerow: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in "\n".join(err)
    return lines[0]


async def test_missing_certificate(
    env: Env, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = run_args(env, "127.0.0.1:1")
    argv[argv.index("-c") + 1] = str(tmp_path / "missing.pem")
    assert await cli(argv) == 2
    line = one_line(capsys)
    assert "missing.pem does not exist" in line and "check the -c path" in line


async def test_wrong_root_ca(
    env: Env, discovery: DiscoveryStandIn, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong-ca.pem"
    wrong.write_bytes(pki.make_ca("not the cloud").cert_pem)
    argv = run_args(env, discovery.endpoint, "--sensor", "sim")
    argv[argv.index("-r") + 1] = str(wrong)
    assert await cli(argv) == 2
    line = one_line(capsys)
    assert "not trusted" in line and "check -r" in line


async def test_thing_in_no_group(
    env: Env, discovery: DiscoveryStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    discovery.response = (404, {"errorMessage": "no group"})
    assert await cli(run_args(env, discovery.endpoint, "--sensor", "sim")) == 2
    assert "knows no group for thing 'bme680-1'" in one_line(capsys)


async def test_unreachable_discovery_gives_up_when_told(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = run_args(
        env, f"127.0.0.1:{free_port()}", "--sensor", "sim", "--give-up", "0.5", "--count", "1"
    )
    assert await cli(argv) == 2
    line = one_line(capsys)
    assert "not connected after 0.5 s" in line and "cannot reach discovery" in line


async def test_discovery_server_errors_are_retried(
    env: Env, discovery: DiscoveryStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    discovery.response = (503, {"errorMessage": "busy"})
    argv = run_args(env, discovery.endpoint, "--sensor", "sim", "--give-up", "0.6", "--count", "1")
    assert await cli(argv) == 2
    assert "HTTP 503" in one_line(capsys)
    assert len(discovery.requests) >= 2  # retried, with backoff


async def test_unreachable_core(
    env: Env, discovery: DiscoveryStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    discovery.response = (200, discovery_body([env.groups[0].pem], free_port()))
    argv = run_args(env, discovery.endpoint, "--sensor", "sim", "--give-up", "0.5", "--count", "1")
    assert await cli(argv) == 2
    line = one_line(capsys)
    assert "cannot connect to the core" in line and "is the core running" in line


@pytest.mark.parametrize(
    "extra, text",
    [
        (["--sensor", "bme680"], "BME680 driver is not installed"),
        (["--interval", "0"], "--interval must be positive"),
        (["--backoff-base", "5", "--backoff-cap", "1"], "bad backoff settings"),
    ],
)
async def test_bad_options(
    env: Env, capsys: pytest.CaptureFixture[str], extra: list[str], text: str
) -> None:
    assert await cli(run_args(env, "127.0.0.1:1", *extra)) == 2
    assert text in one_line(capsys)


async def test_bad_endpoint(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli(run_args(env, "http://cloud")) == 2
    assert "must use https" in one_line(capsys)


async def test_simulate_a_small_fleet(
    env: Env, discovery: DiscoveryStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    certs = env.directory / "fleet"
    certs.mkdir()
    for i in range(1, 6):
        issued = pki.issue(env.pki.root, f"sim-{i}")
        (certs / f"sim-{i}.cert.pem").write_bytes(issued.cert_pem)
        (certs / f"sim-{i}.key").write_bytes(issued.key_pem)
    discovery.response = (
        200,
        discovery_body([env.groups[0].pem], port),
    )  # the stand-in checks the name
    async with core_broker(env, env.groups[0], port), observer(env, port) as obs:
        await obs.subscribe("vib/#", qos=1)
        argv = [
            "thing", "simulate", "--count", "5", "--certs", str(certs),
            "-e", discovery.endpoint, "-r", str(env.pki.ca_file),
            "--state-dir", str(env.directory / "state"), "--kind", "vibration", "--sample-rate", "2000",
            "--batch", "200", "--messages", "4", "--interval", "0.3", "-t", "vib/{thing}", "--give-up", "20",
        ]  # fmt: skip
        code = await cli(argv)
        received = await collect(obs, 20)
    assert code == 0
    out = capsys.readouterr().out
    # every thing sends all its messages: all five connecting does not end the run early
    assert "things: 5  connected: 5" in out and "delivered: 20" in out
    topics = sorted({m.topic for m in received})
    assert topics == [f"vib/sim-{i}" for i in range(1, 6)]
    assert len(json.loads(received[0].payload)["axes"]["x"]) == 200


async def test_simulate_needs_certificates(
    env: Env, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = [
        "thing",
        "simulate",
        "--count",
        "2",
        "--certs",
        str(tmp_path),
        "-e",
        "127.0.0.1:1",
        "-r",
        str(env.pki.ca_file),
    ]
    assert await cli(argv) == 2
    assert "sim-1.cert.pem does not exist" in one_line(capsys)


async def test_disk_queue_survives_a_restart_of_the_thing(
    env: Env, discovery: DiscoveryStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    discovery.response = (200, discovery_body([env.groups[0].pem], port))
    base = run_args(
        env,
        discovery.endpoint,
        "--sensor",
        "sim",
        "--queue",
        "disk",
        "--interval",
        "0.05",
        "--quiet",
    )
    # the core is down: two readings wait in the disk queue when the thing gives up
    assert await cli([*base, "--count", "2", "--give-up", "0.5"]) == 2
    assert "not connected after 0.5 s" in one_line(capsys)
    assert (env.directory / "state" / "bme680-1.queue.db").exists()
    recorder = Recorder()
    async with core_broker(env, env.groups[0], port, recorder):
        assert await cli([*base, "--count", "1", "--give-up", "20"]) == 0
    sequences = [json.loads(p)["sequence"] for p in recorder.payloads()]
    assert sequences == [0, 1, 0]  # the two from before the restart first, then the new one


async def test_unusable_state_dir(
    env: Env, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    argv = run_args(env, "127.0.0.1:1", "--sensor", "sim", "--queue", "disk")
    argv[argv.index("--state-dir") + 1] = str(blocker)
    assert await cli(argv) == 2
    assert "cannot open the disk queue" in one_line(capsys)


async def test_json_output_of_run_discover_and_simulate(
    env: Env, discovery: DiscoveryStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--json``: ``run`` reports JSON Lines on stdout, ``discover`` prints the discovery
    answer, ``simulate`` its summary; each parses, and nothing else is on stdout."""
    port = free_port()
    discovery.response = (200, discovery_body([env.groups[0].pem], port))
    discover_argv = [
        "thing", "discover", "-e", discovery.endpoint, "-r", str(env.pki.ca_file),
        "-c", str(env.thing.cert), "-k", str(env.thing.key), "-id", env.thing_name,
    ]  # fmt: skip
    assert await cli([*discover_argv, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    [group] = answer["GGGroups"]
    assert group["GGGroupId"] == "grp-1" and group["CAs"] == [env.groups[0].pem]
    assert group["Cores"][0]["Connectivity"][0]["PortNumber"] == port
    assert await cli(discover_argv) == 0
    human = capsys.readouterr().out
    assert "group grp-1: 1 CA certificate(s)" in human and f"127.0.0.1:{port}" in human

    async with core_broker(env, env.groups[0], port):
        argv = run_args(env, discovery.endpoint, "--sensor", "sim", "--interval", "0.05",
                        "--count", "2", "--give-up", "20", "--json")  # fmt: skip
        assert await cli(argv) == 0
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        kinds = [e["event"] for e in events]
        assert kinds.count("queued") == 2 and kinds[-1] == "stopped", kinds
        assert "connected" in kinds
        queued = [e for e in events if e["event"] == "queued"]
        assert [e["reading"]["sequence"] for e in queued] == [0, 1]
        assert queued[0]["topic"] == "sensors/bme680-1"
        assert events[-1] == {"event": "stopped", "delivered": 2, "queued": 0, "dropped": 0}

        certs = env.directory / "fleet"
        certs.mkdir()
        for i in (1, 2):
            issued = pki.issue(env.pki.root, f"sim-{i}")
            (certs / f"sim-{i}.cert.pem").write_bytes(issued.cert_pem)
            (certs / f"sim-{i}.key").write_bytes(issued.key_pem)
        argv = [
            "thing", "simulate", "--count", "2", "--certs", str(certs), "-e", discovery.endpoint,
            "-r", str(env.pki.ca_file), "--state-dir", str(env.directory / "state"),
            "--messages", "1", "--interval", "0.05", "--give-up", "20", "--json",
        ]  # fmt: skip
        assert await cli(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["things"] == 2 and summary["connected"] == 2
    assert summary["delivered"] == 2 and summary["fatal"] == {}
