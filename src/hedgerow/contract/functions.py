"""One function specification and one set of limits, for the cloud and the core.

The cloud checks a function against these rules when it is created or changed
(``cloud/domain.py``), the core again when a deployment document arrives
(``functions/spec.py``): whatever the cloud accepts, the core runs. ``LIMITS`` lists every
numeric and size limit by name (the contract tests walk it at each boundary).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Self

from .errors import InvalidFunction

Runtime = Literal["python", "greengrass-v1"]
Encoding = Literal["json", "binary"]

RUNTIMES: Final = ("python", "greengrass-v1")
ENCODINGS: Final = ("json", "binary")


@dataclass(frozen=True, slots=True)
class Limit:
    """A bound on one field: ``low <= measure(value) <= high``, in ``unit``."""

    name: str  # the limit's own name ("environment.entries")
    field: str  # the field it bounds ("environment")
    low: int | float
    high: int | float
    unit: str

    def allows(self, measure: int | float) -> bool:
        return self.low <= measure <= self.high

    def describe(self) -> str:
        return f"{self.low}..{self.high} {self.unit}"


NAME_LENGTH: Final = Limit("name.length", "name", 1, 64, "characters")
VERSION: Final = Limit("version", "version", 0, 2**31 - 1, "")
MEMORY_MB: Final = Limit("memory_mb", "memory_mb", 32, 16384, "MB")
TIMEOUT_S: Final = Limit("timeout_s", "timeout_s", 0.01, 900.0, "seconds")
CONCURRENCY: Final = Limit("max_concurrency", "max_concurrency", 1, 64, "workers")
ENVIRONMENT_ENTRIES: Final = Limit("environment.entries", "environment", 0, 64, "variables")
ENVIRONMENT_VALUE: Final = Limit("environment.value", "environment", 0, 4096, "characters")
ENVIRONMENT_SIZE: Final = Limit(
    "environment.size", "environment", 0, 64 * 1024, "characters (names and values)"
)
RUN_AS_NAME: Final = Limit("run_as.length", "run_as", 1, 32, "characters per name")

#: Every limit by name.
LIMITS: Final[Mapping[str, Limit]] = {
    limit.name: limit
    for limit in (
        NAME_LENGTH,
        VERSION,
        MEMORY_MB,
        TIMEOUT_S,
        CONCURRENCY,
        ENVIRONMENT_ENTRIES,
        ENVIRONMENT_VALUE,
        ENVIRONMENT_SIZE,
        RUN_AS_NAME,
    )
}

DEFAULT_MEMORY_MB: Final = 128
DEFAULT_TIMEOUT_S: Final = 3.0
#: Environment variables the core sets itself; a function may not set them.
RESERVED_ENV_PREFIXES: Final = ("HEDGEROW_",)

NAME_RULE: Final = (
    f"use {NAME_LENGTH.low}-{NAME_LENGTH.high} letters, digits, '_', '.' or '-', "
    "starting with a letter or digit"
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_HANDLER = re.compile(rf"{_IDENT}(\.{_IDENT})+")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: V1 local resources (device files and volumes), OS groups and secret names per function.
#: A resource entry is checked here for shape (an object with a ``source`` path); its
#: kinds, paths and access are ``hedgerow.functions.resources``' rules, applied by the
#: cloud when the function is stored and by the core's runtime when it is deployed.
MAX_RESOURCES: Final = 32
MAX_GROUPS: Final = 16
MAX_SECRETS: Final = 32
_GROUP = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")
_SECRET = re.compile(r"[A-Za-z0-9_.\-+=@]{1,128}")

#: The fields of a function entry, in document order (``artifact`` is the deployment's).
FIELDS: Final = (
    "name",
    "version",
    "handler",
    "runtime",
    "pinned",
    "memory_mb",
    "timeout_s",
    "max_concurrency",
    "environment",
    "encoding",
    "run_as",
    "resources",
    "groups",
    "secrets",
)


def check_function_name(value: object) -> str:
    """The function's name, or ``InvalidFunction`` (field ``name``)."""
    if (
        not isinstance(value, str)
        or not NAME_LENGTH.allows(len(value))
        or not _NAME.fullmatch(value)
    ):
        raise InvalidFunction("name", f"invalid function name {value!r}: {NAME_RULE}")
    return value


@dataclass(frozen=True)
class FunctionDefinition:
    """One function's specification, valid by construction (``InvalidFunction`` names the
    field otherwise). The wire form is a deployment document's function entry."""

    name: str
    handler: str
    version: int = 1
    runtime: Runtime = "python"
    pinned: bool = False
    memory_mb: int = DEFAULT_MEMORY_MB
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_concurrency: int = 1
    environment: Mapping[str, str] = field(default_factory=dict)
    encoding: Encoding = "json"
    run_as: str | None = None
    #: V1 local resources: ``{kind, source, destination, access, auto_add_group_owner}``
    #: (the runtime's ``FunctionSpec`` holds them as ``functions.resources.LocalResource``)
    resources: tuple[Any, ...] = ()
    #: OS groups the function's process needs on the gateway
    groups: tuple[str, ...] = ()
    #: the names of its group's secrets the function may read
    secrets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.environment, Mapping):
            raise InvalidFunction("environment", "must be an object of strings")
        object.__setattr__(self, "environment", dict(self.environment))
        for key in ("resources", "groups", "secrets"):
            value = getattr(self, key)
            if not isinstance(value, list | tuple):
                raise InvalidFunction(key, "must be a list")
            object.__setattr__(self, key, tuple(value))
        check_definition(self)

    def __hash__(self) -> int:
        return hash((self.name, self.version, self.handler, self.runtime))

    @classmethod
    def from_json(cls, entry: object) -> Self:
        """From a function entry (unknown keys such as ``artifact`` are ignored; ``null``
        means the default, except for ``run_as`` where it means "the core's user")."""
        if not isinstance(entry, Mapping):
            raise InvalidFunction("function", "must be an object")
        for key in ("name", "handler"):
            if entry.get(key) is None:
                raise InvalidFunction(key, "is required")
        kwargs: dict[str, Any] = {}
        for key in FIELDS:
            if key in entry and (entry[key] is not None or key == "run_as"):
                kwargs[key] = entry[key]
        timeout = kwargs.get("timeout_s")
        if isinstance(timeout, int) and not isinstance(timeout, bool):
            kwargs["timeout_s"] = float(timeout)
        return cls(**kwargs)

    def to_json(self) -> dict[str, Any]:
        """The function entry as it appears in a deployment document (without artifact);
        ``resources``, ``groups`` and ``secrets`` only when declared, so the entries of
        functions without them stay as they were."""
        entry: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "handler": self.handler,
            "runtime": self.runtime,
            "pinned": self.pinned,
            "memory_mb": self.memory_mb,
            "timeout_s": self.timeout_s,
            "max_concurrency": self.max_concurrency,
            "environment": dict(self.environment),
            "encoding": self.encoding,
            "run_as": self.run_as,
        }
        if self.resources:
            entry["resources"] = [
                dict(r) if isinstance(r, Mapping) else r.to_document() for r in self.resources
            ]
        if self.groups:
            entry["groups"] = list(self.groups)
        if self.secrets:
            entry["secrets"] = list(self.secrets)
        return entry


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bounded(value: object, limit: Limit, *, integer: bool) -> None:
    """``value`` is a number (an integer if ``integer``) within ``limit``; NaN and the
    infinities are never within one."""
    number: int | float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and not integer:
        number = value
    if number is None or not limit.allows(number):
        kind = "an integer" if integer else "a number"
        raise InvalidFunction(limit.field, f"{value!r}: must be {kind} within {limit.describe()}")


def check_definition(spec: FunctionDefinition) -> None:
    """Every rule of the contract, field by field (the first broken one is raised)."""
    check_function_name(spec.name)
    if not isinstance(spec.handler, str) or not _HANDLER.fullmatch(spec.handler):
        raise InvalidFunction("handler", f"invalid handler {spec.handler!r}: use module.function")
    _bounded(spec.version, VERSION, integer=True)
    if spec.runtime not in RUNTIMES:
        raise InvalidFunction(
            "runtime", f"invalid runtime {spec.runtime!r}: use one of {', '.join(RUNTIMES)}"
        )
    if not isinstance(spec.pinned, bool):
        raise InvalidFunction("pinned", "must be true or false")
    _bounded(spec.memory_mb, MEMORY_MB, integer=True)
    _bounded(spec.timeout_s, TIMEOUT_S, integer=False)
    _bounded(spec.max_concurrency, CONCURRENCY, integer=True)
    if spec.encoding not in ENCODINGS:
        raise InvalidFunction(
            "encoding", f"invalid encoding {spec.encoding!r}: use one of {', '.join(ENCODINGS)}"
        )
    check_environment(spec.environment)
    if spec.run_as is not None:
        check_run_as(spec.run_as)
    check_local_access(spec.resources, spec.groups, spec.secrets)


def check_local_access(
    resources: tuple[Any, ...], groups: tuple[str, ...], secrets: tuple[str, ...]
) -> None:
    """Counts and names of a function's local resources, OS groups and secrets; a
    resource given as an entry must be an object with a ``source`` path."""
    if len(resources) > MAX_RESOURCES:
        raise InvalidFunction("resources", f"{len(resources)} resources: at most {MAX_RESOURCES}")
    for resource in resources:
        if isinstance(resource, Mapping) and not isinstance(resource.get("source"), str):
            raise InvalidFunction("resources", "each resource must be an object with a source path")
        if not isinstance(resource, Mapping) and not hasattr(resource, "to_document"):
            raise InvalidFunction("resources", "each resource must be an object")
    if len(groups) > MAX_GROUPS:
        raise InvalidFunction("groups", f"{len(groups)} groups: at most {MAX_GROUPS}")
    for group in groups:
        if not isinstance(group, str) or not _GROUP.fullmatch(group):
            raise InvalidFunction("groups", f"bad group name {group!r}: letters, digits, _.-")
    if len(secrets) > MAX_SECRETS or not all(
        isinstance(s, str) and _SECRET.fullmatch(s) for s in secrets
    ):
        raise InvalidFunction(
            "secrets", f"at most {MAX_SECRETS} names of letters, digits and _.-+=@"
        )


def check_environment(environment: Mapping[str, str]) -> None:
    if not ENVIRONMENT_ENTRIES.allows(len(environment)):
        raise InvalidFunction(
            "environment", f"{len(environment)} variables: at most {ENVIRONMENT_ENTRIES.high}"
        )
    size = 0
    for key, value in environment.items():
        if not isinstance(key, str) or not _ENV_KEY.fullmatch(key):
            raise InvalidFunction(
                "environment", f"bad variable name {key!r}: use letters, digits and '_'"
            )
        if key.startswith(RESERVED_ENV_PREFIXES):
            raise InvalidFunction("environment", f"{key} is reserved for the core")
        if not isinstance(value, str) or "\0" in value:
            raise InvalidFunction("environment", f"{key} must be a string without NUL")
        if not ENVIRONMENT_VALUE.allows(len(value)):
            raise InvalidFunction(
                "environment",
                f"{key} has {len(value)} characters: at most {ENVIRONMENT_VALUE.high}",
            )
        size += len(key) + len(value)
    if not ENVIRONMENT_SIZE.allows(size):
        raise InvalidFunction(
            "environment", f"{size} characters in all: at most {ENVIRONMENT_SIZE.high}"
        )


def check_run_as(run_as: object) -> None:
    parts = run_as.split(":") if isinstance(run_as, str) else []
    if not 1 <= len(parts) <= 2 or not all(
        RUN_AS_NAME.allows(len(p)) and _USER.fullmatch(p) for p in parts
    ):
        raise InvalidFunction(
            "run_as", f"invalid run_as {run_as!r}: use 'user' or 'user:group' (names or ids)"
        )
