"""Hedgerow's asyncio MQTT broker (3.1, 3.1.1 and 5).

``Broker`` composes listeners and the shared hub; authentication and authorization plug in
through :mod:`hedgerow.broker.auth`. See ``README.md`` in this directory.
"""

from hedgerow.broker.auth import (
    Action,
    AllowAll,
    Authenticator,
    Authorizer,
    CertificateAuthenticator,
    ConnectInfo,
    Identity,
    Refused,
)
from hedgerow.broker.broker import Broker
from hedgerow.broker.config import BrokerConfig
from hedgerow.broker.errors import BrokerClosed, BrokerError
from hedgerow.broker.stats import BrokerStats

__all__ = [
    "Action",
    "AllowAll",
    "Authenticator",
    "Authorizer",
    "Broker",
    "BrokerClosed",
    "BrokerConfig",
    "BrokerError",
    "BrokerStats",
    "CertificateAuthenticator",
    "ConnectInfo",
    "Identity",
    "Refused",
]
