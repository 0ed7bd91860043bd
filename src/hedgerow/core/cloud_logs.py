"""The core's and its functions' logs to the cloud, through a spool of their own.

``LogGate`` (pure: levels and the rate cap, time injected) decides which records go;
``parse_function_output`` (pure) cuts a function's stdout/stderr into records, keeping a
traceback with the line that announced it; ``LogShipper`` gathers admitted records and
appends them to the log spool in batches (``hedgerow.contract.logs.LogBatch``, one spool
record per batch), which the cloud connector drains over the same MQTT link as telemetry.

The log spool is separate from the telemetry spool, with its own quota (``[cloud_logs]
spool_bytes``, oldest dropped first): a log flood cannot push telemetry out, and a
telemetry backlog cannot stall the logs. Above the rate cap (``rate`` records a second,
``burst`` at once) records are dropped and counted; the count travels in the next batch
(``dropped``) and in the heartbeat.

``CloudLogHandler`` is the ``logging`` handler on the core's root logger; records of the
shipper's own machinery (the spool, the connector) are shipped like any other.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from hedgerow.clock import Clock, MonotonicClock
from hedgerow.contract.logs import (
    CORE_SOURCE,
    FUNCTION_PREFIX,
    LEVELS,
    LogBatch,
    LogRecord,
    cut,
)
from hedgerow.contract.topics import CoreLeaf, core_topic

from .spool import Spool

log = logging.getLogger(__name__)

#: Seconds between two batches (a function's traceback is in the cloud well within 2 s).
FLUSH_S: Final = 0.2
#: Records and bytes of message text in one batch (one MQTT message).
BATCH_RECORDS: Final = 500
BATCH_BYTES: Final = 64 * 1024
#: Records waiting in memory for the next batch; beyond it they are dropped and counted.
MAX_PENDING: Final = 20_000


@dataclass
class LogGate:
    """Which records go to the cloud: a level per source, then a token bucket.

    ``level`` applies to the core's own records, ``function_level`` to functions without
    an entry in ``function_levels``. The bucket holds ``burst`` tokens, refilled at
    ``rate`` a second; a record that finds it empty is dropped and counted.
    """

    level: int = LEVELS["INFO"]
    function_level: int = LEVELS["INFO"]
    function_levels: Mapping[str, int] = field(default_factory=dict)
    rate: float = 200.0
    burst: int = 1000
    clock: Clock = field(default_factory=MonotonicClock)
    dropped: int = 0  # over the rate cap, in all
    _tokens: float = field(init=False)
    _refilled: float = field(init=False)

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)
        self._refilled = self.clock.now()

    def threshold(self, source: str) -> int:
        if source.startswith(FUNCTION_PREFIX):
            name = source[len(FUNCTION_PREFIX) :]
            return self.function_levels.get(name, self.function_level)
        return self.level

    def _refill(self) -> None:
        now = self.clock.now()
        elapsed = now - self._refilled
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
            self._refilled = now

    def exhausted(self) -> bool:
        """No token left now: whatever comes is dropped (a flood's lines are then only
        counted, not parsed)."""
        self._refill()
        return self._tokens < 1.0

    def admit(self, level: int, source: str) -> bool:
        """True: ship it. False: below its level (not counted) or over the cap (counted)."""
        if level < self.threshold(source):
            return False
        self._refill()
        if self._tokens < 1.0:
            self.dropped += 1
            return False
        self._tokens -= 1.0
        return True


#: ``%(asctime)s %(levelname)s NAME[PID] %(name)s: %(message)s`` — the worker's format.
_WORKER_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (?P<level>[A-Z]+) \S+\[\d+\] (?P<logger>[^:]*): "
    r"(?P<message>.*)$"
)
_TRACEBACK = "Traceback (most recent call last):"


@dataclass
class OutputLine:
    level: int
    logger: str
    message: str


def parse_function_output(text: str) -> list[OutputLine]:
    """A function's output as records: a line in the worker's ``logging`` format starts a
    record with its level, and a traceback right after it (``logger.exception``) or
    indented lines stay with it; a traceback after anything else is an ERROR record of its
    own (header, indented lines and the final ``Error: ...`` line together); other lines
    (``print``) are INFO records of their own."""
    records: list[OutputLine] = []
    joins = False  # the last record is a logging line that a traceback may follow
    in_traceback = False
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _WORKER_LINE.match(line)
        if match is not None:
            level = LEVELS.get(match["level"], LEVELS["INFO"])
            records.append(OutputLine(level, match["logger"], match["message"]))
            joins, in_traceback = True, False
            continue
        if line.startswith(_TRACEBACK):
            if records and joins:
                records[-1].message += "\n" + line
                records[-1].level = max(records[-1].level, LEVELS["ERROR"])
            else:
                records.append(OutputLine(LEVELS["ERROR"], "", line))
            joins, in_traceback = False, True
            continue
        if records and (in_traceback or line[:1].isspace()):
            records[-1].message += "\n" + line
            if not line[:1].isspace():
                in_traceback = False  # "ValueError: ..." ends it
            continue
        records.append(OutputLine(LEVELS["INFO"], "", line))
        joins = in_traceback = False
    return records


class LogShipper:
    """Admitted records → batches in the log spool (``flush``; ``run`` flushes every
    ``FLUSH_S``). ``add`` may be called from any thread (``logging`` handlers are)."""

    def __init__(
        self,
        core: str,
        spool: Spool,
        gate: LogGate,
        *,
        wake: Callable[[], None] = lambda: None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.topic = core_topic(core, CoreLeaf.LOGS)
        self.spool = spool
        self.gate = gate
        self.wake = wake
        self.wall = wall
        self._pending: deque[LogRecord] = deque()
        self._partial: dict[str, str] = {}  # a function's unfinished last line
        self.shipped = 0  # records appended to the spool
        self.overflowed = 0  # dropped because MAX_PENDING records were waiting
        self._reported_dropped = 0

    def add(self, level: int, source: str, logger: str, message: str) -> None:
        if not self.gate.admit(level, source):
            return
        if len(self._pending) >= MAX_PENDING:
            self.overflowed += 1
            return
        self._pending.append(LogRecord(self.wall(), level, source, logger, cut(message)))

    def function_output(self, function: str, chunk: bytes) -> None:
        """A chunk of a function's output: complete lines become records now, an
        unfinished last line waits for the rest."""
        if self.gate.exhausted():  # over the cap: count the lines, parse nothing
            head, newline, tail = chunk.rpartition(b"\n")
            if newline:
                self.gate.dropped += head.count(b"\n") + 1
                self._partial.pop(function, None)
                chunk = tail
            if chunk:
                self._partial[function] = self._partial.get(function, "") + chunk.decode(
                    errors="replace"
                )
            return
        text = self._partial.pop(function, "") + chunk.decode(errors="replace")
        complete, sep, rest = text.rpartition("\n")
        if not sep:
            complete, rest = "", text
        if rest:
            self._partial[function] = rest
        source = FUNCTION_PREFIX + function
        for line in parse_function_output(complete):
            self.add(line.level, source, line.logger, line.message)

    @property
    def dropped(self) -> int:
        return self.gate.dropped + self.overflowed

    def flush(self) -> int:
        """Append what is pending as batches; returns how many records went."""
        if not self._pending:
            return 0
        items: list[tuple[str, bytes, int]] = []
        sent = 0
        while self._pending:
            records: list[LogRecord] = []
            size = 0
            while self._pending and len(records) < BATCH_RECORDS and size < BATCH_BYTES:
                record = self._pending.popleft()
                records.append(record)
                size += len(record.message) + len(record.logger) + 32
            dropped = self.dropped - self._reported_dropped
            self._reported_dropped += dropped
            items.append((self.topic, LogBatch(tuple(records), dropped).to_json(), 1))
            sent += len(records)
        self.spool.append_many(items)
        self.shipped += sent
        self.wake()
        return sent

    def counters(self) -> dict[str, int]:
        stats = self.spool.stats()
        return {
            "logs_shipped": self.shipped,
            "logs_dropped": self.dropped,
            "logs_spool": stats.depth,
            "logs_spool_dropped": stats.dropped_oldest + stats.dropped_newest,
        }

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                self.flush()
            except Exception as exc:  # a full disk: the records are lost, the core lives
                self._pending.clear()
                log.warning("core.cloud_logs.flush_failed error=%s", exc)


class CloudLogHandler(logging.Handler):
    """The core's ``logging`` records into the shipper (source ``core``)."""

    def __init__(self, shipper: LogShipper) -> None:
        super().__init__(logging.DEBUG)
        self.shipper = shipper
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.shipper.add(record.levelno, CORE_SOURCE, record.name, message)
