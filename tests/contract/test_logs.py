"""The log batch (core → cloud) and the heartbeat's health fields: round trips, compact
records, refusals naming the field, unknown versions refused."""

from __future__ import annotations

import json

import pytest

from hedgerow.contract import Heartbeat, InvalidMessage, LogBatch, LogRecord, UnsupportedSchema
from hedgerow.contract.logs import MAX_MESSAGE_CHARS, LogLevels, level_name, level_number


def test_a_batch_round_trips_in_order_and_compactly() -> None:
    batch = LogBatch(
        (
            LogRecord(1.5, 40, "function:fn", "", "Traceback ...\nValueError: x"),
            LogRecord(2.0, 20, "core", "hedgerow.core.connector", "connected"),
        ),
        dropped=3,
    )
    wire = json.loads(batch.to_json())
    assert wire["records"][1] == [2.0, 20, "core", "hedgerow.core.connector", "connected"]
    assert LogBatch.from_json(batch.to_json()) == batch
    assert batch.records[0].function == "fn" and batch.records[1].function is None
    long = LogBatch.from_json(json.dumps({"records": [[0, 20, "core", "", "x" * 20000]]}))
    assert len(long.records[0].message) == MAX_MESSAGE_CHARS


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"records": [[0, 20, "core", ""]]}, "records[0]"),
        ({"records": [["now", 20, "core", "", "m"]]}, "records[0].ts"),
        ({"records": [[0, 20, "cloud", "", "m"]]}, "records[0].source"),
        ({"records": [[0, 20, "function:", "", "m"]]}, "records[0].source"),
        ({"records": [[0, 500, "core", "", "m"]]}, "records[0].level"),
        ({"records": [], "dropped": -1}, "dropped"),
    ],
)
def test_a_bad_batch_names_the_field(payload: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        LogBatch.from_json(json.dumps(payload))
    assert info.value.field == field


def test_an_unknown_version_is_refused() -> None:
    with pytest.raises(UnsupportedSchema):
        LogBatch.from_json('{"schema": 2, "records": []}')


def test_levels() -> None:
    assert level_number("warning") == 30 and level_name(45) == "ERROR"
    with pytest.raises(ValueError, match="DEBUG, INFO"):
        level_number("LOUD")


def test_the_heartbeats_health_fields() -> None:
    beat = Heartbeat(
        version="1", host={"cpu": 12.5, "memory": 40.0, "disk": 71.2},
        spool_age=42, spool_bytes=100, spool_max_bytes=1000,
    )  # fmt: skip
    wire = json.loads(beat.to_json())
    assert wire["host"] == {"cpu": 12.5, "memory": 40.0, "disk": 71.2}
    assert wire["spool_age"] == 42 and wire["spool_max_bytes"] == 1000
    assert Heartbeat.from_json(beat.to_json()) == beat
    assert "host" not in json.loads(Heartbeat(version="1").to_json())
    with pytest.raises(InvalidMessage) as info:
        Heartbeat.from_json('{"host": {"cpu": "hot"}}')
    assert info.value.field == "host"


def test_log_levels_round_trip_by_name_and_an_empty_message_names_nothing() -> None:
    levels = LogLevels(core=30, functions={"chatty": 10, "quiet": 40})
    wire = json.loads(levels.to_json())
    assert wire == {
        "schema": 1, "core": "WARNING", "functions": {"chatty": "DEBUG", "quiet": "ERROR"},
    }  # fmt: skip
    assert LogLevels.from_json(levels.to_json()) == levels
    assert LogLevels.from_json(b"") == LogLevels()  # the cloud cleared its retained message
    assert LogLevels.from_json(b'{"core": null}') == LogLevels()  # schema 1 without the field
    with pytest.raises(InvalidMessage) as bad:
        LogLevels.from_json(b'{"functions": {"chatty": "LOUD"}}')
    assert bad.value.field == "functions.chatty" and "DEBUG" in bad.value.reason
    with pytest.raises(InvalidMessage) as bad:
        LogLevels.from_json(b'{"core": 10}')
    assert bad.value.field == "core"
    with pytest.raises(UnsupportedSchema):
        LogLevels.from_json(b'{"schema": 2}')
