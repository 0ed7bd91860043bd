"""The broker's pure parts, without sockets: subscription table, retained store, sessions."""

from __future__ import annotations

from hedgerow.broker.budget import OutboundBudget
from hedgerow.broker.messages import Message
from hedgerow.broker.retained import RetainedStore
from hedgerow.broker.sessions import Session, SessionStore
from hedgerow.broker.stats import Counters, snapshot, sys_topics
from hedgerow.broker.subscriptions import Subscription, SubscriptionTable
from hedgerow.mqtt.codec import Decoder
from hedgerow.mqtt.packets import Properties, ProtocolVersion, Publish


def session(name: str) -> Session:
    return Session(name, Counters(), max_queued=3, budget=OutboundBudget(1 << 20, 1 << 24))


def test_routes_merge_overlapping_filters_per_session() -> None:
    table = SubscriptionTable()
    a, b = session("a"), session("b")
    table.add(Subscription(a, "x/+", 0, identifier=1))
    table.add(Subscription(a, "x/#", 2, identifier=2))
    table.add(Subscription(b, "x/y", 1))
    routes, groups = table.routes("x/y")
    by_session = {r.session.client_id: r for r in routes}
    assert groups == []
    assert by_session["a"].qos == 2 and sorted(by_session["a"].identifiers) == [1, 2]
    assert by_session["b"].qos == 1 and by_session["b"].identifiers == ()
    assert table.routes("x/y") is table.routes("x/y")  # cached
    sub = Subscription(b, "x/#", 0)
    table.add(sub)  # invalidates the cache
    assert {r.session.client_id for r in table.routes("z")[0]} == set()
    table.remove(sub)
    assert table.count == 3


def test_shared_group_picks_round_robin_and_dollar_topics_need_explicit_filters() -> None:
    table = SubscriptionTable()
    a, b = session("a"), session("b")
    table.add(Subscription(a, "$share/g/jobs/+", 0))
    table.add(Subscription(b, "$share/g/jobs/+", 0))
    table.add(Subscription(a, "#", 0))
    _, groups = table.routes("jobs/1")
    assert len(groups) == 1
    picks = [groups[0].pick() for _ in range(4)]
    assert [p.session.client_id for p in picks if p] == ["a", "b", "a", "b"]
    assert table.routes("$SYS/x")[0] == []


def test_retained_store_matches_limits_and_clears() -> None:
    store = RetainedStore(limit=2)
    assert store.store(Message("a/1", b"1", 0, True))
    assert store.store(Message("a/2", b"2", 0, True))
    assert not store.store(Message("a/3", b"3", 0, True))  # full, new topic
    assert store.store(Message("a/1", b"one", 0, True))  # replacing is fine
    assert sorted(m.payload for m in store.matching("a/+")) == [b"2", b"one"]
    assert [m.payload for m in store.matching("a/2")] == [b"2"]
    store.store(Message("a/2", b"", 0, True))
    assert len(store) == 1


def test_retained_message_expires() -> None:
    store = RetainedStore(limit=10)
    store.store(Message("e", b"x", 0, True, Properties(message_expiry_interval=5), now=100.0))
    assert [m.payload for m in store.matching("e", now=104.0)] == [b"x"]
    assert list(store.matching("e", now=105.0)) == []
    assert len(store) == 0


def test_offline_session_queue_is_bounded() -> None:
    s = session("away")
    for i in range(5):
        s.deliver(Message("t", str(i).encode(), 1, False), 1, False, ())
    s.deliver(Message("t", b"qos0", 0, False), 0, False, ())
    assert s.queued == 3
    assert s.counters.dropped_queue_full == 2


def test_session_store_expiry() -> None:
    store = SessionStore(Counters(), max_queued=10, budget=OutboundBudget(1 << 20, 1 << 24))
    s = store.create("c")
    s.expires_at = 10.0
    assert store.expired(9.0) == [] and store.expired(10.0) == [s]
    store.discard(s, lambda sub: None)
    assert len(store) == 0


def test_encoded_forms_are_shared_and_decode_back() -> None:
    m = Message(
        "t/é", b"payload", 1, False, Properties(user_properties=(("k", "v"),), topic_alias=3)
    )
    assert m.encode0(False, False) is m.encode0(False, False)
    head, tail = m.encode_parts(True, 1, True, True, (7,))
    decoder = Decoder(ProtocolVersion.V5, server=False)
    decoder.receive_data(head + (513).to_bytes(2, "big") + tail)
    p = decoder.next_packet()
    assert isinstance(p, Publish)
    assert (p.topic, p.payload, p.qos, p.retain, p.dup, p.packet_id) == (
        "t/é",
        b"payload",
        1,
        True,
        True,
        513,
    )
    assert p.properties.subscription_identifiers == (7,) and p.properties.topic_alias is None
    assert p.properties.user_properties == (("k", "v"),)


def test_sys_topics_from_snapshot() -> None:
    stats = snapshot(
        Counters(), clients_connected=2, sessions=3, subscriptions=4, retained=5, queued_messages=6
    )
    topics = dict(sys_topics(stats))
    assert topics["$SYS/broker/clients/connected"] == b"2"
    assert topics["$SYS/broker/retained"] == b"5"


def test_negotiate_v5_and_311_terms() -> None:
    from hedgerow.broker.config import BrokerConfig
    from hedgerow.broker.negotiate import NEVER_EXPIRES, negotiate
    from hedgerow.mqtt.packets import Connect

    config = BrokerConfig(max_inflight=100, max_keepalive=60, max_session_expiry=3600)
    v5 = Connect(
        "c",
        ProtocolVersion.V5,
        keepalive=0,
        properties=Properties(
            session_expiry_interval=NEVER_EXPIRES, receive_maximum=10, maximum_packet_size=500
        ),
    )
    terms = negotiate(v5, config, "assigned-1")
    assert (terms.session_expiry, terms.window, terms.keepalive, terms.max_out_packet) == (
        3600,
        10,
        60,
        500,
    )
    ack = terms.ack_properties
    assert ack.server_keep_alive == 60 and ack.session_expiry_interval == 3600
    assert ack.assigned_client_identifier == "assigned-1"
    old = negotiate(Connect("c", ProtocolVersion.V311, clean_start=False, keepalive=30), config)
    assert (old.session_expiry, old.window, old.keepalive) == (None, 100, 30)
    assert negotiate(Connect("c", ProtocolVersion.V311), config).session_expiry == 0
