"""The MQTT topics between cloud and core, spelled once.

Every core has a namespace ``$hedgerow/cores/{core}/``. The cloud publishes on the leaves
in ``TO_CORE`` (QoS 1; retained, except ``shadow``, whose messages are
answers of the moment; ``support-bundle`` is retained only while the request waits for
its core) and the core on the leaves in ``FROM_CORE``; a core may
use no other topic in its namespace and none in another core's. ``parse_core_topic`` is
the reverse direction: a topic name back to (core, leaf).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

CORES_PREFIX: Final = "$hedgerow/cores/"


class CoreLeaf(enum.StrEnum):
    """The last level of a core topic: what the message is."""

    DEPLOYMENTS = "deployments"  # cloud → core: DeploymentNotification
    REVOCATIONS = "revocations"  # cloud → core: {"fingerprints": [...]}
    GROUP_CAS = "group-cas"  # cloud → core: {"group_cas": [PEM, ...]}
    THINGS = "things"  # cloud → core: {"things": [name, ...]} (the group's members)
    DEPLOYMENT_STATUS = "deployment-status"  # core → cloud: StatusReport
    HEARTBEAT = "heartbeat"  # core → cloud: Heartbeat
    SHADOW = "shadow"  # cloud → core: contract.shadow.ShadowState (QoS 1, not retained)
    SHADOW_UPDATE = "shadow-update"  # core → cloud: contract.shadow.ShadowUpdate
    SUPPORT_BUNDLE = (
        "support-bundle"  # cloud → core: SupportBundleRequest (retained while it waits)
    )
    LOGS = "logs"  # core → cloud: LogBatch (QoS 1, through the core's log spool)
    LOG_LEVELS = "log-levels"  # cloud → core: contract.logs.LogLevels (QoS 1, retained)
    PRESENCE = "presence"  # core → cloud: contract.heartbeat.Presence (retained; its will)


#: What the cloud publishes to a core (the core subscribes to these on every connect).
TO_CORE: Final = (
    CoreLeaf.DEPLOYMENTS,
    CoreLeaf.REVOCATIONS,
    CoreLeaf.GROUP_CAS,
    CoreLeaf.THINGS,
    CoreLeaf.SHADOW,
    CoreLeaf.SUPPORT_BUNDLE,
    CoreLeaf.LOG_LEVELS,
)
#: What a core publishes to the cloud.
FROM_CORE: Final = (
    CoreLeaf.DEPLOYMENT_STATUS,
    CoreLeaf.HEARTBEAT,
    CoreLeaf.SHADOW_UPDATE,
    CoreLeaf.LOGS,
    CoreLeaf.PRESENCE,
)


@dataclass(frozen=True, slots=True)
class CoreTopic:
    core: str
    leaf: CoreLeaf


def core_namespace(core: str) -> str:
    """``$hedgerow/cores/{core}/``: the prefix of every topic of one core."""
    _check_core(core)
    return f"{CORES_PREFIX}{core}/"


def core_topic(core: str, leaf: CoreLeaf | str) -> str:
    """``$hedgerow/cores/{core}/{leaf}``; an unknown leaf raises ``ValueError``."""
    return f"{core_namespace(core)}{CoreLeaf(leaf).value}"


def core_namespace_filter(core: str) -> str:
    """``$hedgerow/cores/{core}/#``: every topic of one core."""
    return f"{core_namespace(core)}#"


def all_cores_filter(leaf: CoreLeaf | str) -> str:
    """``$hedgerow/cores/+/{leaf}``: one leaf of every core (the cloud's side)."""
    return f"{CORES_PREFIX}+/{CoreLeaf(leaf).value}"


def parse_core_topic(topic: str) -> CoreTopic | None:
    """``$hedgerow/cores/{core}/{leaf}`` → ``CoreTopic``; None for any other topic
    (another prefix, an empty core name, an unknown or deeper leaf)."""
    if not topic.startswith(CORES_PREFIX):
        return None
    core, sep, leaf = topic[len(CORES_PREFIX) :].partition("/")
    if not sep or not core or core in ("+", "#"):
        return None
    try:
        return CoreTopic(core, CoreLeaf(leaf))
    except ValueError:
        return None


def _check_core(core: str) -> None:
    if not core or any(c in core for c in "/+#\x00"):
        raise ValueError(f"core name {core!r} cannot be part of a topic")


#: Over MQTT 3.1.1 (no user properties) a core publishes what its group routes to the
#: cloud under ``$hedgerow/cores/{core}/routed/{topic}``: the topic names the core.
ROUTED: Final = "routed"


@dataclass(frozen=True, slots=True)
class RoutedTopic:
    core: str
    topic: str


def routed_topic(core: str, topic: str) -> str:
    """``$hedgerow/cores/{core}/routed/{topic}``: ``topic`` sent by ``core`` (3.1.1)."""
    return f"{core_namespace(core)}{ROUTED}/{topic}"


def all_routed_filter() -> str:
    """``$hedgerow/cores/+/routed/#``: every core's routed telemetry (the cloud's side)."""
    return f"{CORES_PREFIX}+/{ROUTED}/#"


def parse_routed_topic(topic: str) -> RoutedTopic | None:
    """``$hedgerow/cores/{core}/routed/{topic}`` → ``RoutedTopic``; None otherwise (or
    when the inner topic is empty or itself a ``$`` topic)."""
    if not topic.startswith(CORES_PREFIX):
        return None
    core, sep, rest = topic[len(CORES_PREFIX) :].partition("/")
    if not sep or not core or core in ("+", "#"):
        return None
    leaf, sep, inner = rest.partition("/")
    if leaf != ROUTED or not sep or not inner or inner.startswith("$"):
        return None
    return RoutedTopic(core, inner)
