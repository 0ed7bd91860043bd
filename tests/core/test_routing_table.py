from __future__ import annotations

import pytest

from hedgerow.core.routing_table import RoutingError, RoutingTable, Subscription


def table(*subs: tuple[str, str, str], open_broker: bool = False) -> RoutingTable:
    return RoutingTable((Subscription(*s) for s in subs), open_broker=open_broker)


def test_routes_by_source_and_filter_and_counts() -> None:
    t = table(
        ("thing:a", "sensors/#", "function:f"),
        ("thing:a", "sensors/+/temp", "cloud"),
        ("thing:b", "sensors/#", "cloud"),
        ("function:f", "corrected/#", "cloud"),
    )
    assert t.route("thing:a", "sensors/x/temp") == ["function:f", "cloud"]
    assert t.route("thing:a", "sensors/x/hum") == ["function:f"]
    assert t.route("thing:c", "sensors/x/temp") == []
    assert t.route("function:f", "corrected/1") == ["cloud"]
    assert t.counters == [2, 1, 0, 1]
    assert t.route("thing:a", "sensors/x/temp") == ["function:f", "cloud"]  # cached answer
    assert t.counters[0] == 3


def test_wildcards_do_not_match_dollar_topics() -> None:
    t = table(("thing:a", "#", "cloud"), ("thing:a", "$aws/things/a/shadow/update", "shadow"))
    assert t.route("thing:a", "$aws/things/a/shadow/update") == ["shadow"]
    assert t.route("thing:a", "x/y") == ["cloud"]


def test_least_privilege_acl() -> None:
    t = table(("thing:a", "sensors/a/#", "cloud"), ("cloud", "commands/a/+", "thing:a"))
    assert t.may_publish("a", "sensors/a/t")
    assert not t.may_publish("a", "sensors/b/t")
    assert not t.may_publish("b", "sensors/a/t")
    assert t.may_subscribe("a", "commands/a/+")
    assert t.may_subscribe("a", "commands/a/reboot")
    assert not t.may_subscribe("a", "commands/#")
    assert not t.may_subscribe("b", "commands/a/reboot")
    opened = table(open_broker=True)
    assert opened.may_publish("anyone", "any/topic") and opened.may_subscribe("anyone", "#")


def test_bad_entries_name_the_field() -> None:
    with pytest.raises(RoutingError) as e:
        Subscription.from_dict({"source": "device:x", "topic": "a", "target": "cloud"})
    assert e.value.field == "source"
    with pytest.raises(RoutingError) as e:
        Subscription.from_dict({"source": "cloud", "topic": "a/#/b", "target": "shadow"})
    assert e.value.field == "topic"


def test_cache_is_bounded() -> None:
    t = RoutingTable([Subscription("thing:a", "#", "cloud")], cache_size=4)
    for i in range(10):
        assert t.match("thing:a", f"t/{i}") == (0,)
    assert len(t._cache) <= 4


def test_backoff_is_capped_and_jittered() -> None:
    from hedgerow.backoff import BackoffPolicy

    schedule = BackoffPolicy(base=0.5, cap=8.0)
    assert [schedule.ceiling(a) for a in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert schedule.ceiling(10_000) == 8.0
    assert schedule.delay(3, lambda low, high: high) == 4.0
    assert schedule.delay(3, lambda low, high: low) == 0.0
    import random

    rng = random.Random(1)
    delays = [schedule.delay(5, rng.uniform) for _ in range(200)]
    assert all(0 <= d <= 8.0 for d in delays) and len({round(d, 3) for d in delays}) > 150
