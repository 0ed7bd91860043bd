"""``hedgerow broker`` as a real process: mutual TLS with mosquitto clients, clean SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from ..conftest import free_port

if TYPE_CHECKING:
    from ..conftest import TestPKI

WAIT = 10.0


async def mosquitto(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), WAIT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode()


@pytest.mark.mosquitto
async def test_cli_broker_with_mutual_tls(test_pki: TestPKI) -> None:
    server = test_pki.server()
    client = test_pki.client("cli-thing")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hedgerow", "-v", "broker", "--host", "127.0.0.1", "--port", str(port),
        "--tls-cert", str(server.cert), "--tls-key", str(server.key), "--tls-ca", str(test_pki.ca_file),
        "--require-client-cert",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
        assert f"mqtts://127.0.0.1:{port}" in line.decode()
        tls = [
            "--cafile",
            str(test_pki.ca_file),
            "--cert",
            str(client.cert),
            "--key",
            str(client.key),
        ]
        common = ["-h", "127.0.0.1", "-p", str(port)]
        # retained, so the subscriber that comes next gets it whenever its SUBACK lands
        code, out = await mosquitto(
            "mosquitto_pub", *common, *tls, "-t", "cli/t", "-m", "over tls", "-q", "1", "-r"
        )
        assert code == 0, out
        code, out = await mosquitto(
            "mosquitto_sub", *common, *tls, "-t", "cli/t", "-C", "1", "-W", "8"
        )
        assert (code, out.strip()) == (0, "over tls")
        code, out = await mosquitto(
            "mosquitto_pub", *common, "--cafile", str(test_pki.ca_file), "-t", "cli/t", "-m", "x"
        )
        assert code != 0  # no client certificate: refused
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
        err = (await proc.stderr.read()).decode()
        assert "broker.closed" in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_cli_rejects_half_tls_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    from hedgerow.cli import main

    assert main(["broker", "--tls-cert", "x.pem"]) == 2
    assert "--tls-key" in capsys.readouterr().err


def test_cli_port_in_use_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from hedgerow.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["broker", "--port", str(port)]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_the_broker_does_not_load_cryptography() -> None:
    """The broker is the edge daemon's local endpoint: it reads client certificates with
    ``hedgerow.certinfo`` and never loads ``cryptography`` (about 12 MB resident)."""
    code = (
        "import sys, hedgerow.broker, hedgerow.cli.broker\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'"
        " or m == 'hedgerow.pki')\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_cli_broker_json_lines_name_the_bound_port() -> None:
    """``--json``: the listeners (port 0 resolved) and the shutdown as JSON Lines."""
    import json

    from hedgerow.client import Client

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hedgerow", "broker", "--host", "127.0.0.1", "--port", "0",
        "--ws-port", "0", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        mqtt = json.loads(await asyncio.wait_for(proc.stdout.readline(), WAIT))
        ws = json.loads(await asyncio.wait_for(proc.stdout.readline(), WAIT))
        assert mqtt["event"] == ws["event"] == "listening"
        assert (mqtt["scheme"], mqtt["host"]) == ("mqtt", "127.0.0.1") and mqtt["port"] > 0
        assert ws["url"] == f"ws://127.0.0.1:{ws['port']}/mqtt"
        async with Client("127.0.0.1", mqtt["port"], client_id="json-cli") as client:
            await client.publish("cli/json", b"ok", qos=1)  # the port it named is the broker
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
        rest = (await proc.stdout.read()).decode().splitlines()
        assert [json.loads(line) for line in rest] == [{"event": "stopping"}]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
