"""A function's own mount namespace: its volumes bind-mounted at their destinations.

Runs INSIDE the worker, as root, before it drops to the function's user (see
``worker.main``): ``unshare(CLONE_NEWNS)``, every mount made private (nothing leaks back to
the gateway), then each volume bind-mounted at its destination and, when read-only,
remounted ``ro`` so the kernel refuses writes whatever the file modes say. A destination
directory that does not exist is created (empty, root-owned, 0755) on the gateway as the
mount point. Python 3.11 has no ``os.unshare``/``mount``: they are called through libc.

Where this is impossible (the core is not root, no user namespaces are involved) the core
refuses read-only and relocated volumes before starting the worker (``host.py``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
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


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise LaunchError(f"{what}: {os.strerror(errno)}")


def enter(mounts: Sequence[Mount]) -> None:
    """A private mount namespace for this process with ``mounts`` in place (as root)."""
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    for mount in mounts:
        os.makedirs(mount.destination, mode=0o755, exist_ok=True)
        src, dst = os.fsencode(mount.source), os.fsencode(mount.destination)
        _check(libc.mount(src, dst, None, MS_BIND | MS_REC, None), f"bind {mount.source}")
        if mount.read_only:
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
            _check(libc.mount(None, dst, None, flags, None), f"read-only {mount.destination}")
