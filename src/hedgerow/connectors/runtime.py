"""Build connectors from their specs (the core's side of a deployment).

``create(spec, publish)`` validates the spec's config again (the cloud did; a config edited
on the way is still refused with its field named) and builds the connector. The library
modules are imported here, at build time, so a core with no connector configured never
loads pymodbus or asyncua.
"""

from __future__ import annotations

from .config import ConnectorSpec, ModbusConfig, validate
from .model import ConnectorBase, Publish


def create(spec: ConnectorSpec, publish: Publish) -> ConnectorBase:
    config = validate(spec.kind, spec.name, spec.config)
    if isinstance(config, ModbusConfig):
        from .modbus import ModbusConnector

        return ModbusConnector(config, publish)
    from .opcua import OpcUaConnector

    return OpcUaConnector(config, publish)
