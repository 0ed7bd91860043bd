"""Errors of the core package.

The whole tree, each carrying its data as attributes::

    CoreError                 root: catch this to catch everything below
    ├── ConfigError           a missing or broken config/bundle (.field names the key)
    ├── SpoolError            the durable spool cannot be opened or written (.path)
    ├── CloudAPIError         a device-HTTPS call to the cloud failed (.path, .status)
    ├── DeploymentError       a deployment was rejected or failed (.deployment_id, .reason)
    ├── CertificateError      the server certificate could not be obtained or loaded
    └── UpdateError           a release of the core could not be installed (.version, .reason)
"""

from __future__ import annotations


class CoreError(Exception):
    """Root of the core's own exceptions."""


class ConfigError(CoreError):
    """A config value is missing or wrong; ``field`` names it (``section.key``), ``file``
    the config file when known (then ``str()`` starts with it)."""

    def __init__(self, field: str, message: str, *, file: str | None = None) -> None:
        text = message if message.startswith(f"{field}: ") else f"{field}: {message}"
        super().__init__(f"{file}: {text}" if file else text)
        self.field = field
        self.message = message
        self.file = file


class SpoolError(CoreError):
    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class CloudAPIError(CoreError):
    """A call to the cloud's device API failed; ``status`` is None for network errors."""

    def __init__(self, message: str, path: str, status: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.status = status


class DeploymentError(CoreError):
    def __init__(self, deployment_id: str, reason: str) -> None:
        super().__init__(f"deployment {deployment_id}: {reason}")
        self.deployment_id = deployment_id
        self.reason = reason


class CertificateError(CoreError):
    """The server certificate could not be obtained, stored or loaded."""


class UpdateError(CoreError):
    """Installing a release of the core itself failed (nothing was switched)."""

    def __init__(self, version: str, reason: str) -> None:
        super().__init__(f"core update to {version}: {reason}")
        self.version = version
        self.reason = reason
