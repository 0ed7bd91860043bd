"""The deployment planner: what changes between two deployment documents (pure).

Used to log and report what a deployment does, and to decide whether the functions need to
be touched at all (a routes-only deployment keeps every function running).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Plan:
    start: tuple[str, ...]
    stop: tuple[str, ...]
    replace: tuple[str, ...]
    keep: tuple[str, ...]
    routes_changed: bool
    things_changed: bool

    @property
    def functions_changed(self) -> bool:
        return bool(self.start or self.stop or self.replace)

    def summary(self) -> str:
        parts = [f"{k}={','.join(v)}" for k, v in (("start", self.start), ("stop", self.stop),
                 ("replace", self.replace)) if v]  # fmt: skip
        if self.routes_changed:
            parts.append("routes")
        if self.things_changed:
            parts.append("things")
        return " ".join(parts) or "no changes"


def _functions(doc: Mapping[str, Any] | None) -> dict[str, str]:
    if not doc:
        return {}
    out: dict[str, str] = {}
    for entry in doc.get("functions", ()):
        out[str(entry["name"])] = json.dumps(entry, sort_keys=True)
    return out


def _canon(items: Sequence[Any] | None) -> list[str]:
    return sorted(json.dumps(i, sort_keys=True) for i in items or ())


def plan(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> Plan:
    before = _functions(old)
    after = _functions(new)
    start = tuple(sorted(n for n in after if n not in before))
    stop = tuple(sorted(n for n in before if n not in after))
    replace = tuple(sorted(n for n in after if n in before and before[n] != after[n]))
    keep = tuple(sorted(n for n in after if n in before and before[n] == after[n]))
    old_doc = old or {}
    return Plan(
        start=start,
        stop=stop,
        replace=replace,
        keep=keep,
        routes_changed=_canon(old_doc.get("subscriptions")) != _canon(new.get("subscriptions"))
        or old_doc.get("settings") != new.get("settings"),
        things_changed=_canon(old_doc.get("things")) != _canon(new.get("things")),
    )
