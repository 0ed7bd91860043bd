"""V1 local resources through a real cloud, core and deployment: a greengrasssdk Lambda
bridges a serial device (a pseudo-terminal pair declared with --device) and reads a
read-only volume it cannot write; ``core check`` reports a resource that went missing."""

from __future__ import annotations

import grp
import json
import os
import select
import shutil
import tempfile
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import CORE, EXAMPLES, System, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="functions switch users as root: CI and the lab run as root"
    ),
]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the function's user can traverse (pytest's tmp_path is private)."""
    directory = Path(tempfile.mkdtemp(prefix="hedgerow-e2e-res-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def read_line(fd: int, timeout: float) -> bytes:
    """One line from the terminal's master side, waiting at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no line from the device within {timeout} s (got {data!r})")
        data += os.read(fd, 256)
    return data


def test_a_v1_serial_bridge_gets_its_device_and_a_read_only_volume(
    system: System, shared_dir: Path
) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    device = os.ttyname(slave)
    dialout = grp.getgrnam("dialout").gr_gid
    os.chown(device, 0, dialout)  # as a USB serial adapter: root:dialout 0660
    os.chmod(device, 0o660)
    config = shared_dir / "bridge"
    config.mkdir()
    (config / "bridge.conf").write_text("baud=9600")
    config.chmod(0o777)  # writable by anyone on the host: the mount makes it read-only
    seen_at = shared_dir / "seen" / "config"
    spool = shared_dir / "spool"
    spool.mkdir()
    os.chown(spool, 0, dialout)
    spool.chmod(0o770)
    # the volumes come from the function's Greengrass V1 definition, as migrated
    v1_definition = shared_dir / "v1-resources.json"
    v1_definition.write_text(json.dumps({
        "ResourceDefinitionVersion": {"Resources": [
            {"Id": "config", "Name": "config", "ResourceDataContainer": {
                "LocalVolumeResourceData": {"SourcePath": str(config), "DestinationPath":
                    str(seen_at), "GroupOwnerSetting": {"AutoAddGroupOwner": False}}}},
            {"Id": "spool", "Name": "spool", "ResourceDataContainer": {
                "LocalVolumeResourceData": {"SourcePath": str(spool), "DestinationPath":
                    str(spool), "GroupOwnerSetting": {"AutoAddGroupOwner": True}}}},
        ]},
        "FunctionConfiguration": {"Environment": {"ResourceAccessPolicies": [
            {"ResourceId": "config", "Permission": "ro"},
            {"ResourceId": "spool", "Permission": "rw"},
        ]}},
    }))  # fmt: skip
    try:
        system.function(
            "serial-bridge", EXAMPLES / "v1_serial_bridge", "v1_serial_bridge.function_handler",
            "--runtime", "greengrass-v1", "--pinned",
            "--device", f"{device}:rw",
            "--v1-resources", str(v1_definition),
            "--env", f"SERIAL_DEVICE={device}", "--env", f"CONFIG_DIR={seen_at}",
        )  # fmt: skip
        listed = system.cloud("function", "list", "--group", "factory-1", "--json").stdout
        assert f'"source": "{device}"' in listed and '"access": "ro"' in listed
        system.route("function:serial-bridge", "serial/#", "cloud")
        system.deploy()
        os.write(master, b"status\n")
        assert read_line(master, 30) == b"ack:status\n"
        status = wait_until(
            lambda: system.payloads("serial/status"), timeout=60, what="the bridge's status"
        )[0]
        assert status["uid"] != 0
        assert status["groups"] == [dialout]  # the device's group owner, nothing more
        assert status["config"] == "baud=9600"
        assert status["config_write"] == "EROFS"
        assert not (config / "written-by-function").exists()

        os.write(master, b"temp=21.5\n")
        assert read_line(master, 30) == b"ack:temp=21.5\n"
        lines = wait_until(
            lambda: system.payloads("serial/in"), timeout=60, what="the line in the cloud"
        )
        assert lines[0] == {"line": "temp=21.5"}

        core_args = ("core", "check", "--data-dir", str(system.root / "core"), "--timeout", "2")
        assert "local resources" in system.run(*core_args, check=False).stdout
        good = [ln for ln in system.run(*core_args, check=False).stdout.splitlines()
                if "local resources" in ln]  # fmt: skip
        assert good and good[0].startswith("ok"), good
        shutil.rmtree(spool)  # the gateway loses a declared volume
        checked = system.run(*core_args, check=False)
        bad = [ln for ln in checked.stdout.splitlines() if "local resources" in ln]
        assert bad and bad[0].startswith("fail"), checked.stdout
        assert f"volume {spool} does not exist on this gateway" in bad[0]
        assert checked.returncode == 1
    finally:
        os.close(slave)
        os.close(master)
    assert CORE  # the group's one core ran it
