"""The topic names between cloud and core, spelled once (``hedgerow.contract.topics``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hedgerow.contract.topics import (
    FROM_CORE,
    TO_CORE,
    CoreLeaf,
    CoreTopic,
    all_cores_filter,
    core_namespace_filter,
    core_topic,
    parse_core_topic,
)
from hedgerow.mqtt.topics import filter_covers, matches, validate_topic_filter


def test_the_topics_of_the_architecture_document() -> None:
    assert core_topic("pi-1", CoreLeaf.DEPLOYMENTS) == "$hedgerow/cores/pi-1/deployments"
    assert core_topic("pi-1", "deployment-status") == "$hedgerow/cores/pi-1/deployment-status"
    assert [leaf.value for leaf in TO_CORE] == [
        "deployments",
        "revocations",
        "group-cas",
        "things",
        "shadow",
        "support-bundle",
        "log-levels",
    ]
    assert [leaf.value for leaf in FROM_CORE] == [
        "deployment-status",
        "heartbeat",
        "shadow-update",
        "logs",
        "presence",
    ]
    assert set(TO_CORE) | set(FROM_CORE) == set(CoreLeaf)
    assert all_cores_filter(CoreLeaf.HEARTBEAT) == "$hedgerow/cores/+/heartbeat"


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True), st.sampled_from(CoreLeaf))
def test_names_and_their_parser_agree(core: str, leaf: CoreLeaf) -> None:
    topic = core_topic(core, leaf)
    assert parse_core_topic(topic) == CoreTopic(core, leaf)
    assert matches(all_cores_filter(leaf), topic)
    assert matches(core_namespace_filter(core), topic)
    validate_topic_filter(core_namespace_filter(core))
    # a filter starting with a wildcard reaches none of them
    assert not matches("#", topic) and not filter_covers("#", core_namespace_filter(core))


@pytest.mark.parametrize(
    "topic",
    [
        "$hedgerow/cores/pi-1/unknown",
        "$hedgerow/cores/pi-1/deployments/extra",
        "$hedgerow/cores//deployments",
        "$hedgerow/cores/pi-1",
        "$hedgerow/cores/+/heartbeat",
        "hedgerow/cores/pi-1/heartbeat",
        "sensors/x",
    ],
)
def test_other_topics_are_not_core_topics(topic: str) -> None:
    assert parse_core_topic(topic) is None


@pytest.mark.parametrize("core", ["", "a/b", "+", "#", "x\x00"])
def test_a_core_name_that_cannot_be_a_topic_level_is_refused(core: str) -> None:
    with pytest.raises(ValueError, match="cannot be part of a topic"):
        core_topic(core, CoreLeaf.HEARTBEAT)


def test_an_unknown_leaf_is_refused() -> None:
    with pytest.raises(ValueError):
        core_topic("pi-1", "secrets")
