"""Where a stream's bytes live: ``MemoryStore`` and ``FileStore`` (the only disk I/O here).

A store follows ``StreamLog``'s plans (``hedgerow.streams.log``): it appends a record, drops
whole segments, and reads runs of records back by sequence number.

``FileStore`` layout, one directory per stream (named by the hex of the stream's name, so
that any valid name is a safe file name)::

    <streams dir>/<hex name>/definition.json     the client's definition (as sent)
    <streams dir>/<hex name>/exports.json        per export: the last exported sequence number
    <streams dir>/<hex name>/<first seq:020d>.seg  segments of records

A record is ``[payload length u32][crc32 u32][sequence i64][ingest ms i64][payload]``, the
CRC over the sequence, ingest time and payload. Each append is one ``os.write`` on a file
opened with ``O_APPEND`` before the client is answered, so an append that returned survives
``kill -9`` of the process. Power loss needs the data on the disk: ``sync()`` fsyncs the
written segment (group commit: the manager calls it once per batch of appends for streams
with ``flushOnWrite``, and every ``fsync_interval`` for the others). On open, each segment
is scanned and a torn or corrupt tail (a power cut in the middle of a write) is cut off.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import shutil
import struct
import zlib
from array import array
from collections import deque
from pathlib import Path
from typing import Any, Protocol

from .errors import StoreError
from .log import AppendPlan, Segment

log = logging.getLogger(__name__)

_RECORD = struct.Struct(">IIqq")
_STAMP = struct.Struct(">qq")
SEGMENT_SUFFIX = ".seg"
DEFINITION_FILE = "definition.json"
EXPORTS_FILE = "exports.json"

Record = tuple[int, int, bytes]  # sequence, ingest ms, payload


class StreamStore(Protocol):
    def append(self, plan: AppendPlan, ingest_ms: int, payload: bytes) -> None: ...

    def drop(self, n: int) -> None: ...

    def read(self, first: int, count: int) -> list[Record]: ...

    def sync(self) -> None: ...

    def save_definition(self, wire: dict[str, Any]) -> None: ...

    def save_progress(self, progress: dict[str, int]) -> None: ...

    def load_progress(self) -> dict[str, int]: ...

    def destroy(self) -> None: ...

    def close(self) -> None: ...


class MemoryStore:
    """Records in memory (``Persistence.Memory``): nothing survives the process."""

    def __init__(self) -> None:
        self._firsts: list[int] = []
        self._segments: deque[list[tuple[int, bytes]]] = deque()
        self._progress: dict[str, int] = {}

    def append(self, plan: AppendPlan, ingest_ms: int, payload: bytes) -> None:
        self.drop(plan.drop)
        if plan.new_segment:
            self._firsts.append(plan.sequence)
            self._segments.append([])
        self._segments[-1].append((ingest_ms, payload))

    def drop(self, n: int) -> None:
        for _ in range(n):
            self._segments.popleft()
        del self._firsts[:n]

    def read(self, first: int, count: int) -> list[Record]:
        out: list[Record] = []
        i = bisect.bisect_right(self._firsts, first) - 1
        seq = first
        while len(out) < count and 0 <= i < len(self._segments):
            segment = self._segments[i]
            base = self._firsts[i]
            for ingest, payload in segment[seq - base : seq - base + count - len(out)]:
                out.append((seq, ingest, payload))
                seq += 1
            i += 1
        return out

    def sync(self) -> None:
        pass

    def save_definition(self, wire: dict[str, Any]) -> None:
        pass

    def save_progress(self, progress: dict[str, int]) -> None:
        self._progress = dict(progress)

    def load_progress(self) -> dict[str, int]:
        return dict(self._progress)

    def destroy(self) -> None:
        self._segments.clear()
        self._firsts.clear()

    def close(self) -> None:
        pass


class _FileSegment:
    __slots__ = ("first", "path", "fd", "offsets", "size")

    def __init__(self, first: int, path: Path, fd: int) -> None:
        self.first = first
        self.path = path
        self.fd = fd
        self.offsets = array("Q")
        self.size = 0


def stream_dir(root: Path, name: str) -> Path:
    return root / name.encode().hex()


def _write_json(path: Path, value: Any, *, durable: bool) -> None:
    tmp = path.with_suffix(".tmp")
    data = json.dumps(value, separators=(",", ":")).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    """Records in segment files (``Persistence.File``); see the module docstring."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._segments: deque[_FileSegment] = deque()
        self._firsts: list[int] = []
        self._dirty = False

    @classmethod
    def create(cls, directory: Path, wire: dict[str, Any]) -> FileStore:
        try:
            directory.mkdir(parents=True, exist_ok=False)
            _fsync_dir(directory.parent)
            store = cls(directory)
            store.save_definition(wire)
        except OSError as exc:
            raise StoreError(f"cannot create {directory}: {exc}", str(directory)) from exc
        return store

    @classmethod
    def open(cls, directory: Path) -> tuple[FileStore, list[Segment]]:
        """Reopen a stream's files, cutting off a torn tail; returns the segments held."""
        store = cls(directory)
        try:
            files = sorted(
                (int(p.stem), p) for p in directory.glob(f"*{SEGMENT_SUFFIX}") if p.stem.isdigit()
            )
            segments: list[Segment] = []
            expected: int | None = None
            for first, path in files:
                if expected is not None and first != expected:
                    log.error(
                        "streams.store.gap path=%s expected=%s removed=later_segments",
                        path,
                        expected,
                    )
                    path.unlink()
                    continue
                segment = store._recover(first, path)
                if segment.count == 0 and expected is not None:
                    store._close_last_if_empty()
                    continue
                segments.append(segment)
                expected = segment.end
        except OSError as exc:
            store.close()
            raise StoreError(f"cannot read {directory}: {exc}", str(directory)) from exc
        return store, segments

    def _recover(self, first: int, path: Path) -> Segment:
        data = path.read_bytes()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        fs = _FileSegment(first, path, fd)
        segment = Segment(first)
        pos = 0
        view = memoryview(data)
        while pos + _RECORD.size <= len(data):
            length, crc, seq, ingest = _RECORD.unpack_from(data, pos)
            end = pos + _RECORD.size + length
            if end > len(data) or seq != first + segment.count:
                break
            payload = view[pos + _RECORD.size : end]
            if zlib.crc32(payload, zlib.crc32(_STAMP.pack(seq, ingest))) != crc:
                break
            fs.offsets.append(pos)
            segment.count += 1
            segment.bytes += end - pos
            segment.last_ingest_ms = ingest
            pos = end
        if pos != len(data):
            log.warning(
                "streams.store.torn_tail path=%s kept=%d cut=%d", path, pos, len(data) - pos
            )
            os.ftruncate(fd, pos)
            os.fsync(fd)
        fs.size = pos
        self._segments.append(fs)
        self._firsts.append(first)
        return segment

    def _close_last_if_empty(self) -> None:
        fs = self._segments.pop()
        self._firsts.pop()
        os.close(fs.fd)
        fs.path.unlink()

    def append(self, plan: AppendPlan, ingest_ms: int, payload: bytes) -> None:
        try:
            if plan.drop:
                self.drop(plan.drop)
            if plan.new_segment:
                self._open_segment(plan.sequence)
            fs = self._segments[-1]
            crc = zlib.crc32(payload, zlib.crc32(_STAMP.pack(plan.sequence, ingest_ms)))
            record = _RECORD.pack(len(payload), crc, plan.sequence, ingest_ms) + payload
            written = os.write(fs.fd, record)
            if written != len(record):  # a full disk mid-record: cut it off again
                os.ftruncate(fs.fd, fs.size)
                raise OSError(28, "short write (disk full?)")
        except OSError as exc:
            raise StoreError(
                f"cannot write stream file in {self.directory}: {exc}", str(self.directory)
            ) from exc
        fs.offsets.append(fs.size)
        fs.size += len(record)
        self._dirty = True

    def _open_segment(self, first: int) -> None:
        if self._segments:
            self.sync()  # a finished segment is on disk before the next one starts
        path = self.directory / f"{first:020d}{SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._segments.append(_FileSegment(first, path, fd))
        self._firsts.append(first)
        _fsync_dir(self.directory)

    def drop(self, n: int) -> None:
        for _ in range(n):
            fs = self._segments.popleft()
            os.close(fs.fd)
            fs.path.unlink(missing_ok=True)
        del self._firsts[:n]

    def read(self, first: int, count: int) -> list[Record]:
        out: list[Record] = []
        i = bisect.bisect_right(self._firsts, first) - 1
        seq = first
        try:
            while len(out) < count and 0 <= i < len(self._segments):
                fs = self._segments[i]
                lo = seq - fs.first
                hi = min(len(fs.offsets), lo + count - len(out))
                if lo < hi:
                    start = fs.offsets[lo]
                    end = fs.offsets[hi] if hi < len(fs.offsets) else fs.size
                    data = os.pread(fs.fd, end - start, start)
                    pos = 0
                    for _ in range(hi - lo):
                        length, _crc, s, ingest = _RECORD.unpack_from(data, pos)
                        body = pos + _RECORD.size
                        out.append((s, ingest, data[body : body + length]))
                        pos = body + length
                    seq += hi - lo
                i += 1
        except (OSError, struct.error) as exc:
            raise StoreError(f"cannot read stream file in {self.directory}: {exc}") from exc
        return out

    def sync(self) -> None:
        if self._dirty and self._segments:
            self._dirty = False
            try:
                os.fsync(self._segments[-1].fd)
            except OSError as exc:
                raise StoreError(f"cannot fsync in {self.directory}: {exc}") from exc

    def save_definition(self, wire: dict[str, Any]) -> None:
        _write_json(self.directory / DEFINITION_FILE, wire, durable=True)

    def save_progress(self, progress: dict[str, int]) -> None:
        # not fsynced: a progress lost to a power cut only re-exports (a duplicate)
        _write_json(self.directory / EXPORTS_FILE, progress, durable=False)

    def load_progress(self) -> dict[str, int]:
        try:
            value = json.loads((self.directory / EXPORTS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(value, dict):
            return {}
        return {str(k): int(v) for k, v in value.items() if isinstance(v, int)}

    def destroy(self) -> None:
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def close(self) -> None:
        while self._segments:
            os.close(self._segments.popleft().fd)
        self._firsts.clear()


def load_definition(directory: Path) -> dict[str, Any]:
    try:
        value = json.loads((directory / DEFINITION_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {directory / DEFINITION_FILE}: {exc}") from exc
    if not isinstance(value, dict):
        raise StoreError(f"{directory / DEFINITION_FILE} is not a definition")
    return value
