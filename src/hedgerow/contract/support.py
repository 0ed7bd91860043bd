"""Support bundles: the cloud asks a core for one, the core uploads it.

No connection ever goes to the gateway: the cloud publishes a ``SupportBundleRequest`` on
``$hedgerow/cores/{core}/support-bundle`` (QoS 1, retained while it waits) over the core's
own MQTT link, and the core answers by uploading a gzip'd tar of at most
``MAX_BUNDLE_BYTES`` with ``PUT /core/v1/support-bundles/{request_id}`` (device HTTPS,
mutual TLS: only the core asked can answer). ``MEMBERS`` names what the archive holds.

A request asked while the core is offline waits, retained, and reaches the core when it
connects; the cloud clears it (an empty retained message, which the core ignores) once the
bundle is in or at ``expires_at`` (epoch seconds; a core also ignores a request past it).
Requests from clouds before ``expires_at`` existed have none: they never expire here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from . import _wire
from .errors import InvalidMessage

SCHEMA: Final = 1
#: The largest bundle the cloud accepts (the device server's request limit).
MAX_BUNDLE_BYTES: Final = 1024 * 1024
#: What a bundle holds (``logs/`` and ``deployments/`` are folders).
MEMBERS: Final = (
    "manifest.json",  # what is inside, when it was made, what was redacted
    "versions.json",  # Hedgerow, Python, the OS, the core's name and group
    "config.json",  # config.toml without secrets
    "check.txt",  # `hedgerow core check`
    "status.json",  # the core's state now (heartbeat fields, components, shadow sync)
    "logs/",  # the newest lines of the core's and the functions' logs
    "deployments/",  # the last deployments: documents without sealed secrets, and statuses
)
_REQUEST_ID = re.compile(r"sb-[0-9a-f]{8,64}")


def check_request_id(value: object, field: str = "request_id") -> str:
    if not isinstance(value, str) or not _REQUEST_ID.fullmatch(value):
        raise InvalidMessage(field, f"{value!r}: a support bundle id is 'sb-' and hex digits")
    return value


@dataclass(frozen=True, slots=True)
class SupportBundleRequest:
    """cloud → core: "upload a support bundle as ``request_id``"."""

    request_id: str
    schema: int = SCHEMA
    #: epoch seconds after which the request is void (None: it never expires)
    expires_at: float | None = None

    @classmethod
    def from_json(cls, payload: str | bytes) -> SupportBundleRequest:
        data = _wire.load_object(payload, "support bundle request")
        schema = _wire.check_schema(data, SCHEMA)
        expires = _wire.number(data, "expires_at", -1.0) if "expires_at" in data else None
        if expires is not None and expires < 0:
            raise InvalidMessage("expires_at", f"{expires!r}: epoch seconds, not negative")
        return cls(check_request_id(data.get("request_id")), schema, expires)

    def to_json(self) -> bytes:
        data: dict[str, object] = {"schema": self.schema, "request_id": self.request_id}
        if self.expires_at is not None:
            data["expires_at"] = round(self.expires_at, 3)
        return _wire.dumps(data).encode()

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at
