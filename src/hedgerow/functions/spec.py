"""What a function is, as the runtime sees it: the contract's function definition.

The rules and limits are those of ``hedgerow.contract.functions`` — the same ones the cloud
applies when a function is created — so whatever the cloud accepts, the runtime runs.
``FunctionSpec`` adds what the runtime needs (``module``, ``function``) and translates the
contract's ``InvalidFunction`` into :class:`InvalidFunctionSpec` naming the same field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from hedgerow.contract import functions as rules
from hedgerow.contract.errors import InvalidFunction
from hedgerow.contract.functions import Encoding, FunctionDefinition, Runtime
from hedgerow.functions.errors import InvalidFunctionSpec
from hedgerow.functions.resources import LocalResource, check_resources, resource_from_document

__all__ = [
    "DEFAULT_MEMORY_MB",
    "DEFAULT_TIMEOUT_S",
    "ENCODINGS",
    "MAX_CONCURRENCY",
    "MAX_ENVIRONMENT_BYTES",
    "MAX_MEMORY_MB",
    "MAX_SECRETS",
    "MAX_TIMEOUT_S",
    "MIN_MEMORY_MB",
    "MIN_TIMEOUT_S",
    "RUNTIMES",
    "Encoding",
    "FunctionSpec",
    "Runtime",
    "validate_spec",
]

RUNTIMES: Final = rules.RUNTIMES
ENCODINGS: Final = rules.ENCODINGS
MIN_MEMORY_MB: Final = rules.MEMORY_MB.low
MAX_MEMORY_MB: Final = rules.MEMORY_MB.high
DEFAULT_MEMORY_MB: Final = rules.DEFAULT_MEMORY_MB
MIN_TIMEOUT_S: Final = rules.TIMEOUT_S.low
MAX_TIMEOUT_S: Final = rules.TIMEOUT_S.high
DEFAULT_TIMEOUT_S: Final = rules.DEFAULT_TIMEOUT_S
MAX_CONCURRENCY: Final = rules.CONCURRENCY.high
MAX_ENVIRONMENT_BYTES: Final = rules.ENVIRONMENT_SIZE.high
MAX_SECRETS: Final = rules.MAX_SECRETS


class FunctionSpec(FunctionDefinition):
    """One function of a deployment; invalid values raise :class:`InvalidFunctionSpec`."""

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except InvalidFunction as exc:
            raise InvalidFunctionSpec(exc.field, exc.reason) from exc
        # the contract checked the entries' shape; the runtime holds them as LocalResource
        resources = tuple(
            r if isinstance(r, LocalResource) else resource_from_document(r) for r in self.resources
        )
        object.__setattr__(self, "resources", resources)
        check_resources(resources, self.groups)

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
        return self.to_json()


def validate_spec(entry: Mapping[str, Any] | FunctionSpec) -> FunctionSpec:
    """Validate a function entry (a mapping or a spec) and return the spec."""
    if isinstance(entry, FunctionSpec):
        entry.__post_init__()
        return entry
    try:
        return FunctionSpec.from_json(entry)
    except InvalidFunction as exc:
        raise InvalidFunctionSpec(exc.field, exc.reason) from exc
