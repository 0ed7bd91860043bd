"""Errors of the broker package.

``BrokerError`` is the root. ``Refused`` (in :mod:`hedgerow.broker.auth`) is raised by
authenticators to refuse a connection. Protocol errors from clients are the codec's
``hedgerow.mqtt.errors.MQTTError``; the broker turns them into a closed connection with a
logged reason, never into an exception that leaves the connection's callback.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Root of the broker's own exceptions."""


class BrokerClosed(BrokerError):
    """The broker is shutting down or already closed."""
