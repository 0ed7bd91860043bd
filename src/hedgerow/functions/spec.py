"""What a function is: the frozen mirror of a deployment document's function entry, validated.

``FunctionSpec`` is built by the cloud (from CLI/REST input) and by the core (from a signed
deployment document). Both use the same rules: :func:`validate_spec` or the constructor
raise :class:`InvalidFunctionSpec` naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from hedgerow.functions.errors import InvalidFunctionSpec
from hedgerow.functions.resources import LocalResource, check_resources, resource_from_document

Runtime = Literal["python", "greengrass-v1"]
Encoding = Literal["json", "binary"]

RUNTIMES: Final = ("python", "greengrass-v1")
ENCODINGS: Final = ("json", "binary")

MIN_MEMORY_MB: Final = 32
MAX_MEMORY_MB: Final = 16384
DEFAULT_MEMORY_MB: Final = 128
MIN_TIMEOUT_S: Final = 0.01
MAX_TIMEOUT_S: Final = 900.0
DEFAULT_TIMEOUT_S: Final = 3.0
MAX_CONCURRENCY: Final = 64
MAX_ENVIRONMENT_BYTES: Final = 64 * 1024

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_HANDLER = re.compile(rf"^{_IDENT}(\.{_IDENT})+$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
_SECRET = re.compile(r"^[A-Za-z0-9_.\-+=@]{1,128}$")
MAX_SECRETS: Final = 32
_RESERVED_ENV_PREFIXES: Final = ("HEDGEROW_",)


@dataclass(frozen=True)
class FunctionSpec:
    """One function of a deployment; invalid values raise :class:`InvalidFunctionSpec`."""

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
    #: device files and volumes (V1 local resources) and OS groups the function needs
    resources: tuple[LocalResource, ...] = ()
    groups: tuple[str, ...] = ()
    #: the names of the secrets it may read (its group's secrets; no others)
    secrets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "environment", dict(self.environment))
        object.__setattr__(self, "resources", tuple(self.resources))
        object.__setattr__(self, "groups", tuple(self.groups))
        object.__setattr__(self, "secrets", tuple(self.secrets))
        _check(self)

    def __hash__(self) -> int:
        return hash((self.name, self.version, self.handler, self.runtime))

    @property
    def module(self) -> str:
        return self.handler.rsplit(".", 1)[0]

    @property
    def function(self) -> str:
        return self.handler.rsplit(".", 1)[1]

    @classmethod
    def from_document(cls, entry: Mapping[str, Any]) -> FunctionSpec:
        """Build from a deployment document's function entry (unknown keys are ignored)."""
        return validate_spec(entry)

    def to_document(self) -> dict[str, Any]:
        """The entry as it appears in a deployment document (without ``artifact``)."""
        document: dict[str, Any] = {
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
        # only when declared: documents of functions without them stay as they were
        if self.resources:
            document["resources"] = [r.to_document() for r in self.resources]
        if self.groups:
            document["groups"] = list(self.groups)
        if self.secrets:
            document["secrets"] = list(self.secrets)
        return document


def validate_spec(entry: Mapping[str, Any] | FunctionSpec) -> FunctionSpec:
    """Validate a function entry (a mapping or a spec) and return the spec."""
    if isinstance(entry, FunctionSpec):
        _check(entry)
        return entry
    if not isinstance(entry, Mapping):
        raise InvalidFunctionSpec("function", "must be an object")
    for key in ("name", "handler"):
        if key not in entry:
            raise InvalidFunctionSpec(key, "is required")
    kwargs: dict[str, Any] = {"name": entry["name"], "handler": entry["handler"]}
    for key in (
        "version",
        "runtime",
        "pinned",
        "memory_mb",
        "timeout_s",
        "max_concurrency",
        "environment",
        "encoding",
        "run_as",
    ):
        if key in entry and not (entry[key] is None and key != "run_as"):
            kwargs[key] = entry[key]
    environment = kwargs.get("environment", {})
    if not isinstance(environment, Mapping):
        raise InvalidFunctionSpec("environment", "must be an object of strings")
    for key in ("resources", "groups", "secrets"):
        value = entry.get(key)
        if value is None:
            continue
        if not isinstance(value, list | tuple):
            raise InvalidFunctionSpec(key, "must be a list")
        kwargs[key] = (
            tuple(resource_from_document(r) for r in value) if key == "resources" else tuple(value)
        )
    if isinstance(kwargs.get("timeout_s"), int) and not isinstance(kwargs["timeout_s"], bool):
        kwargs["timeout_s"] = float(kwargs["timeout_s"])
    return FunctionSpec(**kwargs)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(spec: FunctionSpec) -> None:
    if not isinstance(spec.name, str) or not _NAME.match(spec.name):
        raise InvalidFunctionSpec("name", "1-64 of letters, digits, '_', '.', '-'")
    if not isinstance(spec.handler, str) or not _HANDLER.match(spec.handler):
        raise InvalidFunctionSpec("handler", "must be 'module.function'")
    if not _is_int(spec.version) or spec.version < 0:
        raise InvalidFunctionSpec("version", "must be a non-negative integer")
    if spec.runtime not in RUNTIMES:
        raise InvalidFunctionSpec("runtime", f"must be one of {', '.join(RUNTIMES)}")
    if not isinstance(spec.pinned, bool):
        raise InvalidFunctionSpec("pinned", "must be true or false")
    if not _is_int(spec.memory_mb) or not MIN_MEMORY_MB <= spec.memory_mb <= MAX_MEMORY_MB:
        raise InvalidFunctionSpec("memory_mb", f"must be {MIN_MEMORY_MB}..{MAX_MEMORY_MB}")
    timeout = spec.timeout_s
    if (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or timeout != timeout
        or not MIN_TIMEOUT_S <= timeout <= MAX_TIMEOUT_S
    ):
        raise InvalidFunctionSpec("timeout_s", f"must be {MIN_TIMEOUT_S}..{MAX_TIMEOUT_S} seconds")
    if not _is_int(spec.max_concurrency) or not 1 <= spec.max_concurrency <= MAX_CONCURRENCY:
        raise InvalidFunctionSpec("max_concurrency", f"must be 1..{MAX_CONCURRENCY}")
    if spec.encoding not in ENCODINGS:
        raise InvalidFunctionSpec("encoding", f"must be one of {', '.join(ENCODINGS)}")
    _check_environment(spec.environment)
    if spec.run_as is not None:
        _check_run_as(spec.run_as)
    if not all(isinstance(r, LocalResource) for r in spec.resources):
        raise InvalidFunctionSpec("resources", "must be local resources")
    check_resources(spec.resources, spec.groups)
    if len(spec.secrets) > MAX_SECRETS or not all(
        isinstance(s, str) and _SECRET.match(s) for s in spec.secrets
    ):
        raise InvalidFunctionSpec(
            "secrets", f"at most {MAX_SECRETS} names of letters, digits and _.-+=@"
        )


def _check_environment(environment: Mapping[str, str]) -> None:
    size = 0
    for key, value in environment.items():
        if not isinstance(key, str) or not _ENV_KEY.match(key):
            raise InvalidFunctionSpec("environment", f"bad variable name {key!r}")
        if key.startswith(_RESERVED_ENV_PREFIXES):
            raise InvalidFunctionSpec("environment", f"{key} is reserved")
        if not isinstance(value, str) or "\0" in value:
            raise InvalidFunctionSpec("environment", f"{key} must be a string without NUL")
        size += len(key) + len(value)
    if size > MAX_ENVIRONMENT_BYTES:
        raise InvalidFunctionSpec("environment", f"larger than {MAX_ENVIRONMENT_BYTES} bytes")


def _check_run_as(run_as: object) -> None:
    if not isinstance(run_as, str):
        raise InvalidFunctionSpec("run_as", "must be 'user' or 'user:group'")
    parts = run_as.split(":")
    if len(parts) > 2 or not all(_USER.match(p) for p in parts):
        raise InvalidFunctionSpec("run_as", "must be 'user' or 'user:group' (names or ids)")
