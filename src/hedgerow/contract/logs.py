"""Log batches: core → cloud on ``$hedgerow/cores/{core}/logs`` (QoS 1, through the
core's log spool, so nothing written while the cloud is away is lost).

One message carries many records in the order they were written. ``source`` is ``core``
(the core's own ``logging`` records) or ``function:NAME`` (a function's stdout, stderr and
``logging`` output). ``dropped`` counts the records the core's rate cap discarded since the
previous batch, so the cloud can say how many are missing. Levels are the numbers of the
standard ``logging`` module (10 DEBUG … 50 CRITICAL).

``LogLevels``: cloud → core on ``$hedgerow/cores/{core}/log-levels`` (QoS 1, retained): the
levels set from the cloud for the core's own records and per function, by name. They win
over the core's ``[cloud_logs]`` levels, apply at once (no deployment, no restart) and are
kept by the core across restarts; an empty retained message, or a ``LogLevels`` naming
nothing, gives the config file's levels back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from . import _wire
from .errors import InvalidMessage

#: The version of the log batch this release writes and reads.
SCHEMA: Final = 1
#: Longest message text a record carries (longer ones are cut, marked with an ellipsis).
MAX_MESSAGE_CHARS: Final = 16 * 1024
#: Level names and their numbers (as the ``logging`` module has them).
LEVELS: Final = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
CORE_SOURCE: Final = "core"
FUNCTION_PREFIX: Final = "function:"


def level_number(name: str) -> int:
    """``"warning"`` → 30; ``ValueError`` naming the known levels otherwise."""
    try:
        return LEVELS[name.upper()]
    except KeyError:
        raise ValueError(f"{name!r} is not a log level: use one of {', '.join(LEVELS)}") from None


def level_name(number: int) -> str:
    """30 → ``"WARNING"`` (the nearest level at or below ``number``)."""
    best = "DEBUG"
    for name, value in LEVELS.items():
        if value <= number:
            best = name
    return best


def cut(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 1] + "…"


@dataclass(frozen=True, slots=True)
class LogRecord:
    ts: float  # epoch seconds, when the core saw the line
    level: int
    source: str  # "core" or "function:NAME"
    logger: str  # the logger's name ("" for raw stdout/stderr lines)
    message: str

    @property
    def function(self) -> str | None:
        if self.source.startswith(FUNCTION_PREFIX):
            return self.source[len(FUNCTION_PREFIX) :]
        return None

    def to_list(self) -> list[Any]:
        return [round(self.ts, 6), self.level, self.source, self.logger, self.message]


@dataclass(frozen=True, slots=True)
class LogBatch:
    records: tuple[LogRecord, ...]
    dropped: int = 0  # records the rate cap discarded before this batch
    schema: int = SCHEMA

    @classmethod
    def from_json(cls, payload: str | bytes) -> LogBatch:
        data = _wire.load_object(payload, "logs")
        schema = _wire.check_schema(data, SCHEMA)
        return cls(
            records=tuple(
                _record(item, i) for i, item in enumerate(_wire.objects(data, "records"))
            ),
            dropped=_wire.integer(data, "dropped"),
            schema=schema,
        )

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schema": self.schema,
            "records": [r.to_list() for r in self.records],
        }
        if self.dropped:
            body["dropped"] = self.dropped
        return body

    def to_json(self) -> bytes:
        return _wire.dumps(self.to_dict()).encode()


def _record(item: Any, index: int) -> LogRecord:
    """A record on the wire is ``[ts, level, source, logger, message]`` (compact: a log
    line costs its text and a few bytes)."""
    where = f"records[{index}]"
    if isinstance(item, Mapping) or not isinstance(item, list) or len(item) != 5:
        raise InvalidMessage(where, "must be [ts, level, source, logger, message]")
    ts, level, source, logger, message = item
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        raise InvalidMessage(f"{where}.ts", f"{ts!r}: must be a number")
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 100:
        raise InvalidMessage(f"{where}.level", f"{level!r}: must be an integer 0-100")
    if not isinstance(source, str) or not (
        source == CORE_SOURCE or (source.startswith(FUNCTION_PREFIX) and len(source) > 9)
    ):
        raise InvalidMessage(f"{where}.source", f"{source!r}: must be 'core' or 'function:NAME'")
    for key, value in (("logger", logger), ("message", message)):
        if not isinstance(value, str):
            raise InvalidMessage(f"{where}.{key}", f"{value!r}: must be a string")
    return LogRecord(float(ts), level, source, logger, cut(message))


@dataclass(frozen=True, slots=True)
class LogLevels:
    """The levels set from the cloud (``None`` and absent functions: the core's config)."""

    core: int | None = None
    functions: Mapping[str, int] = field(default_factory=dict)
    schema: int = SCHEMA

    @classmethod
    def from_json(cls, payload: str | bytes) -> LogLevels:
        """An empty payload (the cloud clearing its retained message) names nothing."""
        if not payload:
            return cls()
        data = _wire.load_object(payload, "log levels")
        schema = _wire.check_schema(data, SCHEMA)
        core = data.get("core")
        functions = data.get("functions") or {}
        if not isinstance(functions, Mapping):
            raise InvalidMessage("functions", "must be an object of function name: level")
        return cls(
            None if core is None else _level(core, "core"),
            {str(name): _level(value, f"functions.{name}") for name, value in functions.items()},
            schema,
        )

    def to_json(self) -> bytes:
        return _wire.dumps(
            {
                "schema": self.schema,
                "core": None if self.core is None else level_name(self.core),
                "functions": {n: level_name(v) for n, v in sorted(self.functions.items())},
            }
        ).encode()


def _level(value: Any, where: str) -> int:
    if not isinstance(value, str):
        raise InvalidMessage(where, f"{value!r}: must be a level name ({', '.join(LEVELS)})")
    try:
        return level_number(value)
    except ValueError as exc:
        raise InvalidMessage(where, str(exc)) from None
