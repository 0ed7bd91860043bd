"""What a deployment would change on a core (pure): the group's definition against the
deployment the core runs.

``plan_deployment(running, proposed)`` takes two deployment documents (parsed JSON, as
``deployments.build_document`` writes them; ``running`` is None for a core that runs
nothing yet) and says which functions start, stop or are replaced (with their versions),
which routes and things come and go, and whether the settings change. ``render`` gives
the lines ``hedgerow cloud deploy --dry-run`` prints, the console shows as drift, and a
redeploy of an older deployment reports as what it restores.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Document = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class FunctionChange:
    name: str
    before: int | None  # the running version (None: not running)
    after: int | None  # the version deployed (None: stopped)
    #: what differs besides the version, e.g. ("environment", "memory_mb")
    fields: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.before is None:
            return f"start function {self.name} v{self.after}"
        if self.after is None:
            return f"stop function {self.name} v{self.before}"
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"replace function {self.name} v{self.before} → v{self.after}{detail}"


@dataclass(frozen=True, slots=True)
class Route:
    source: str
    topic: str
    target: str

    def describe(self) -> str:
        return f"{self.source} {self.topic} → {self.target}"


@dataclass(frozen=True, slots=True)
class DeploymentPlan:
    running: str | None  # the deployment id the core runs
    functions: tuple[FunctionChange, ...] = ()
    routes_added: tuple[Route, ...] = ()
    routes_removed: tuple[Route, ...] = ()
    things_added: tuple[str, ...] = ()
    things_removed: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()  # names of settings that change
    #: industrial connectors: (name, "start" | "stop" | "replace")
    connectors: tuple[tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.functions or self.routes_added or self.routes_removed or self.connectors
                    or self.things_added or self.things_removed or self.settings)  # fmt: skip

    def render(self) -> list[str]:
        """One line per change, in the order they apply (routes first, then functions)."""
        lines = [f"+ route {r.describe()}" for r in self.routes_added]
        lines += [f"- route {r.describe()}" for r in self.routes_removed]
        for change in self.functions:
            mark = "+" if change.before is None else "-" if change.after is None else "~"
            lines.append(f"{mark} {change.describe()}")
        marks = {"start": "+", "stop": "-", "replace": "~"}
        lines += [f"{marks[what]} {what} connector {name}" for name, what in self.connectors]
        lines += [f"+ thing {t}" for t in self.things_added]
        lines += [f"- thing {t}" for t in self.things_removed]
        lines += [f"~ setting {s}" for s in self.settings]
        return lines or ["no changes: the core already runs this definition"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "empty": self.empty,
            "functions": [
                {"name": c.name, "before": c.before, "after": c.after, "fields": list(c.fields)}
                for c in self.functions
            ],
            "routes_added": [_route_dict(r) for r in self.routes_added],
            "routes_removed": [_route_dict(r) for r in self.routes_removed],
            "things_added": list(self.things_added),
            "things_removed": list(self.things_removed),
            "settings": list(self.settings),
            "connectors": [{"name": n, "change": c} for n, c in self.connectors],
            "lines": self.render(),
        }


def _route_dict(route: Route) -> dict[str, str]:
    return {"source": route.source, "topic": route.topic, "target": route.target}


#: fields that say nothing about what runs (the artifact's identity is its sha256)
_IGNORED_FUNCTION_FIELDS = frozenset({"version"})


def _functions(doc: Document | None) -> dict[str, Mapping[str, Any]]:
    return {str(f["name"]): f for f in (doc or {}).get("functions", ())}


def _routes(doc: Document | None) -> set[Route]:
    return {
        Route(str(s["source"]), str(s["topic"]), str(s["target"]))
        for s in (doc or {}).get("subscriptions", ())
    }


def _differing(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[str, ...]:
    keys = (set(before) | set(after)) - _IGNORED_FUNCTION_FIELDS
    return tuple(sorted(k for k in keys if _canon(before.get(k)) != _canon(after.get(k))))


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _version(entry: Mapping[str, Any]) -> int | None:
    value = entry.get("version")
    return value if isinstance(value, int) else None


def _sorted_routes(routes: Iterable[Route]) -> tuple[Route, ...]:
    return tuple(sorted(routes, key=lambda r: (r.source, r.topic, r.target)))


def _connectors(running: Document | None, proposed: Document) -> tuple[tuple[str, str], ...]:
    def entries(doc: Document | None) -> dict[str, str]:
        return {str(c["name"]): _canon(c) for c in (doc or {}).get("connectors", ())}

    before, after = entries(running), entries(proposed)
    changes = []
    for name in sorted(set(before) | set(after)):
        if name not in before:
            changes.append((name, "start"))
        elif name not in after:
            changes.append((name, "stop"))
        elif before[name] != after[name]:
            changes.append((name, "replace"))
    return tuple(changes)


def plan_deployment(running: Document | None, proposed: Document) -> DeploymentPlan:
    before, after = _functions(running), _functions(proposed)
    changes: list[FunctionChange] = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old is None and new is not None:
            changes.append(FunctionChange(name, None, _version(new)))
        elif new is None and old is not None:
            changes.append(FunctionChange(name, _version(old), None))
        elif old is not None and new is not None:
            fields = _differing(old, new)
            if fields or _version(old) != _version(new):
                changes.append(FunctionChange(name, _version(old), _version(new), fields))
    old_routes, new_routes = _routes(running), _routes(proposed)
    old_things = set((running or {}).get("things", ()))
    new_things = set(proposed.get("things", ()))
    old_settings = dict((running or {}).get("settings") or {})
    new_settings = dict(proposed.get("settings") or {})
    settings = tuple(
        sorted(
            k
            for k in set(old_settings) | set(new_settings)
            if old_settings.get(k) != new_settings.get(k)
        )  # fmt: skip
    )
    return DeploymentPlan(
        running=(running or {}).get("deployment_id"),
        functions=tuple(changes),
        routes_added=_sorted_routes(new_routes - old_routes),
        routes_removed=_sorted_routes(old_routes - new_routes),
        things_added=tuple(sorted(new_things - old_things)),
        things_removed=tuple(sorted(old_things - new_things)),
        settings=settings if running is not None else (),
        connectors=_connectors(running, proposed),
    )
