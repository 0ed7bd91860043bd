"""``filter_covers``: the one answer to "does allowing filter G allow subscribing to S?".

The cloud's MQTT endpoint and the core's routing table both ask it; these tests hold it to
MQTT's matching rules, ``$`` topics included (MQTT 5.0 §4.7.2).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hedgerow.mqtt.topics import filter_covers, matches


@pytest.mark.parametrize(
    ("general", "specific", "covered"),
    [
        ("a/#", "a/b/c", True),
        ("a/#", "a/+", True),
        ("a/#", "a", True),  # 'a/#' matches 'a' itself
        ("a/+", "a/b", True),
        ("a/+", "a/#", False),
        ("a/b", "a/+", False),
        ("+/b", "x/b", True),
        ("#", "x/y", True),
        ("#", "#", True),
        ("+/+", "+/x", True),
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/+/c", "a/b", False),
        ("a", "a/b", False),
        ("x/#", "+/a", False),
        # $ topics: a filter starting with a wildcard never reaches them
        ("#", "$SYS/x", False),
        ("#", "$hedgerow/cores/pi-2/#", False),
        ("#", "$hedgerow/cores/pi-2/deployments", False),
        ("+/cores/#", "$hedgerow/cores/pi-2/deployments", False),
        ("+/#", "$hedgerow/#", False),
        ("$hedgerow/cores/pi-1/#", "$hedgerow/cores/pi-1/deployments", True),
        ("$hedgerow/cores/pi-1/#", "$hedgerow/cores/+/deployments", False),
        ("$hedgerow/cores/pi-1/#", "$hedgerow/cores/pi-2/deployments", False),
        ("$hedgerow/cores/pi-1/#", "$hedgerow/#", False),
        ("$hedgerow/+/pi-1/#", "$hedgerow/cores/pi-1/x", True),
        ("", "a", False),
        ("a", "", False),
    ],
)
def test_coverage_table(general: str, specific: str, covered: bool) -> None:
    assert filter_covers(general, specific) is covered


LEVELS = st.sampled_from(["a", "b", "$x", ""])
TOPICS = st.lists(LEVELS, min_size=1, max_size=4).map("/".join).filter(bool)
FILTERS = st.lists(st.sampled_from(["a", "b", "$x", "", "+"]), min_size=1, max_size=4).flatmap(
    lambda parts: st.sampled_from(["/".join(parts), "/".join([*parts, "#"]), "#"]).filter(bool)
)


@given(FILTERS, FILTERS, st.lists(TOPICS, min_size=1, max_size=12))
def test_coverage_is_sound(general: str, specific: str, topics: list[str]) -> None:
    """Whatever a covered filter matches, the covering one matches too ($ topics included)."""
    if filter_covers(general, specific):
        for topic in topics:
            if matches(specific, topic):
                assert matches(general, topic), (general, specific, topic)


@given(FILTERS, TOPICS)
def test_coverage_of_a_topic_name_is_matching(general: str, topic: str) -> None:
    """For a filter without wildcards (one topic), covering it is exactly matching it."""
    assert filter_covers(general, topic) is matches(general, topic)


@given(FILTERS)
def test_every_filter_covers_itself(topic_filter: str) -> None:
    assert filter_covers(topic_filter, topic_filter)
