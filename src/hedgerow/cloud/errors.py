"""Errors of the cloud package, one tree with data attributes.

``CloudError`` (root, carries ``status`` — the HTTP status the API answers with)
  ├─ ``InvalidInput``   (400) a name, field or body that cannot be accepted
  ├─ ``Unauthorized``   (401) no or a wrong token / certificate
  ├─ ``Forbidden``      (403) authenticated, but not allowed (revoked, expired, another thing)
  ├─ ``NotFound``       (404) ``kind`` and ``name`` say what is missing
  ├─ ``Conflict``       (409) a duplicate, or an object in a state that forbids the change
  ├─ ``TooLarge``       (413) an upload over the configured limit
  └─ ``Unavailable``    (503) a peer the cloud needs (the external MQTT broker) is down now
``ConfigError`` (not an HTTP error): an unusable ``config.toml`` or data directory.
``SecretError`` (500): a sealed secret cannot be opened (wrong or missing key-encryption
key, a blob altered or moved to another record) or the keyring file cannot be used.
"""

from __future__ import annotations


class CloudError(Exception):
    """Root of the cloud's errors. ``message`` says what is wrong (shown to the user)."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(CloudError):
    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Unauthorized(CloudError):
    status = 401


class Forbidden(CloudError):
    status = 403


class NotFound(CloudError):
    status = 404

    def __init__(self, kind: str, name: str, message: str | None = None) -> None:
        super().__init__(message or f"{kind} {name!r} does not exist")
        self.kind = kind
        self.name = name


class Conflict(CloudError):
    status = 409


class TooLarge(CloudError):
    status = 413

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class Unavailable(CloudError):
    """Something the request needs is unreachable for now; ``message`` says when to retry."""

    status = 503


class ConfigError(CloudError):
    """The data directory or its ``config.toml`` cannot be used; ``field`` names the bad
    ``table.key`` when one is to blame."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class SecretError(CloudError):
    """A secret at rest cannot be sealed or opened; ``message`` says what to do."""
