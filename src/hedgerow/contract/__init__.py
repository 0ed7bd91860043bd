"""The contract between cloud and core: the rules both sides share, in one place.

Pure (no I/O) and light (stdlib only: the core imports it and counts its memory)::

    topics        core_topic(core, leaf), parse_core_topic(topic), CoreLeaf, TO_CORE, FROM_CORE
    functions     FunctionDefinition, LIMITS (the one set of function limits), check_*
    deployment    DeploymentDocument (+ ConnectorEntry, CoreRelease, Wheel), DeploymentNotification, StatusReport,
                  DeploymentStatus
    heartbeat     Heartbeat
    logs          LogBatch, LogRecord (core and function logs to the cloud)
    errors        ContractError ⊃ InvalidMessage, UnsupportedSchema, InvalidFunction

Topic matching and filter coverage are not here: they live in ``hedgerow.mqtt.topics``.
"""

from .deployment import (
    Artifact,
    ConnectorEntry,
    CoreRelease,
    DeployedFunction,
    DeploymentDocument,
    DeploymentNotification,
    DeploymentStatus,
    Route,
    StatusReport,
    Wheel,
)
from .errors import ContractError, InvalidFunction, InvalidMessage, UnsupportedSchema
from .functions import LIMITS, FunctionDefinition, Limit, check_function_name
from .heartbeat import Heartbeat
from .logs import LogBatch, LogRecord
from .topics import (
    FROM_CORE,
    TO_CORE,
    CoreLeaf,
    CoreTopic,
    all_cores_filter,
    core_namespace,
    core_namespace_filter,
    core_topic,
    parse_core_topic,
)

__all__ = [
    "FROM_CORE",
    "LIMITS",
    "TO_CORE",
    "Artifact",
    "ConnectorEntry",
    "ContractError",
    "CoreLeaf",
    "CoreRelease",
    "CoreTopic",
    "DeployedFunction",
    "DeploymentDocument",
    "DeploymentNotification",
    "DeploymentStatus",
    "FunctionDefinition",
    "Heartbeat",
    "InvalidFunction",
    "InvalidMessage",
    "Limit",
    "LogBatch",
    "LogRecord",
    "Route",
    "StatusReport",
    "UnsupportedSchema",
    "Wheel",
    "all_cores_filter",
    "check_function_name",
    "core_namespace",
    "core_namespace_filter",
    "core_topic",
    "parse_core_topic",
]
