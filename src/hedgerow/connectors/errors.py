"""Errors of the connectors package.

The whole tree, each carrying its data as attributes::

    ConnectorError             root: catch this to catch everything below
    ├── ConnectorConfigError   a connector's config is wrong (.field names it: ``tags[2].type``)
    ├── CodecError             a value does not fit its data type (.tag)
    ├── ConnectorIOError       the device or server did not answer, or answered with an error
    └── MissingLibraryError    the connector's library (pymodbus, asyncua) is not installed
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Root of the connectors' own exceptions."""


class ConnectorConfigError(ConnectorError):
    """A config value is missing or wrong; ``field`` names it (``tags[0].address``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class CodecError(ConnectorError):
    """A value cannot be encoded to (or decoded from) its tag's registers."""

    def __init__(self, tag: str, message: str) -> None:
        super().__init__(f"tag {tag}: {message}")
        self.tag = tag
        self.message = message


class ConnectorIOError(ConnectorError):
    """The device or server failed a request (timeout, refused, exception response)."""


class MissingLibraryError(ConnectorError):
    """The library a connector needs is not installed; says which extra installs it."""

    def __init__(self, library: str) -> None:
        super().__init__(
            f"{library} is not installed: install it with pip install 'hedgerow[industrial]'"
        )
        self.library = library
