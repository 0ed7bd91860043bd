"""A function's own mount namespace: its volumes bind-mounted at their destinations, and
its read-only devices replaced by nodes it can only read.

Runs INSIDE the worker, as root, before it drops to the function's user (see
``worker.main``): ``unshare(CLONE_NEWNS)``, every mount made private (nothing leaks back to
the gateway), then each volume bind-mounted at its destination and, when read-only,
remounted ``ro`` so the kernel refuses writes whatever the file modes say. A destination
directory that does not exist is created (empty, root-owned, 0755) on the gateway as the
mount point. Python 3.11 has no ``os.unshare``/``mount``: they are called through libc.

A read-only mount does not stop writes to a device node, and the device's own mode may let
the function's groups write (a ``root:dialout 0660`` serial port). So a device declared
``ro`` is covered, in this namespace only, by a fresh node for the same device (``mknod``,
same major and minor) made in a private tmpfs, owned by root and the function's primary
group with mode ``0440``: the function can open it for reading, and neither open it for
writing nor change its mode. The staging tmpfs is detached and its directory removed at
once; the nodes live on through their bind mounts until the worker ends.

Where this is impossible (the core is not root, no user namespaces are involved) the core
refuses read-only and relocated volumes before starting the worker (``host.py``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from hedgerow.functions.errors import LaunchError

CLONE_NEWNS: Final = 0x00020000
MS_RDONLY: Final = 0x1
MS_NOSUID: Final = 0x2
MS_NODEV: Final = 0x4
MS_REMOUNT: Final = 0x20
MS_BIND: Final = 0x1000
MS_REC: Final = 0x4000
MS_PRIVATE: Final = 1 << 18
MNT_DETACH: Final = 2
#: a read-only device's node: the owner (root) and the function's group may read, no one writes
READ_ONLY_DEVICE_MODE: Final = 0o440


@dataclass(frozen=True)
class Mount:
    source: str
    destination: str
    read_only: bool

    def to_json(self) -> list[object]:
        return [self.source, self.destination, self.read_only]

    @classmethod
    def from_json(cls, value: Sequence[object]) -> Mount:
        source, destination, read_only = value
        return cls(str(source), str(destination), bool(read_only))


@dataclass(frozen=True)
class ReadOnlyDevice:
    """A device file the function may only read; ``gid`` is the function's primary group."""

    path: str
    gid: int

    def to_json(self) -> list[object]:
        return [self.path, self.gid]

    @classmethod
    def from_json(cls, value: Sequence[object]) -> ReadOnlyDevice:
        path, gid = value
        return cls(str(path), int(str(gid)))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise LaunchError(f"{what}: {os.strerror(errno)}")


def enter(mounts: Sequence[Mount], read_only_devices: Sequence[ReadOnlyDevice] = ()) -> None:
    """A private mount namespace for this process with ``mounts`` in place and
    ``read_only_devices`` readable only (as root)."""
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    _cover_read_only_devices(libc, read_only_devices)
    for mount in mounts:
        os.makedirs(mount.destination, mode=0o755, exist_ok=True)
        src, dst = os.fsencode(mount.source), os.fsencode(mount.destination)
        _check(libc.mount(src, dst, None, MS_BIND | MS_REC, None), f"bind {mount.source}")
        if mount.read_only:
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
            _check(libc.mount(None, dst, None, flags, None), f"read-only {mount.destination}")


def _cover_read_only_devices(libc: ctypes.CDLL, devices: Sequence[ReadOnlyDevice]) -> None:
    """Bind a read-only node of each device over its path (this namespace only)."""
    if not devices:
        return
    staging = tempfile.mkdtemp(prefix="hedgerow-ro-devices-")
    try:
        _check(
            libc.mount(b"tmpfs", os.fsencode(staging), b"tmpfs", MS_NOSUID, b"mode=0700,size=16k"),
            "tmpfs for read-only devices",
        )
        try:
            for index, device in enumerate(devices):
                facts = os.stat(device.path)
                if not (stat.S_ISCHR(facts.st_mode) or stat.S_ISBLK(facts.st_mode)):
                    raise LaunchError(f"{device.path} is not a character or block device")
                node = os.path.join(staging, str(index))
                os.mknod(node, stat.S_IFMT(facts.st_mode) | READ_ONLY_DEVICE_MODE, facts.st_rdev)
                os.chown(node, 0, device.gid)
                os.chmod(node, READ_ONLY_DEVICE_MODE)  # whatever the umask took away
                _check(
                    libc.mount(os.fsencode(node), os.fsencode(device.path), None, MS_BIND, None),
                    f"read-only {device.path}",
                )
        finally:
            libc.umount2(os.fsencode(staging), MNT_DETACH)
    finally:
        os.rmdir(staging)
