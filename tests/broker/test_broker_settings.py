"""``hedgerow broker`` settings: flags and a TOML file derived from BrokerConfig, and the
ACL/password files on a real broker process (mosquitto clients, SIGHUP reload)."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hedgerow.broker import BrokerConfig
from hedgerow.broker.configfile import build, load_config_file, parse_settings, settings
from hedgerow.broker.errors import BrokerFileError

from ..conftest import free_port

WAIT = 10.0


def test_every_brokerconfig_field_is_a_flag_with_help() -> None:
    from hedgerow.cli import build_parser

    parser = build_parser(["broker"])
    broker = parser._subparsers._group_actions[0].choices["broker"]  # type: ignore[union-attr]
    text = broker.format_help()
    for f in dataclasses.fields(BrokerConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
    assert {s.name for s in settings()} >= {f.name for f in dataclasses.fields(BrokerConfig)}
    assert "Server Keep Alive" in text and "--ws-port" in text and "--persist" in text


def test_config_file_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "broker.toml"
    path.write_text(
        "max_keepalive = 30\nreceive_maximum = 10\nmax_inflight = 5\nport = 1999\n"
        'deny_policy = "disconnect"\nws_port = 9001\nallow_empty_client_id = false\n'
    )
    values = load_config_file(path)
    values.update(parse_settings({"max_inflight": "7", "max_session_expiry": "none"}, "flags"))
    config, options = build(values, "test")
    assert (config.max_keepalive, config.receive_maximum, config.max_inflight) == (30, 10, 7)
    assert config.deny_policy == "disconnect" and config.allow_empty_client_id is False
    assert config.max_session_expiry is None
    assert (options.port, options.ws_port) == (1999, 9001)


def test_broker_table_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "broker.toml"
    path.write_text("[broker]\nmax_packet_size = 4096\n")
    config, _ = build(load_config_file(path), str(path))
    assert config.max_packet_size == 4096


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("max_keepalve = 3\n", "unknown key 'max_keepalve' (did you mean 'max_keepalive'?)"),
        ('max_inflight = "many"\n', "max_inflight: must be an integer"),
        ("max_inflight = true\n", "max_inflight: must be an integer"),
        ('deny_policy = "kick"\n', "must be one of drop, disconnect"),
        ("receive_maximum = 0\n", "receive_maximum must be within 1..65535"),
        ("max_inflight = \n", "not valid TOML"),
    ],
)
def test_bad_config_file_names_file_and_key(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "broker.toml"
    path.write_text(text)
    with pytest.raises(BrokerFileError) as caught:
        build(load_config_file(path), str(path))
    assert str(path) in str(caught.value) and words in str(caught.value)


def test_cli_reports_unknown_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hedgerow.cli import main

    path = tmp_path / "broker.toml"
    path.write_text("listener = 1883\n")
    assert main(["broker", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'listener'" in err and "known keys:" in err


def test_cli_reports_bad_acl_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hedgerow.cli import main

    acl = tmp_path / "acl"
    acl.write_text("user a\ntopic read ok\ntopic bad/#/x\n")
    assert main(["broker", "--acl-file", str(acl), "--port", str(free_port())]) == 2
    assert f"{acl}:3: bad topic" in capsys.readouterr().err


async def run(*args: str) -> tuple[int, str]:
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
async def test_cli_broker_with_acl_password_config_and_sighup(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    binary = shutil.which("mosquitto_passwd")
    assert binary
    subprocess.run([binary, "-c", "-b", str(passwd), "sensor", "s3cret"], check=True, timeout=30)
    acl = tmp_path / "acl"
    acl.write_text("user sensor\ntopic write data/#\ntopic read data/#\n")
    port = free_port()
    config = tmp_path / "broker.toml"
    config.write_text(
        f'port = {port}\npassword_file = "{passwd}"\nacl_file = "{acl}"\nmax_keepalive = 20\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hedgerow", "-v", "broker", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    common = ["-h", "127.0.0.1", "-p", str(port), "-u", "sensor", "-P", "s3cret"]
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
        assert f"mqtt://127.0.0.1:{port}" in line.decode()
        code, out = await run("mosquitto_pub", *common, "-t", "data/a", "-m", "v", "-q", "1", "-r")
        assert code == 0, out
        code, out = await run("mosquitto_sub", *common, "-t", "data/#", "-C", "1", "-W", "5")
        assert (code, out.strip()) == (0, "v")
        # wrong password: refused
        code, out = await run(
            "mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-u", "sensor", "-P", "x",
            "-t", "data/a", "-m", "v",
        )  # fmt: skip
        assert code != 0 and "bad user name or password" in out.lower(), out
        # the ACL takes read away; SIGHUP reloads it: the subscription is now refused
        acl.write_text("user sensor\ntopic write data/#\n")
        proc.send_signal(signal.SIGHUP)
        async with asyncio.timeout(WAIT):
            while b"acl_file_reloaded" not in await proc.stderr.readline():
                pass
        code, out = await run(
            "mosquitto_sub", *common, "-V", "mqttv5", "-t", "data/#", "-C", "1", "-W", "3"
        )
        assert "all subscription requests were denied" in out.lower(), out
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_limits_reach_a_v5_client_in_connack() -> None:
    """--max-keepalive is sent as Server Keep Alive; receive maximum and maximum packet
    size from the command line are what a real v5 client (paho) is told."""
    import threading

    import paho.mqtt.client as mqtt

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hedgerow", "broker", "--port", str(port),
        "--max-keepalive", "5", "--receive-maximum", "7", "--max-packet-size", "2048",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), WAIT)

        def connack() -> object:
            got: list[object] = []
            done = threading.Event()
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id="limits", protocol=mqtt.MQTTv5
            )

            def on_connect(c: object, u: object, f: object, rc: object, props: object) -> None:
                got.append(props)
                done.set()

            client.on_connect = on_connect
            client.connect("127.0.0.1", port, keepalive=60)
            client.loop_start()
            try:
                assert done.wait(WAIT)
            finally:
                client.disconnect()
                client.loop_stop()
            return got[0]

        props = await asyncio.to_thread(connack)
        assert props.ServerKeepAlive == 5  # type: ignore[attr-defined]
        assert props.ReceiveMaximum == 7  # type: ignore[attr-defined]
        assert props.MaximumPacketSize == 2048  # type: ignore[attr-defined]
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), WAIT)


def test_cli_refuses_password_file_with_mutual_tls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hedgerow.cli import main

    passwd = tmp_path / "passwd"
    passwd.write_text("")
    args = ["broker", "--password-file", str(passwd), "--require-client-cert"]
    args += ["--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"]
    assert main(args) == 2
    assert "exclude each other" in capsys.readouterr().err
