"""Industrial connectors on the core: Modbus TCP/RTU and OPC UA (see README.md).

Importing this package imports no connector library; ``runtime.create`` does, per kind.
"""

from __future__ import annotations

from .config import KINDS, VERSIONS, ConnectorSpec, spec_of, validate
from .errors import (
    CodecError,
    ConnectorConfigError,
    ConnectorError,
    ConnectorIOError,
    MissingLibraryError,
)
from .model import ConnectorBase, Counters, Publish

__all__ = [
    "KINDS",
    "VERSIONS",
    "CodecError",
    "ConnectorBase",
    "ConnectorConfigError",
    "ConnectorError",
    "ConnectorIOError",
    "ConnectorSpec",
    "Counters",
    "MissingLibraryError",
    "Publish",
    "spec_of",
    "validate",
]
