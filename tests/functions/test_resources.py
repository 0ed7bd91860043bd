"""Local resources: parsing and access planning (pure), and a real worker given a pseudo-
terminal as a serial device and volumes in its own mount namespace."""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import tempfile
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from hedgerow.functions import FunctionDeployError, FunctionHost, FunctionSpec
from hedgerow.functions.errors import InvalidFunctionSpec
from hedgerow.functions.resources import (
    LocalResource,
    ResourceUnavailable,
    SourceFacts,
    parse_device,
    parse_volume,
    plan_access,
)
from hedgerow.functions.spec import validate_spec
from tests.functions.helpers import Recorder, write_bundle

CHR = stat.S_IFCHR
DIR = stat.S_IFDIR


def test_cli_forms_parse_to_v1_semantics() -> None:
    assert parse_device("/dev/ttyUSB0") == LocalResource("device", "/dev/ttyUSB0", "/dev/ttyUSB0")
    assert parse_device("/dev/i2c-1:ro").read_only
    volume = parse_volume("/var/data:/data:ro")
    assert (volume.source, volume.destination, volume.access) == ("/var/data", "/data", "ro")
    assert volume.needs_mount
    same = parse_volume("/var/data")
    assert same.destination == "/var/data" and same.access == "rw" and not same.needs_mount
    assert parse_volume("/var/data:rw").destination == "/var/data"
    for bad in ("dev/ttyUSB0", "/dev/ttyUSB0:rx", "/dev/../etc/shadow"):
        with pytest.raises(InvalidFunctionSpec, match="devices"):
            parse_device(bad)
    for bad in ("/a:/b:/c:ro", "/var/data:/etc", "/var/data:/:ro", "/x:relative"):
        with pytest.raises(InvalidFunctionSpec, match="volumes"):
            parse_volume(bad)


def test_the_document_round_trips_and_duplicates_are_refused() -> None:
    spec = FunctionSpec(
        name="serial",
        handler="m.h",
        resources=(parse_device("/dev/ttyS0:rw"), parse_volume("/var/data:/data:ro")),
        groups=("dialout",),
    )
    document = json.loads(json.dumps(spec.to_document()))
    assert validate_spec(document) == spec
    assert document["resources"][1] == {
        "kind": "volume",
        "source": "/var/data",
        "destination": "/data",
        "access": "ro",
        "auto_add_group_owner": True,
    }
    twice = {**document, "resources": [document["resources"][0]] * 2}
    with pytest.raises(InvalidFunctionSpec, match="declared twice"):
        validate_spec(twice)
    with pytest.raises(InvalidFunctionSpec, match="groups"):
        validate_spec({**document, "groups": ["bad group"]})


def test_access_is_granted_through_owner_group_or_other_bits() -> None:
    tty_rw = parse_device("/dev/ttyUSB0:rw")
    facts = {"/dev/ttyUSB0": SourceFacts(CHR | 0o660, 0, 20)}
    # group owner auto-add: the device's group becomes a supplementary group
    assert plan_access([tty_rw], facts, uid=999, gid=995, group_ids={}) == (20,)
    no_auto = LocalResource("device", "/dev/ttyUSB0", "/dev/ttyUSB0", "rw", False)
    with pytest.raises(ResourceUnavailable, match="chmod g\\+rw /dev/ttyUSB0"):
        plan_access([no_auto], facts, uid=999, gid=995, group_ids={})
    # ... unless a declared group is that group
    assert plan_access([no_auto], facts, uid=999, gid=995, group_ids={"dialout": 20}) == (20,)
    # a group that can only write (a terminal's root:tty 0620) does not give rw
    pts = {"/dev/ttyUSB0": SourceFacts(CHR | 0o620, 0, 5)}
    with pytest.raises(ResourceUnavailable, match="read and write"):
        plan_access([tty_rw], pts, uid=999, gid=995, group_ids={})
    owned = {"/dev/ttyUSB0": SourceFacts(CHR | 0o600, 999, 5)}
    assert plan_access([tty_rw], owned, uid=999, gid=995, group_ids={}) == ()
    volume = parse_volume("/var/data:/data:ro")
    open_dir = {"/var/data": SourceFacts(DIR | 0o755, 0, 0)}
    assert plan_access([volume], open_dir, uid=999, gid=995, group_ids={}) == ()
    root_group = {"/var/data": SourceFacts(DIR | 0o770, 0, 0)}
    with pytest.raises(ResourceUnavailable, match="chgrp .* && chmod g\\+rx"):  # never root group
        plan_access([volume], root_group, uid=999, gid=995, group_ids={})
    with pytest.raises(ResourceUnavailable, match="does not exist"):
        plan_access([volume], {"/var/data": None}, uid=999, gid=995, group_ids={})
    with pytest.raises(ResourceUnavailable, match="not a directory"):
        plan_access([volume], {"/var/data": SourceFacts(CHR | 0o666, 0, 0)}, uid=1, gid=1,
                    group_ids={})  # fmt: skip
    with pytest.raises(ResourceUnavailable, match="groupadd gpio"):
        plan_access([], {}, uid=999, gid=995, group_ids={"gpio": None})


# -- a real worker ---------------------------------------------------------------------------

ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0, reason="user switch and mount namespaces: CI and the lab run as root"
)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp_path is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="hedgerow-res-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def serial_port() -> Iterator[tuple[int, str]]:
    """A pseudo-terminal pair set up like a USB serial adapter: root:dialout 0660, raw."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.chown(path, 0, grp.getgrnam("dialout").gr_gid)
    os.chmod(path, 0o660)
    yield master, path
    os.close(slave)
    os.close(master)


SERIAL = """
    import errno, os

    def handler(event, context):
        out = {"groups": os.getgroups(), "uid": os.getuid()}
        fd = os.open(event["device"], os.O_RDWR | os.O_NOCTTY)
        try:
            line = os.read(fd, 64)
            os.write(fd, b"pong:" + line)
        finally:
            os.close(fd)
        out["read"] = line.decode()
        try:
            os.close(os.open(event["other"], os.O_RDWR | os.O_NOCTTY))
            out["other"] = "opened"
        except OSError as exc:
            out["other"] = errno.errorcode[exc.errno]
        out["seen"] = open(os.path.join(event["ro"], "config.txt")).read()
        try:
            open(os.path.join(event["ro"], "new.txt"), "w").close()
            out["ro_write"] = "written"
        except OSError as exc:
            out["ro_write"] = errno.errorcode[exc.errno]
        with open(os.path.join(event["rw"], "from-function.txt"), "w") as f:
            f.write("hello")
        return out
"""


@ROOT_ONLY
async def test_a_worker_gets_exactly_its_device_and_volumes(
    shared_dir: Path, serial_port: tuple[int, str]
) -> None:
    master, device = serial_port
    other_master, other_slave = os.openpty()  # a terminal the function did not declare
    ro_source = shared_dir / "config"
    ro_source.mkdir()
    (ro_source / "config.txt").write_text("rate=5")
    ro_source.chmod(0o777)  # even a world-writable source is read-only through the mount
    rw_source = shared_dir / "data"
    rw_source.mkdir(mode=0o770)
    os.chown(rw_source, 0, grp.getgrnam("dialout").gr_gid)
    rw_source.chmod(0o770)
    destination = shared_dir / "seen-as" / "config"
    bundle = write_bundle(shared_dir, "serial", {"serial.py": SERIAL})
    spec = FunctionSpec(
        name="serial",
        handler="serial.handler",
        resources=(
            parse_device(f"{device}:rw"),
            parse_volume(f"{ro_source}:{destination}:ro"),
            parse_volume(f"{rw_source}:rw"),
        ),
    )
    try:
        async with FunctionHost(shared_dir / "work", publish=Recorder()) as host:
            (shared_dir / "work").chmod(0o755)
            await host.apply([spec], {"serial": bundle})
            os.write(master, b"ping")
            event = {
                "device": device,
                "other": os.ttyname(other_slave),
                "ro": str(destination),
                "rw": str(rw_source),
            }
            result = json.loads(await host.invoke("serial", json.dumps(event).encode(), timeout=10))
            assert os.read(master, 64) == b"pong:ping"
    finally:
        os.close(other_slave)
        os.close(other_master)
    assert result["uid"] != 0
    assert result["groups"] == [grp.getgrnam("dialout").gr_gid]  # exactly the device's group
    assert result["read"] == "ping"
    assert result["other"] == "EACCES"
    assert result["seen"] == "rate=5"
    assert result["ro_write"] == "EROFS"
    assert (rw_source / "from-function.txt").read_text() == "hello"
    assert not (ro_source / "new.txt").exists()
    assert not os.path.ismount(destination)  # the mount stayed in the function's namespace


READ_ONLY = """
    import errno, os, stat

    def handler(event, context):
        out = {}
        with open(event["ro"], "rb", buffering=0) as f:
            out["read"] = f.read(8).hex()
        for name, flags in (("write", os.O_WRONLY), ("readwrite", os.O_RDWR)):
            try:
                os.close(os.open(event["ro"], flags))
                out[name] = "opened"
            except OSError as exc:
                out[name] = errno.errorcode[exc.errno]
        try:
            os.chmod(event["ro"], 0o666)
            out["chmod"] = "changed"
        except OSError as exc:
            out["chmod"] = errno.errorcode[exc.errno]
        out["mode"] = stat.filemode(os.stat(event["ro"]).st_mode)
        with open(event["rw"], "wb", buffering=0) as f:
            out["written"] = f.write(b"still writable")
        return out
"""


@ROOT_ONLY
async def test_a_read_only_device_refuses_writes_and_an_rw_one_stays_writable(
    shared_dir: Path,
) -> None:
    """Two real device nodes made by the test (``/dev/zero``'s and ``/dev/null``'s devices)
    as ``root:dialout 0660``, like a serial adapter: the device's group (auto-added) could
    write either, yet ``ro`` refuses writing, in the function's namespace only."""
    dialout = grp.getgrnam("dialout").gr_gid
    nodes = {"zero": (shared_dir / "zero-ro", os.makedev(1, 5)),
             "null": (shared_dir / "null-rw", os.makedev(1, 3))}  # fmt: skip
    for path, device in nodes.values():
        os.mknod(path, stat.S_IFCHR | 0o660, device)
        os.chown(path, 0, dialout)
        path.chmod(0o660)
    ro_device, rw_device = str(nodes["zero"][0]), str(nodes["null"][0])
    bundle = write_bundle(shared_dir, "ro", {"ro.py": READ_ONLY})
    spec = FunctionSpec(
        name="ro",
        handler="ro.handler",
        resources=(parse_device(f"{ro_device}:ro"), parse_device(f"{rw_device}:rw")),
    )
    async with FunctionHost(shared_dir / "work", publish=Recorder()) as host:
        (shared_dir / "work").chmod(0o755)
        await host.apply([spec], {"ro": bundle})
        event = {"ro": ro_device, "rw": rw_device}
        result = json.loads(await host.invoke("ro", json.dumps(event).encode(), timeout=10))
    assert result["read"] == "00" * 8  # it reads the device: /dev/zero's zeros
    assert result["write"] == result["readwrite"] == "EACCES"
    assert result["chmod"] == "EPERM"
    assert result["mode"] == "cr--r-----"
    assert result["written"] == len(b"still writable")  # the rw device stays writable
    # the gateway's own node is untouched and nothing was mounted outside the function
    facts = os.stat(ro_device)
    assert (stat.S_IMODE(facts.st_mode), facts.st_gid) == (0o660, dialout)
    assert ro_device not in Path("/proc/self/mountinfo").read_text()
    assert not list(Path(tempfile.gettempdir()).glob("hedgerow-ro-devices-*"))


@ROOT_ONLY
async def test_a_read_only_pseudo_terminal_is_refused_at_deploy(
    shared_dir: Path, serial_port: tuple[int, str]
) -> None:
    """The kernel opens a pseudo-terminal only through its devpts node: no read-only copy
    can be made, so ``ro`` on one fails the deployment, saying to declare it rw."""
    _, device = serial_port
    bundle = write_bundle(shared_dir, "plain", {"plain.py": "def handler(e, c):\n    return 1\n"})
    spec = FunctionSpec(
        name="p", handler="plain.handler", resources=(parse_device(f"{device}:ro"),)
    )
    async with FunctionHost(shared_dir / "work", publish=Recorder()) as host:
        (shared_dir / "work").chmod(0o755)
        with pytest.raises(FunctionDeployError, match="pseudo-terminal.*declare it rw"):
            await host.apply([spec], {"p": bundle})


def test_without_root_a_read_only_device_the_core_may_write_is_refused() -> None:
    """No namespace to make it read-only: refused rather than silently writable."""
    from hedgerow.functions.host import grant_resources

    spec = FunctionSpec(name="f", handler="m.h", resources=(parse_device("/dev/null:ro"),))
    with pytest.raises(ResourceUnavailable, match="declared read-only.*run the core as root"):
        grant_resources(spec, None, is_root=False)
    writable = FunctionSpec(name="f", handler="m.h", resources=(parse_device("/dev/null:rw"),))
    assert grant_resources(writable, None, is_root=False) is None


@ROOT_ONLY
async def test_a_missing_device_fails_the_deployment_and_keeps_the_old_functions(
    shared_dir: Path,
) -> None:
    bundle = write_bundle(shared_dir, "plain", {"plain.py": "def handler(e, c):\n    return 1\n"})
    plain = FunctionSpec(name="plain", handler="plain.handler", pinned=True)
    wanting = FunctionSpec(
        name="wanting",
        handler="plain.handler",
        resources=(parse_device("/dev/ttyHEDGEROW-MISSING:rw"),),
    )
    async with FunctionHost(shared_dir / "work", publish=Recorder()) as host:
        (shared_dir / "work").chmod(0o755)
        await host.apply([plain], {"plain": bundle})
        with pytest.raises(FunctionDeployError, match="ttyHEDGEROW-MISSING does not exist"):
            await host.apply([plain, wanting], {"plain": bundle, "wanting": bundle})
        assert host.states() == {"plain": "RUNNING"}


def test_a_migrated_v1_resource_definition_keeps_its_semantics() -> None:
    from hedgerow.functions.resources import from_v1_definition

    resources = [
        {"Id": "serial", "Name": "serial", "ResourceDataContainer": {"LocalDeviceResourceData": {
            "SourcePath": "/dev/ttyUSB0", "GroupOwnerSetting": {"AutoAddGroupOwner": True}}}},
        {"Id": "data", "Name": "data", "ResourceDataContainer": {"LocalVolumeResourceData": {
            "SourcePath": "/var/data", "DestinationPath": "/data",
            "GroupOwnerSetting": {"AutoAddGroupOwner": False, "GroupOwner": "gpio"}}}},
        {"Id": "key", "Name": "key", "ResourceDataContainer": {"SecretsManagerSecretResourceData": {
            "ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:greengrass-key-AbC123"}}},
        {"Id": "model", "Name": "model", "ResourceDataContainer": {
            "S3MachineLearningModelResourceData": {"DestinationPath": "/model"}}},
    ]  # fmt: skip
    policies = [{"ResourceId": "serial", "Permission": "rw"},
                {"ResourceId": "data", "Permission": "ro"}, {"ResourceId": "key"}]  # fmt: skip
    migrated = from_v1_definition(resources, policies)
    assert migrated.resources == (
        LocalResource("device", "/dev/ttyUSB0", "/dev/ttyUSB0", "rw", True),
        LocalResource("volume", "/var/data", "/data", "ro", False),
    )
    assert migrated.groups == ("gpio",) and migrated.secrets == ("greengrass-key",)
    with pytest.raises(InvalidFunctionSpec, match="no Hedgerow counterpart.*--volume"):
        from_v1_definition(resources, [{"ResourceId": "model", "Permission": "ro"}])
    with pytest.raises(InvalidFunctionSpec, match="unknown resource nope"):
        from_v1_definition(resources, [{"ResourceId": "nope", "Permission": "ro"}])


def test_without_root_relocated_or_read_only_volumes_are_refused(tmp_path: Path) -> None:
    """Not root: no mount namespace and no user switch; what needs them is refused."""
    from hedgerow.functions.host import grant_resources

    tmp_path.chmod(0o755)
    read_only = FunctionSpec(name="f", handler="m.h",
                             resources=(parse_volume(f"{tmp_path}:/data:ro"),))  # fmt: skip
    with pytest.raises(ResourceUnavailable, match="needs a mount namespace.*run the core as root"):
        grant_resources(read_only, None, is_root=False)
    own_path = FunctionSpec(name="f", handler="m.h", resources=(parse_volume(f"{tmp_path}:rw"),))
    assert grant_resources(own_path, None, is_root=False) is None  # the core's user owns it
