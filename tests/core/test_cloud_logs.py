"""The core's logs to the cloud, without sockets: levels, the rate cap (a ManualClock),
function output cut into records with whole tracebacks, batches in the log spool, and the
connector draining the log spool beside telemetry."""

from __future__ import annotations

import logging

import pytest

from hedgerow.clock import ManualClock
from hedgerow.contract.logs import LEVELS, LogBatch
from hedgerow.core.cloud_logs import (
    BATCH_RECORDS,
    CloudLogHandler,
    LogGate,
    LogShipper,
    parse_function_output,
)
from hedgerow.core.config import parse_config
from hedgerow.core.errors import ConfigError
from hedgerow.core.spool import MemorySpool

WORKER_LINE = "2026-12-04 17:00:00,123 {level} fn[42] {logger}: {message}"


def test_levels_per_source_then_the_rate_cap_drops_and_counts() -> None:
    clock = ManualClock()
    gate = LogGate(
        level=LEVELS["WARNING"],
        function_level=LEVELS["INFO"],
        function_levels={"chatty": LEVELS["DEBUG"], "quiet": LEVELS["ERROR"]},
        rate=10.0,
        burst=5,
        clock=clock,
    )
    assert not gate.admit(LEVELS["INFO"], "core")  # below the core's level: not counted
    assert not gate.admit(LEVELS["WARNING"], "function:quiet")
    assert gate.admit(LEVELS["DEBUG"], "function:chatty")
    assert gate.dropped == 0
    admitted = sum(gate.admit(LEVELS["ERROR"], "function:f") for _ in range(10))
    assert admitted == 4 and gate.dropped == 6  # the burst (5, one used above), then none
    clock.advance(0.5)  # 5 tokens back at 10 a second
    assert sum(gate.admit(LEVELS["ERROR"], "core") for _ in range(10)) == 5
    assert gate.dropped == 11
    clock.advance(100)  # never more than the burst
    assert sum(gate.admit(LEVELS["ERROR"], "core") for _ in range(10)) == 5


def test_function_output_keeps_a_traceback_with_its_record() -> None:
    text = "\n".join([
        WORKER_LINE.format(level="INFO", logger="root", message="starting"),
        "plain print",
        WORKER_LINE.format(level="ERROR", logger="hedgerow.functions.worker",
                           message="handler_failed topic=cmd/x"),
        "Traceback (most recent call last):",
        '  File "fn.py", line 2, in handler',
        '    raise ValueError("boom")',
        "ValueError: boom",
        "after the traceback",
        "Traceback (most recent call last):",
        '  File "t.py", line 1, in run',
        "KeyError: 'k'",
    ])  # fmt: skip
    records = parse_function_output(text)
    assert [(r.level, r.logger) for r in records] == [
        (20, "root"), (20, ""), (40, "hedgerow.functions.worker"), (20, ""), (40, ""),
    ]  # fmt: skip
    assert records[2].message.startswith("handler_failed topic=cmd/x\nTraceback")
    assert records[2].message.endswith("ValueError: boom")
    assert records[3].message == "after the traceback"
    assert records[4].message.endswith("KeyError: 'k'")


def test_the_shipper_batches_into_the_spool_with_the_dropped_count() -> None:
    clock = ManualClock()
    spool = MemorySpool()
    woken: list[int] = []
    shipper = LogShipper(
        "pi-1",
        spool,
        LogGate(rate=1.0, burst=BATCH_RECORDS + 10, clock=clock),
        wake=lambda: woken.append(1),
        wall=lambda: 1000.0,
    )
    shipper.function_output("fn", b"first line\nsecond ")  # the unfinished line waits
    shipper.function_output("fn", b"half\n")
    for i in range(BATCH_RECORDS + 20):
        shipper.add(LEVELS["INFO"], "core", "hedgerow.core", f"line {i}")
    assert shipper.flush() == BATCH_RECORDS + 10
    assert woken == [1]
    records = spool.peek(0, 10)
    assert [r.topic for r in records] == ["$hedgerow/cores/pi-1/logs"] * 2
    first, second = (LogBatch.from_json(r.payload) for r in records)
    assert [r.message for r in first.records[:2]] == ["first line", "second half"]
    assert first.records[0].source == "function:fn" and first.records[0].ts == 1000.0
    assert len(first.records) == BATCH_RECORDS and first.dropped == 12
    assert second.dropped == 0 and second.records[-1].message == f"line {BATCH_RECORDS + 7}"
    assert shipper.flush() == 0
    counters = shipper.counters()
    assert counters["logs_dropped"] == 12 and counters["logs_shipped"] == BATCH_RECORDS + 10


def test_the_handler_ships_the_cores_records_with_their_traceback() -> None:
    spool = MemorySpool()
    shipper = LogShipper("pi-1", spool, LogGate())
    handler = CloudLogHandler(shipper)
    logger = logging.getLogger("hedgerow.core.test_cloud_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        try:
            raise RuntimeError("spool broke")
        except RuntimeError:
            logger.exception("core.test.failed what=%s", "spool")
        logger.info("core.test.fine")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    shipper.flush()
    (batch,) = [LogBatch.from_json(r.payload) for r in spool.peek(0, 10)]
    failed, fine = batch.records
    assert failed.level == 40 and failed.logger == "hedgerow.core.test_cloud_logs"
    assert failed.message.startswith("core.test.failed what=spool\nTraceback")
    assert "RuntimeError: spool broke" in failed.message
    assert fine.message == "core.test.fine" and fine.source == "core"


def test_the_config_names_a_wrong_level(tmp_path: object) -> None:
    base = '[core]\nname = "pi-1"\ngroup = "g"\n[cloud]\nhttps = "https://h:8443"\nmqtt = "mqtts://h:8884"\n'
    config = parse_config(
        base + '[cloud_logs]\nlevel = "warning"\nfunction_levels = ["fn=DEBUG"]\nrate = 5\n',
        default_data_dir=__import__("pathlib").Path("/tmp/x"),
    )
    assert config.cloud_logs.levels() == {"fn": 10} and config.cloud_logs.rate == 5.0
    for bad, field in (
        ('level = "LOUD"', "level"),
        ('function_levels = ["fn"]', "function_levels"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config(
                base + f"[cloud_logs]\n{bad}\n",
                default_data_dir=__import__("pathlib").Path("/tmp/x"),
            )
        assert field in str(info.value)


def test_over_the_cap_a_functions_lines_are_counted_without_parsing() -> None:
    clock = ManualClock()
    spool = MemorySpool()
    shipper = LogShipper("pi-1", spool, LogGate(rate=10.0, burst=2, clock=clock))
    shipper.function_output("fn", b"a\nb\nc\nd\ne\npart")  # 2 go, the other 3 dropped
    assert shipper.gate.exhausted()
    shipper.function_output("fn", b"ial\n" + b"x\n" * 1000 + b"tail")
    assert shipper.dropped == 3 + 1001  # counted whole lines, the unfinished one waits
    clock.advance(1.0)  # 10 tokens again, burst 2
    shipper.function_output("fn", b" end\n")
    shipper.flush()
    messages = [r.message for r in LogBatch.from_json(spool.peek(0, 1)[0].payload).records]
    assert messages == ["a", "b", "tail end"]
