"""The connection-info cache: what discovery said, kept on disk per thing.

A rebooted device reads it and connects to its core without asking the cloud, so a cloud
outage (or no route to it) does not keep sensors offline. One JSON file per thing:

```json
{"format": 1, "thing": "bme680-1", "fetched_at": 1767225600.0,
 "last_good": {"host": "10.0.0.5", "port": 8883},
 "discovery": { ...the compat.md §1 body: groups, cores, endpoints, CA PEMs... }}
```

Writes are atomic (a temporary file in the same directory, fsync, ``os.replace``), so a
power cut mid-write leaves either the old file or the new one, never half of one. A file
that cannot be parsed is treated as absent (and logged): discovery will replace it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from .discovery import DiscoveryInfo, Endpoint, MalformedDiscovery, parse_discovery

log = logging.getLogger(__name__)

FORMAT = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class CachedInfo:
    thing: str
    fetched_at: float
    info: DiscoveryInfo
    #: the endpoint the last successful connection used; tried first next time
    last_good: Endpoint | None = None


def default_directory() -> Path:
    """``$XDG_STATE_HOME/hedgerow/things`` (``~/.local/state/hedgerow/things``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hedgerow" / "things"


def file_name(thing: str) -> str:
    safe = _UNSAFE.sub("_", thing) or "_"
    return f"{safe}.json"


def encode(entry: CachedInfo) -> str:
    doc: dict[str, object] = {
        "format": FORMAT,
        "thing": entry.thing,
        "fetched_at": entry.fetched_at,
        "discovery": entry.info.to_json(),
    }
    if entry.last_good is not None:
        doc["last_good"] = {"host": entry.last_good.host, "port": entry.last_good.port}
    return json.dumps(doc, indent=1)


def decode(text: str) -> CachedInfo:
    """Parse a cache file's text; ``ValueError`` if it is not one."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError("not a hedgerow connection-info cache (format 1)")
    try:
        info = parse_discovery(doc["discovery"])
    except (KeyError, MalformedDiscovery) as exc:
        raise ValueError(f"bad discovery section: {exc}") from exc
    last = doc.get("last_good")
    last_good = None
    if (
        isinstance(last, dict)
        and isinstance(last.get("host"), str)
        and isinstance(last.get("port"), int)
    ):
        last_good = Endpoint(last["host"], last["port"])
    return CachedInfo(str(doc.get("thing", "")), float(doc.get("fetched_at", 0.0)), info, last_good)


class ConnInfoCache:
    """A directory of per-thing cache files."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, thing: str) -> Path:
        return self.directory / file_name(thing)

    def load(self, thing: str) -> CachedInfo | None:
        path = self.path(thing)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("thing.cache.unreadable path=%s error=%s", path, exc)
            return None
        try:
            entry = decode(text)
        except ValueError as exc:
            log.warning("thing.cache.corrupt path=%s error=%s", path, exc)
            return None
        if entry.thing and entry.thing != thing:
            log.warning("thing.cache.other_thing path=%s thing=%s", path, entry.thing)
            return None
        return entry

    def save(self, entry: CachedInfo) -> Path:
        """Write atomically; returns the file's path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(entry.thing)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(encode(entry))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        log.debug("thing.cache.saved path=%s", path)
        return path

    def remember_endpoint(self, thing: str, endpoint: Endpoint) -> None:
        """Record the endpoint that worked (no-op if nothing is cached or it is unchanged)."""
        entry = self.load(thing)
        if entry is None or entry.last_good == Endpoint(endpoint.host, endpoint.port):
            return
        self.save(replace(entry, last_good=Endpoint(endpoint.host, endpoint.port)))

    def clear(self, thing: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(thing).unlink()
