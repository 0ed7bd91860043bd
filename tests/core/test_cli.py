from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hedgerow import pki
from hedgerow.cli import main

CONFIG = """
[core]
name = "pi-1"
group = "factory-1"
[cloud]
https = "https://127.0.0.1:{port}"
mqtt = "mqtts://127.0.0.1:{port}"
[local]
host = "127.0.0.1"
port = {port}
"""


def provision(tmp_path: Path, port: int) -> Path:
    root = pki.make_ca("root")
    core = pki.issue(root, "pi-1", unit="core", days=5)
    (tmp_path / "config.toml").write_text(CONFIG.format(port=port))
    (tmp_path / "core.cert.pem").write_bytes(core.cert_pem)
    (tmp_path / "core.key").write_bytes(core.key_pem)
    (tmp_path / "root-ca.pem").write_bytes(root.cert_pem)
    (tmp_path / "deploy-verify.pem").write_bytes(
        pki.verify_key_to_pem(pki.new_signing_key().public_key())
    )
    return tmp_path / "config.toml"


def test_check_reports_each_item_with_advice(
    tmp_path: Path, port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    config = provision(tmp_path, port)
    status = main(["core", "check", "--config", str(config), "--timeout", "1"])
    out = capsys.readouterr().out
    assert status == 1  # the cloud is not there
    assert "ok    python" in out
    assert f"ok    port 127.0.0.1:{port}" in out
    # a fresh 5-day certificate is not "expiring soon": the threshold follows its lifetime
    assert "ok    certificate core" in out and "of 5 days" in out
    assert f"fail  cloud https 127.0.0.1:{port}" in out and "check the network" in out
    assert "checks:" in out


def test_check_and_status_as_json(
    tmp_path: Path, port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio
    import json

    from hedgerow.core.status import MetricsServer, Snapshot

    config = provision(tmp_path, port)
    assert main(["core", "check", "--config", str(config), "--timeout", "1", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    levels = {c["name"]: c["level"] for c in report["checks"]}
    assert levels["python"] == "ok" and levels[f"cloud https 127.0.0.1:{port}"] == "fail"
    assert report["failed"] == sum(c["level"] == "fail" for c in report["checks"]) >= 1
    assert all(set(c) == {"name", "level", "detail", "advice"} for c in report["checks"])

    # not running: an error that says how to start it
    assert main(["core", "status", "--config", str(config), "--timeout", "1"]) == 2
    assert "hedgerow core run --config" in capsys.readouterr().err

    # running: the heartbeat its metrics listener serves (a real HTTP listener)
    snapshot = Snapshot("pi-1", 12.0, 3, {"f": "RUNNING"}, {"depth": 4}, {"broker_refused": 1})

    async def status_of_running_core(*flags: str) -> int:
        server = MetricsServer(lambda: snapshot)
        host, bound = await server.start("127.0.0.1", 0)
        (tmp_path / "metrics.address").write_text(f"{host}:{bound}")
        try:
            argv = ["core", "status", "--config", str(config), *flags]
            return await asyncio.to_thread(main, argv)
        finally:
            await server.close()

    assert asyncio.run(status_of_running_core("--json")) == 0
    beat = json.loads(capsys.readouterr().out)
    assert beat["core"] == "pi-1" and beat["devices"] == 3 and beat["spool"] == 4
    assert beat["functions"] == {"f": "RUNNING"} and beat["counters"] == {"broker_refused": 1}
    assert asyncio.run(status_of_running_core()) == 0
    human = capsys.readouterr().out
    assert "devices: 3" in human and "  f: RUNNING" in human


def test_broken_config_names_the_field(
    tmp_path: Path, port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    config = provision(tmp_path, port)
    config.write_text(config.read_text().replace('group = "factory-1"', ""))
    assert main(["core", "run", "--config", str(config)]) == 2
    assert "core.group: missing" in capsys.readouterr().err
    assert main(["core", "run", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "no config file" in capsys.readouterr().err


def test_run_without_identity_files_says_which(
    tmp_path: Path, port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    config = provision(tmp_path, port)
    (tmp_path / "deploy-verify.pem").unlink()
    assert main(["core", "run", "--config", str(config)]) == 2
    assert "deploy-verify.pem" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        # an EC public key where the Ed25519 deployment key belongs
        ("deploy-verify.pem", "ec-public-key", "deploy-verify.pem: not an Ed25519 public key"),
        ("deploy-verify.pem", "garbage", "deploy-verify.pem: not an Ed25519 public key"),
        ("root-ca.pem", "garbage", "root-ca.pem: not a PEM certificate"),
    ],
)
def test_run_with_a_wrong_key_or_ca_file_says_which(
    tmp_path: Path,
    port: int,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str,
    message: str,
) -> None:
    from cryptography.hazmat.primitives import serialization

    config = provision(tmp_path, port)
    data = b"not a PEM file"
    if content == "ec-public-key":
        data = (
            pki.new_key()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    (tmp_path / name).write_bytes(data)
    assert main(["core", "run", "--config", str(config)]) == 2
    assert message in capsys.readouterr().err


def test_install_and_uninstall_service(
    tmp_path: Path, port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    config = provision(tmp_path, port)
    unit = tmp_path / "units" / "hedgerow-core.service"
    args = [
        "core",
        "install-service",
        "--config",
        str(config),
        "--unit-path",
        str(unit),
        "--no-systemctl",
    ]
    assert main(args) == 0
    text = unit.read_text()
    assert f"core run --config {config.resolve()}" in text and "Restart=always" in text
    # started through the launcher's copy in the data directory (it follows `current` and
    # rolls back an update of the core that does not commit); it relays the core's notifications
    launcher = config.parent / "runtime" / "launcher.py"
    assert f"ExecStart={sys.executable} {launcher} {config.parent}" in text
    assert (
        launcher.read_text().startswith('"""The core\'s launcher') and "NotifyAccess=main" in text
    )
    printed = capsys.readouterr().out
    assert f"listens on 127.0.0.1:{port}" in printed
    assert "systemctl start hedgerow-core.service" in printed
    assert "journalctl -u hedgerow-core.service -f" in printed
    assert main(["core", "uninstall-service", "--unit-path", str(unit), "--no-systemctl"]) == 0
    assert not unit.exists()
    assert "removed" in capsys.readouterr().out
