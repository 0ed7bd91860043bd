"""Errors of the cloud ⇄ core contract.

The whole tree, each carrying the offending field and the reason as attributes::

    ContractError           root: catch this to catch everything below (a ``ValueError``)
    ├── InvalidMessage      a document, report or heartbeat is malformed (.field, .reason)
    ├── UnsupportedSchema   its ``schema`` version is one this side does not know
    └── InvalidFunction     a function specification breaks a limit (.field, .reason)

``field`` is a path into the message (``functions[0].memory_mb``, ``schema``), so the
sender can tell which value to change. The cloud translates these into its
``InvalidInput`` (HTTP 400), the core into its ``DeploymentError`` or the function
runtime's ``InvalidFunctionSpec``, each with ``raise ... from exc``.
"""

from __future__ import annotations


class ContractError(ValueError):
    """Root of the contract's exceptions; ``field`` names the value, ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def within(self, prefix: str) -> ContractError:
        """The same error with ``field`` placed under ``prefix`` (``functions[2]``)."""
        return type(self)(f"{prefix}.{self.field}", self.reason)


class InvalidMessage(ContractError):
    """A deployment document, notification, status report or heartbeat is malformed."""


class UnsupportedSchema(ContractError):
    """The message's ``schema`` version is newer (or other) than this side understands:
    upgrade this side, or have the sender write a version both know."""


class InvalidFunction(ContractError):
    """A function specification breaks one of the limits in ``contract.functions``."""
