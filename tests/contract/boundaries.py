"""Function entries at each limit of ``hedgerow.contract.functions.LIMITS``.

``cases()`` gives, for every limit, an entry at its lowest and highest allowed measure and
one just outside on each side (where such a value exists). A limit added to the contract
without a builder here makes ``cases()`` fail, so no limit goes untested.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from hedgerow.contract.functions import LIMITS, Limit

BASE: dict[str, Any] = {
    "name": "limits",
    "handler": "temp_correct.handler",
    "runtime": "python",
    "pinned": False,
    "memory_mb": 128,
    "timeout_s": 3.0,
    "max_concurrency": 1,
    "environment": {},
    "encoding": "json",
    "run_as": None,
}


def _environment_of_size(total: int) -> dict[str, str]:
    """Variables whose names and values add up to exactly ``total`` characters (each value
    under the per-value limit, so only the total is at stake)."""
    if total <= 3:
        return {"V" * total: ""} if total else {}
    count = max(1, math.ceil(total / 4000))
    keys = [f"V{i:02d}" for i in range(count)]
    share, extra = divmod(total - 3 * count, count)
    return {k: "x" * (share + (1 if i < extra else 0)) for i, k in enumerate(keys)}


def _name(n: float) -> dict[str, Any]:
    return {"name": "f" * int(n)}


BUILDERS: dict[str, Callable[[float], dict[str, Any]]] = {
    "name.length": _name,
    "version": lambda n: {"version": int(n)},
    "memory_mb": lambda n: {"memory_mb": int(n)},
    "timeout_s": lambda n: {"timeout_s": n},
    "max_concurrency": lambda n: {"max_concurrency": int(n)},
    "environment.entries": lambda n: {"environment": {f"V{i}": "1" for i in range(int(n))}},
    "environment.value": lambda n: {"environment": {"V": "x" * int(n)}},
    "environment.size": lambda n: {"environment": _environment_of_size(int(n))},
    "run_as.length": lambda n: {"run_as": "u" * int(n)},
}


@dataclass(frozen=True)
class Case:
    limit: Limit
    measure: float
    allowed: bool
    entry: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.limit.name}={self.measure!r}"


def _outside(limit: Limit) -> tuple[float | None, float | None]:
    if isinstance(limit.low, float) or isinstance(limit.high, float):
        return math.nextafter(limit.low, -math.inf), math.nextafter(limit.high, math.inf)
    below = limit.low - 1
    return (below if below >= 0 else None), limit.high + 1


def cases() -> Iterator[Case]:
    for name, limit in LIMITS.items():
        build = BUILDERS[name]  # a KeyError here: a new limit needs a builder
        below, above = _outside(limit)
        for measure, allowed in (
            (limit.low, True),
            (limit.high, True),
            (below, False),
            (above, False),
        ):
            if measure is not None:
                yield Case(limit, measure, allowed, {**BASE, **build(measure)})
