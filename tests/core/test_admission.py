from __future__ import annotations

import datetime as dt
import logging

import pytest

from hedgerow import pki
from hedgerow.broker.auth import Action, ConnectInfo, Identity, Refused
from hedgerow.core.admission import Admission
from hedgerow.core.routing import RoutingTable, Subscription


def info(cert: object) -> ConnectInfo:
    return ConnectInfo("claimed-id", None, None, 4, ("127.0.0.1", 5), cert, True)  # type: ignore[arg-type]


@pytest.fixture
def root() -> pki.Issued:
    return pki.make_ca("root")


async def test_admits_a_group_thing_by_its_certificate_name(root: pki.Issued) -> None:
    thing = pki.issue(root, "bme680-1")
    a = Admission([root.cert], things=["bme680-1"])
    identity = await a.authenticate(info(thing.cert))
    assert identity.name == "bme680-1" and identity.kind == "thing"
    assert identity.attributes["client_id"] == "claimed-id"


@pytest.mark.parametrize("case", ["other-group", "revoked", "expired", "foreign-root", "none"])
async def test_refusals_are_logged_with_the_reason(
    root: pki.Issued, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    thing = pki.issue(root, "bme680-1")
    cert = thing.cert
    revoked: list[str] = []
    clock = pki.now
    if case == "other-group":
        cert = pki.issue(root, "other-thing").cert
    elif case == "revoked":
        revoked = [pki.fingerprint(cert)]
    elif case == "expired":
        clock = lambda: pki.now() + dt.timedelta(days=400)  # noqa: E731
    elif case == "foreign-root":
        cert = pki.issue(pki.make_ca("elsewhere"), "bme680-1").cert
    a = Admission([root.cert], things=["bme680-1"], revoked=revoked, clock=clock)
    with caplog.at_level(logging.WARNING), pytest.raises(Refused) as e:
        await a.authenticate(info(None if case == "none" else cert))
    assert e.value.silent
    reason = {"other-group": "not-in-group", "revoked": "revoked", "expired": "expired",
              "foreign-root": "untrusted", "none": "no-certificate"}[case]  # fmt: skip
    assert a.refused == {reason: 1}
    assert f"reason={reason}" in caplog.text


def test_authorize_follows_the_table_and_counts_denials() -> None:
    table = RoutingTable([Subscription("thing:a", "sensors/a/#", "cloud")])
    a = Admission([], table=table)
    thing = Identity("a", kind="thing")
    assert a.authorize(thing, Action.PUBLISH, "sensors/a/t")
    assert not a.authorize(thing, Action.PUBLISH, "sensors/b/t")
    assert not a.authorize(thing, Action.SUBSCRIBE, "#")
    assert (a.denied_publish, a.denied_subscribe) == (1, 1)
    assert a.still_admitted(Identity("x", kind="thing")) is False


def test_a_device_may_use_its_own_shadow_only() -> None:
    a = Admission([])
    me = Identity("lamp", kind="thing")
    assert a.authorize(me, Action.PUBLISH, "$aws/things/lamp/shadow/update")
    assert a.authorize(me, Action.SUBSCRIBE, "$aws/things/lamp/shadow/#")
    assert a.authorize(me, Action.SUBSCRIBE, "$aws/things/lamp/shadow/update/accepted")
    assert not a.authorize(me, Action.PUBLISH, "$aws/things/lamp/shadow/update/accepted")
    assert not a.authorize(me, Action.PUBLISH, "$aws/things/other/shadow/update")
    assert not a.authorize(me, Action.SUBSCRIBE, "$aws/things/+/shadow/#")


def test_a_device_hears_another_only_where_a_subscription_routes_it() -> None:
    from hedgerow.broker.auth import Identity

    table = RoutingTable(
        [
            Subscription("thing:a", "sensors/#", "thing:b"),
            Subscription("thing:c", "sensors/#", "cloud"),
        ]
    )
    adm = Admission([], table=table)
    a, b, c = (Identity(n, kind="thing") for n in "abc")
    assert adm.may_deliver(a, b, "sensors/a/temp")
    assert not adm.may_deliver(c, b, "sensors/c/temp")  # c's readings go to the cloud only
    assert not adm.may_deliver(a, c, "sensors/a/temp")
    core_side = Identity("router", kind="client")
    assert adm.may_deliver(core_side, b, "sensors/x")  # not device-to-device: not asked here
    assert table.counter_items()[0][1] == 0  # checking a delivery does not count a route
    open_table = RoutingTable([], open_broker=True)
    assert Admission([], table=open_table).may_deliver(c, b, "anything")
