"""Which time partitions of the telemetry table to create and which to drop.

On PostgreSQL ``messages`` is partitioned by RANGE on ``ts`` (epoch seconds), one
partition per ``width_s`` (a day by default), aligned on multiples of the width since
the epoch (UTC midnights for days), plus a DEFAULT partition for everything else.
``plan(now, existing, ...)`` says which partitions to create (the one holding ``now``
and ``ahead`` more) and which lie wholly before the retention cutoff (drop them: a
``DROP TABLE`` frees a day of rows at once, no ``DELETE``, no bloat). Rows of a
partition straddling the cutoff, and those of the default partition, are deleted row
by row by the caller.

Pure: no database. ``storage/messages.py`` reads the existing partitions
(``parse_bound`` reads PostgreSQL's ``pg_get_expr(relpartbound)``), runs the plan and
logs what it did.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

DAY_S = 86_400
#: The default width of a partition: one UTC day.
DEFAULT_WIDTH_S = DAY_S
#: Partitions created ahead of the one holding "now" (ingest never waits for DDL at
#: midnight, and a missed day of maintenance costs nothing).
DEFAULT_AHEAD = 3
#: Names of range partitions: ``messages_p20261204`` (the UTC date the range starts).
PREFIX = "messages_p"
DEFAULT_PARTITION = "messages_default"

_BOUND = re.compile(r"^FOR VALUES FROM \('?([-+0-9.eE]+)'?\) TO \('?([-+0-9.eE]+)'?\)$")


class PartitionPlanError(ValueError):
    """A width or a bound the plan cannot use (the message says which and why)."""


@dataclass(frozen=True, order=True)
class Partition:
    """A range partition holding ``start <= ts < end``."""

    start: float
    end: float
    name: str

    def overlaps(self, start: float, end: float) -> bool:
        return self.start < end and start < self.end


@dataclass(frozen=True)
class Plan:
    create: tuple[Partition, ...]
    drop: tuple[Partition, ...]

    @property
    def empty(self) -> bool:
        return not self.create and not self.drop


def partition_name(start: float, width_s: int = DEFAULT_WIDTH_S) -> str:
    """``messages_pYYYYMMDD`` for day-aligned ranges; ``_HHMM`` is added for narrower ones."""
    moment = dt.datetime.fromtimestamp(start, dt.UTC)
    name = PREFIX + moment.strftime("%Y%m%d")
    if width_s % DAY_S:
        name += moment.strftime("_%H%M%S")
    return name


def partition_for(ts: float, width_s: int = DEFAULT_WIDTH_S) -> Partition:
    """The aligned partition that holds ``ts``."""
    _check_width(width_s)
    start = math.floor(ts / width_s) * width_s
    return Partition(float(start), float(start + width_s), partition_name(start, width_s))


def parse_bound(name: str, bound: str) -> Partition | None:
    """A partition from PostgreSQL's ``pg_get_expr(relpartbound, oid)``; None for DEFAULT."""
    if bound.strip() == "DEFAULT":
        return None
    match = _BOUND.match(bound.strip())
    if match is None:
        raise PartitionPlanError(
            f"partition {name} has bound {bound!r}, not FOR VALUES FROM (x) TO (y) on ts: "
            "attach only ranges of epoch seconds to messages"
        )
    return Partition(float(match.group(1)), float(match.group(2)), name)


def plan(
    now: float,
    existing: Iterable[Partition],
    *,
    cutoff: float | None = None,
    width_s: int = DEFAULT_WIDTH_S,
    ahead: int = DEFAULT_AHEAD,
) -> Plan:
    """Partitions to create (the one holding ``now`` and ``ahead`` after it, unless one that
    overlaps already exists) and to drop (every existing one that ends at or before
    ``cutoff``: each of its rows is older than retention). Creation never reaches back
    before ``cutoff``."""
    _check_width(width_s)
    if ahead < 0:
        raise PartitionPlanError(f"ahead must be 0 or more, not {ahead}")
    existing = sorted(existing)
    drop = tuple(p for p in existing if cutoff is not None and p.end <= cutoff)
    create: list[Partition] = []
    first = partition_for(now, width_s)
    for step in range(ahead + 1):
        start = first.start + step * width_s
        wanted = Partition(start, start + width_s, partition_name(start, width_s))
        if cutoff is not None and wanted.end <= cutoff:
            continue
        if any(p.overlaps(wanted.start, wanted.end) for p in existing):
            continue
        create.append(wanted)
    return Plan(tuple(create), drop)


def covering(timestamps: Iterable[float], width_s: int = DEFAULT_WIDTH_S) -> list[Partition]:
    """The aligned partitions holding each of ``timestamps`` (the migration's days)."""
    return sorted({partition_for(ts, width_s) for ts in timestamps})


def _check_width(width_s: int) -> None:
    if width_s < 3600 or (DAY_S % width_s and width_s % DAY_S):
        raise PartitionPlanError(
            f"partition width {width_s} s: use at least an hour that divides a day evenly, or whole days"
        )
