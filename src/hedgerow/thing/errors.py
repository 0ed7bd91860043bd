"""Errors raised by the device SDK.

The whole tree, each with the data it carries as attributes::

    ThingError                      root: catch this to catch everything below
    │                               (.hint: one line saying what to do; .retryable)
    ├── CredentialsError            a certificate/key/CA file missing, unreadable or unusable (.path)
    ├── DiscoveryError              discovery failed (.thing, .status: HTTP status or None)
    │   ├── DiscoveryRefused        400/401/403: the cloud will not answer this thing (not retried)
    │   ├── NotInGroupError         404 or an empty answer: the thing belongs to no group
    │   ├── DiscoveryUnavailable    429, 5xx, timeouts, unreachable host (retried with backoff)
    │   └── DiscoveryTLSError       the cloud's certificate does not verify against the root CA
    ├── CoreConnectError            no advertised core endpoint accepted the connection
    │                               (.failures: tuple of (endpoint, reason); .tls: True when
    │                               certificate verification failed, i.e. the group CA rotated)
    ├── SensorError                 a sensor could not be opened or read (.sensor)
    ├── ProvisioningError           provisioning by claim failed (the claim refused, unreadable,
    │                               or the cloud unreachable until the deadline)
    └── ThingClosed                 the thing was closed; nothing more can be published

Errors from lower layers (``OSError``, ``ssl.SSLError``, ``http11.HTTPError``,
``hedgerow.client.ClientError``) are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Sequence


class ThingError(Exception):
    """Root of every error the device SDK raises."""

    retryable: bool = False

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """What is wrong and what to do, on one line (for the CLI)."""
        return f"{self.message}; {self.hint}" if self.hint else self.message


class CredentialsError(ThingError):
    """A certificate, key or CA file cannot be used."""

    def __init__(self, message: str, *, path: str = "", hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.path = path


class DiscoveryError(ThingError):
    """Discovery did not return usable connection information."""

    def __init__(
        self, message: str, *, thing: str = "", status: int | None = None, hint: str = ""
    ) -> None:
        super().__init__(message, hint=hint)
        self.thing = thing
        self.status = status


class DiscoveryRefused(DiscoveryError):
    """The discovery service refused the request (400/401/403): retrying will not help."""


class NotInGroupError(DiscoveryError):
    """The thing is unknown or belongs to no group (404, or no group with a core)."""


class DiscoveryUnavailable(DiscoveryError):
    """Throttled (429), a server error (5xx), a timeout or an unreachable host: retry later.

    ``retry_after``: the seconds the server asked for (``Retry-After``), None if it did not."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        thing: str = "",
        status: int | None = None,
        hint: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, thing=thing, status=status, hint=hint)
        self.retry_after = retry_after


class DiscoveryTLSError(DiscoveryError):
    """The discovery server's certificate does not verify against the configured root CA."""


class CoreConnectError(ThingError):
    """Every advertised core endpoint failed."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        failures: Sequence[tuple[str, str]] = (),
        tls: bool = False,
        hint: str = "",
    ) -> None:
        super().__init__(message, hint=hint)
        self.failures = tuple(failures)
        self.tls = tls


class ThingClosed(ThingError):
    """The thing has been closed."""


class ProvisioningError(ThingError):
    """Provisioning by claim failed; the message carries the cloud's reason."""


class SensorError(ThingError):
    """A sensor could not be opened or read (.sensor: which one)."""

    def __init__(self, message: str, *, sensor: str = "", hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.sensor = sensor
