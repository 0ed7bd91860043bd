"""Topic validation, shared subscriptions, matching (spec examples) and the trie."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedgerow.mqtt import (
    ProtocolError,
    ReasonCode,
    TopicTrie,
    matches,
    parse_shared,
    validate_topic_filter,
    validate_topic_name,
)

# (filter, topic, matches?) -- the examples of MQTT 5.0 section 4.7 and a few more.
MATCH_TABLE = [
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("sport/#", "sport/", True),
    ("#", "sport/tennis", True),
    ("#", "/", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+", "finance", True),
    ("+/tennis/#", "sport/tennis", True),
    ("a/b", "a/b", True),
    ("a/b", "a/b/", False),
    ("a/b", "A/b", False),
    ("a//b", "a//b", True),
    ("a/+/b", "a//b", True),
    ("#", "$SYS/broker", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("$SYS/#", "$SYS", True),
    ("sport/tennis/#", "sport/tennis2", False),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCH_TABLE)
def test_matches_spec_table(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCH_TABLE)
def test_trie_agrees_with_spec_table(topic_filter: str, topic: str, expected: bool) -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.add(topic_filter, "v")
    assert trie.match(topic) == (["v"] if expected else [])


@pytest.mark.parametrize("name", ["a", "a/b", "/", "a//b", "$SYS/x", " ", "ü/€"])
def test_valid_topic_names(name: str) -> None:
    validate_topic_name(name)


@pytest.mark.parametrize("name", ["", "a/+", "#", "a/#", "a+b", "a\x00b", "x" * 70_000])
def test_invalid_topic_names(name: str) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_topic_name(name)
    assert info.value.reason_code == ReasonCode.TOPIC_NAME_INVALID


@pytest.mark.parametrize(
    "topic_filter",
    ["a", "#", "+", "a/#", "+/+", "/+", "a/+/b", "$share/g/a/#", "$share/g/#", "$SYS/#", "a//"],
)
def test_valid_topic_filters(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "",
        "a/#/b",
        "a#",
        "a/b#",
        "a+",
        "a/+b",
        "##",
        "a\x00",
        "$share/g",
        "$share//a",
        "$share/g/",
        "$share/g+/a",
    ],
)
def test_invalid_topic_filters(topic_filter: str) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_topic_filter(topic_filter)
    assert info.value.reason_code == ReasonCode.TOPIC_FILTER_INVALID


def test_parse_shared() -> None:
    assert parse_shared("$share/group/a/+/c") == ("group", "a/+/c")
    assert parse_shared("$share/g/#") == ("g", "#")
    assert parse_shared("a/b") == (None, "a/b")
    assert parse_shared("$shared/a") == (None, "$shared/a")
    with pytest.raises(ProtocolError):
        parse_shared("$share/onlygroup")


def test_trie_add_remove_and_len() -> None:
    trie: TopicTrie[int] = TopicTrie()
    trie.add("a/b", 1)
    trie.add("a/b", 2)
    trie.add("a/+", 3)
    trie.add("a/#", 4)
    trie.add("#", 5)
    assert len(trie) == 5
    assert sorted(trie.match("a/b")) == [1, 2, 3, 4, 5]
    assert sorted(trie.match("a")) == [4, 5]
    assert trie.remove("a/+", 3) is True
    assert trie.remove("a/+", 3) is False
    assert trie.remove("a/b", 9) is False
    assert trie.remove("x/#", 4) is False
    assert sorted(trie.match("a/b")) == [1, 2, 4, 5]
    assert sorted(trie) == [("#", 5), ("a/#", 4), ("a/b", 1), ("a/b", 2)]
    for topic_filter, value in list(trie):
        assert trie.remove(topic_filter, value)
    assert len(trie) == 0
    assert trie.match("a/b") == []
    assert list(trie) == []


def test_trie_prunes_empty_branches() -> None:
    trie: TopicTrie[int] = TopicTrie()
    trie.add("a/+/c/#", 1)
    trie.add("a/+", 2)
    trie.remove("a/+/c/#", 1)
    assert trie.match("a/b") == [2]
    trie.remove("a/+", 2)
    assert not trie._root.children


# -- trie versus brute force -----------------------------------------------------------------

LEVELS = st.sampled_from(["a", "b", "", "$x", "c"])
FILTER_LEVELS = st.sampled_from(["a", "b", "", "$x", "+"])
FILTERS = st.lists(FILTER_LEVELS, min_size=1, max_size=4).flatmap(
    lambda levels: st.sampled_from(["/".join(levels), "/".join([*levels, "#"]), "#"])
)
TOPICS = st.lists(LEVELS, min_size=1, max_size=5).map("/".join)


@given(
    st.lists(st.tuples(FILTERS, st.integers(0, 5)), max_size=25),
    st.lists(st.tuples(FILTERS, st.integers(0, 5)), max_size=10),
    st.lists(TOPICS, min_size=1, max_size=10),
)
@settings(max_examples=200, deadline=None)
def test_trie_matches_brute_force(
    added: list[tuple[str, int]], removed: list[tuple[str, int]], topics: list[str]
) -> None:
    trie: TopicTrie[int] = TopicTrie()
    model = list(added)
    for topic_filter, value in added:
        trie.add(topic_filter, value)
    for topic_filter, value in removed:
        expected = (topic_filter, value) in model
        if expected:
            model.remove((topic_filter, value))
        assert trie.remove(topic_filter, value) is expected
    assert len(trie) == len(model)
    for topic in topics:
        want = sorted(value for f, value in model if matches(f, topic))
        assert sorted(trie.match(topic)) == want


def _reference_match(topic_filter: str, topic: str) -> bool:
    """Spec rules spelled out directly, to check ``matches`` itself."""
    if topic.startswith("$") and topic_filter.split("/")[0] in ("+", "#"):
        return False
    f_levels, t_levels = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(f_levels):
        if part == "#":
            return len(t_levels) >= i
        if i >= len(t_levels) or (part != "+" and part != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


@given(FILTERS, TOPICS)
@settings(max_examples=300, deadline=None)
def test_matches_agrees_with_reference(topic_filter: str, topic: str) -> None:
    assert matches(topic_filter, topic) is _reference_match(topic_filter, topic)
