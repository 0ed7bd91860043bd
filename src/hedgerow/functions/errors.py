"""Errors of the function runtime.

The whole tree, each carrying its data as attributes::

    FunctionsError              root: catch this to catch everything below
    ├── InvalidFunctionSpec     a function entry breaks a rule (.field, .reason)
    ├── FunctionDeployError     apply() could not start a function (.function, .reason)
    ├── BundleError             a bundle cannot be unpacked or its requirements installed
    ├── LaunchError             a worker process cannot be started (.reason)
    ├── TransitionError         a lifecycle event the state does not accept (a bug; policy.py)
    ├── IPCProtocolError        a malformed frame on the core <-> worker channel
    └── InvocationError         an invocation did not produce a result (.function, .reason)
        ├── FunctionNotFound    no function of that name is deployed
        ├── FunctionUnavailable the function is BROKEN or stopping
        ├── InvocationTimeout   the handler ran past its timeout (the worker was replaced)
        ├── WorkerCrashed       the worker process died during the invocation
        ├── QueueFull           the function's bounded queue is full
        └── HandlerError        the handler raised (.error_type, .traceback)
"""

from __future__ import annotations


class FunctionsError(Exception):
    """Root of the function runtime's exceptions."""


class InvalidFunctionSpec(FunctionsError, ValueError):
    """A function entry is invalid; ``field`` names the offending key."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid function spec: {field}: {reason}")
        self.field = field
        self.reason = reason


class FunctionDeployError(FunctionsError):
    """A function could not be deployed; ``function`` names it, ``reason`` says why."""

    def __init__(self, function: str, reason: str) -> None:
        super().__init__(f"function {function!r}: {reason}")
        self.function = function
        self.reason = reason


class BundleError(FunctionsError):
    """A bundle could not be prepared (unpacked, or its requirements installed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LaunchError(FunctionsError):
    """A worker could not be started (bad user, missing interpreter, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IPCProtocolError(FunctionsError):
    """A frame on the core <-> worker channel is malformed."""


class InvocationError(FunctionsError):
    """An invocation failed; ``function`` names the function, ``reason`` says why."""

    def __init__(self, function: str, reason: str) -> None:
        super().__init__(f"function {function!r}: {reason}")
        self.function = function
        self.reason = reason


class FunctionNotFound(InvocationError):
    pass


class FunctionUnavailable(InvocationError):
    pass


class InvocationTimeout(InvocationError):
    pass


class WorkerCrashed(InvocationError):
    pass


class QueueFull(InvocationError):
    pass


class HandlerError(InvocationError):
    """The handler raised; ``error_type`` is the exception's class name."""

    def __init__(self, function: str, reason: str, error_type: str, traceback: str) -> None:
        super().__init__(function, reason)
        self.error_type = error_type
        self.traceback = traceback
