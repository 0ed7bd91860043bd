from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import socket
import tarfile
from pathlib import Path

import httpx
import pytest

from hedgerow import certinfo, pki
from hedgerow.core import check, service
from hedgerow.core.bundle_unpack import unpack_bundle
from hedgerow.core.errors import ConfigError
from hedgerow.core.status import MetricsServer, Snapshot, heartbeat, prometheus

SNAP = Snapshot(
    core="pi-1",
    uptime=12.5,
    devices=3,
    functions={"temp-correct": "RUNNING", "other": "BROKEN"},
    spool={"depth": 7, "bytes": 900},
    counters={"to_cloud": 10, "dropped_local": 0},
    subscriptions=(("thing:a", "sensors/#", "cloud", 10),),
    deployment="d-1",
    cloud_connected=True,
)


def test_heartbeat_is_small_json() -> None:
    body = heartbeat(SNAP)
    data = json.loads(body)
    assert data["devices"] == 3 and data["spool"] == 7 and data["deployment"] == "d-1"
    assert data["counters"] == {"to_cloud": 10}  # zero counters are left out
    assert len(body) < 300


def test_prometheus_text() -> None:
    text = prometheus(SNAP)
    assert "hedgerow_core_devices_connected 3" in text
    assert 'hedgerow_core_function_up{function="temp-correct",state="RUNNING"} 1' in text
    assert 'hedgerow_core_function_up{function="other",state="BROKEN"} 0' in text
    assert (
        'hedgerow_core_subscription_messages_total{source="thing:a",topic="sensors/#",target="cloud"} 10'
        in text
    )


async def test_metrics_server_over_http() -> None:
    server = MetricsServer(lambda: SNAP)
    host, port = await server.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
            r = await client.get("/metrics")
            assert r.status_code == 200 and "hedgerow_core_uptime_seconds 12.500" in r.text
            assert (await client.get("/health")).json()["devices"] == 3
            assert (await client.get("/nope")).status_code == 404
    finally:
        await server.close()


def test_unit_text_and_install(tmp_path: Path) -> None:
    text = service.unit_text(
        ["/usr/bin/python3", "-m", "hedgerow", "core", "run", "--config", "/x y/c.toml"]
    )
    assert "Type=notify" in text and "Restart=always" in text and "WatchdogSec=" in text
    assert "ExecStart=/usr/bin/python3 -m hedgerow core run --config '/x y/c.toml'" in text
    unit = tmp_path / "systemd" / "hedgerow-core.service"
    service.install(text, unit, systemctl=False)
    assert unit.read_text() == text
    assert service.uninstall(unit, systemctl=False) is True
    assert not unit.exists() and service.uninstall(unit, systemctl=False) is False


def test_sd_notify_over_a_real_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        assert service.sd_notify("READY=1", {"NOTIFY_SOCKET": str(path)})
        assert sock.recv(100) == b"READY=1"
    assert service.sd_notify("READY=1", {}) is False
    assert (
        service.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())})
        == 15.0
    )
    assert service.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None


def test_checks_are_pure_and_advise() -> None:
    assert check.check_python((3, 11, 2)).level is check.Level.OK
    assert check.check_python((3, 9, 1)).level is check.Level.FAIL
    assert check.check_disk(Path("/"), 10 * 1024 * 1024).level is check.Level.FAIL
    assert check.check_disk(Path("/"), 10 * 1024**3).level is check.Level.OK
    now = pki.now()
    assert check.check_clock(now, now + dt.timedelta(minutes=10)).level is check.Level.FAIL
    assert check.check_clock(now, now + dt.timedelta(seconds=60)).level is check.Level.WARN
    assert check.check_clock(now, now).level is check.Level.OK
    root = pki.make_ca("r")
    soon = certinfo.from_pem(pki.issue(root, "c", days=3).cert_pem)
    # thresholds follow the lifetime: a fresh short-lived certificate is fine...
    assert check.check_certificate("core", soon, now).level is check.Level.OK
    # ...one with less than a fifth of its lifetime left is not
    late = check.check_certificate("core", soon, now + dt.timedelta(days=2, hours=12))
    assert late.level is check.Level.WARN and "hours of 3 days" in late.detail
    long = certinfo.from_pem(pki.issue(root, "l", days=365).cert_pem)
    assert check.check_certificate("core", long, now + dt.timedelta(days=300)).level is (
        check.Level.OK
    )
    assert check.check_certificate("core", long, now + dt.timedelta(days=355)).level is (
        check.Level.WARN
    )
    assert (
        check.check_certificate("core", soon, now + dt.timedelta(days=5)).level is check.Level.FAIL
    )
    assert check.check_certificate("core", None, now).advice
    assert check.check_cgroups(None).level is check.Level.WARN
    assert check.check_cgroups("cpuset cpu io memory pids").level is check.Level.OK
    assert check.check_run_as("nobody-here-xyz", None, (False, True)).level is check.Level.FAIL
    assert check.check_port("127.0.0.1", 1, False).advice


def _bundle(tmp_path: Path, files: dict[str, bytes]) -> Path:
    path = tmp_path / "pi-1.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_bundle_unpacks_and_refuses_strangers(tmp_path: Path) -> None:
    files = {
        n: b"x"
        for n in ("config.toml", "core.cert.pem", "core.key", "root-ca.pem", "deploy-verify.pem")
    }
    config = unpack_bundle(_bundle(tmp_path, files), tmp_path / "data")
    assert config == tmp_path / "data" / "config.toml"
    assert (tmp_path / "data" / "core.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="missing core.key"):
        unpack_bundle(
            _bundle(tmp_path, {k: v for k, v in files.items() if k != "core.key"}), tmp_path / "d2"
        )
    with pytest.raises(ConfigError, match="unexpected member"):
        unpack_bundle(_bundle(tmp_path, {**files, "../evil.sh": b"x"}), tmp_path / "d3")
    with pytest.raises(ConfigError, match="no bundle"):
        unpack_bundle(tmp_path / "missing.tar.gz", tmp_path / "d4")


def test_component_log_files_rotate(tmp_path: Path) -> None:
    import logging

    from hedgerow.core.logs import component_of, file_handlers

    assert component_of("hedgerow.core.connector") == "connector"
    assert component_of("hedgerow.broker.hub") == "broker"
    assert component_of("uvicorn") == "other"
    handlers = file_handlers(tmp_path / "logs", 2000, 2)
    logger = logging.getLogger("hedgerow.core.connector")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    for h in handlers:
        logger.addHandler(h)
    try:
        for i in range(100):
            logger.info("core.connector.test line=%d %s", i, "x" * 50)
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(old_level)
    names = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert names == [
        "connector.log",
        "connector.log.1",
        "connector.log.2",
        "core.log",
        "core.log.1",
        "core.log.2",
    ]
    assert "line=99" in (tmp_path / "logs" / "connector.log").read_text()


async def test_a_broken_key_tool_fails_the_check_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hedgerow.core import keytool

    assert await check._keytool_error(5) is None  # the real child, RFC 8032's test vector
    monkeypatch.setattr(check, "_RFC8032_SIGNATURE", bytes(64))
    assert await check._keytool_error(5) == "a known-good signature did not verify"
    monkeypatch.setattr(keytool, "CHILD_MODULE", "hedgerow.core.no_such_module")
    error = await check._keytool_error(5)
    assert error is not None and "no_such_module" in error
    result = check.check_keytool(error)
    assert result.level is check.Level.FAIL and "reinstall" in result.advice


def test_local_resources_check_names_what_is_missing() -> None:
    from hedgerow.core.check import Level, check_local_resources, resource_problems

    entries = [
        {"name": "bridge", "handler": "m.h",
         "resources": [{"kind": "device", "source": "/dev/null", "access": "rw"},
                       {"kind": "volume", "source": "/no/such/hedgerow-dir"}],
         "groups": ["no-such-group-hedgerow"]},
        {"name": "plain", "handler": "m.h"},
    ]  # fmt: skip
    declared, problems = resource_problems(entries)
    assert declared == 3
    assert problems == [
        "function 'bridge': volume /no/such/hedgerow-dir does not exist on this gateway",
        "function 'bridge': OS group 'no-such-group-hedgerow' does not exist",
    ]
    result = check_local_resources(declared, problems)
    assert result.level is Level.FAIL and "hedgerow-dir" in result.detail
    assert check_local_resources(0, []).level is Level.OK


def test_heartbeat_pacer_is_periodic_and_debounces_changes() -> None:
    from hedgerow.core.status import HeartbeatPacer

    pacer = HeartbeatPacer(interval=600.0, min_gap=1.0, settle=0.25)
    pacer.sent(100.0)
    assert pacer.delay(100.0) == 600.0  # idle: the periodic one only
    pacer.changed(100.2)
    assert pacer.delay(100.2) == pytest.approx(0.8)  # a second after the last heartbeat
    assert pacer.delay(101.5) == 0.0
    pacer.sent(101.5)
    assert pacer.delay(101.5) == 600.0
    pacer.changed(200.0)  # long after: sent once the burst settled
    pacer.changed(200.1)
    assert pacer.delay(200.1) == pytest.approx(0.15)
    pacer.sent(200.25)
    # 2.95 s of changes, one every 10 ms: one heartbeat a second
    sent = 0
    for i in range(1, 296):
        now = 200.25 + i / 100
        pacer.changed(now)
        if pacer.delay(now) == 0.0:
            pacer.sent(now)
            sent += 1
    assert sent == 2 and pacer.pending  # at 201.25 and 202.25; the next is due at 203.25
    assert pacer.delay(now) == pytest.approx(203.25 - now)


def test_device_activity_reports_connection_and_paces_publishes() -> None:
    from hedgerow.core.status import ACTIVITY_REPORT_S, MAX_THINGS_REPORTED, DeviceActivity

    activity = DeviceActivity()
    activity.seen("a", 1000.0)  # connected
    assert not activity.published("a", 1001.0)  # the connect's heartbeat covers it
    assert activity.published("a", 1000.0 + ACTIVITY_REPORT_S)  # stale in the cloud: report
    assert not activity.published("a", 1000.0 + ACTIVITY_REPORT_S + 1)
    assert activity.published("b", 1002.0)  # never reported yet
    assert activity.report({"a"}) == {
        "a": {"connected": True, "last_activity": 1000.0 + ACTIVITY_REPORT_S + 1},
        "b": {"connected": False, "last_activity": 1002.0},
    }
    body = json.loads(heartbeat(dataclasses.replace(SNAP, things=activity.report(set()))))
    assert body["things"]["a"]["connected"] is False
    # many things: the connected ones first, then the most recent, within the cap
    many = DeviceActivity({f"t{i}": float(i) for i in range(MAX_THINGS_REPORTED + 10)})
    report = many.report({"t0"})
    assert len(report) == MAX_THINGS_REPORTED
    assert (
        report["t0"]["connected"] and "t1" not in report and f"t{MAX_THINGS_REPORTED + 9}" in report
    )


def test_heartbeat_carries_function_errors_only_when_any() -> None:
    assert "function_errors" not in json.loads(heartbeat(SNAP))
    failing = dataclasses.replace(
        SNAP,
        function_errors={
            "f": {"failed": 2, "crashes": 0, "timeouts": 0, "last_error": "ValueError: x"}
        },
    )
    body = json.loads(heartbeat(failing))
    assert body["function_errors"]["f"]["last_error"] == "ValueError: x"
    # idle cost at the default interval with one failing function: well under 1 MiB a day
    assert len(heartbeat(failing)) * (86400 / 600) < 1024 * 1024 / 10
