"""The function runtime: pinned and on-demand Python functions in worker processes.

Public names (imported lazily so that a function's worker process stays small)::

    FunctionSpec, validate_spec          what a function is (spec.py)
    FunctionHost                         the runtime the core owns (host.py)
    FunctionsError, InvalidFunctionSpec, FunctionDeployError, InvocationError, ...
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hedgerow.functions.errors import (
        BundleError,
        FunctionDeployError,
        FunctionNotFound,
        FunctionsError,
        FunctionUnavailable,
        HandlerError,
        InvalidFunctionSpec,
        InvocationError,
        InvocationTimeout,
        QueueFull,
        WorkerCrashed,
    )
    from hedgerow.functions.host import FunctionHost
    from hedgerow.functions.policy import RestartPolicy, State
    from hedgerow.functions.spec import FunctionSpec, validate_spec

_EXPORTS = {
    "FunctionSpec": "spec",
    "validate_spec": "spec",
    "FunctionHost": "host",
    "RestartPolicy": "policy",
    "State": "policy",
    "FunctionsError": "errors",
    "InvalidFunctionSpec": "errors",
    "FunctionDeployError": "errors",
    "BundleError": "errors",
    "InvocationError": "errors",
    "FunctionNotFound": "errors",
    "FunctionUnavailable": "errors",
    "InvocationTimeout": "errors",
    "WorkerCrashed": "errors",
    "QueueFull": "errors",
    "HandlerError": "errors",
}

__all__ = [
    "BundleError",
    "FunctionDeployError",
    "FunctionHost",
    "FunctionNotFound",
    "FunctionSpec",
    "FunctionUnavailable",
    "FunctionsError",
    "HandlerError",
    "InvalidFunctionSpec",
    "InvocationError",
    "InvocationTimeout",
    "QueueFull",
    "RestartPolicy",
    "State",
    "WorkerCrashed",
    "validate_spec",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hedgerow.functions' has no attribute {name!r}")
    return getattr(import_module(f"hedgerow.functions.{module}"), name)
