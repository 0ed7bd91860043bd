from __future__ import annotations

import datetime as dt
import logging

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from hedgerow import certinfo, pki
from hedgerow.broker.auth import Action, ConnectInfo, Identity, Refused
from hedgerow.core.admission import Admission
from hedgerow.core.routing_table import RoutingTable, Subscription


def info(cert: certinfo.CertInfo | None) -> ConnectInfo:
    return ConnectInfo("claimed-id", None, None, 4, ("127.0.0.1", 5), cert, True)


def read(issued: pki.Issued) -> certinfo.CertInfo:
    """What the broker hands the admission: the certificate read without cryptography."""
    return certinfo.from_pem(issued.cert_pem)


@pytest.fixture
def root() -> pki.Issued:
    return pki.make_ca("root")


async def test_admits_a_group_thing_by_its_certificate_name(root: pki.Issued) -> None:
    thing = pki.issue(root, "bme680-1")
    a = Admission([read(root)], things=["bme680-1"])
    identity = await a.authenticate(info(read(thing)))
    assert identity.name == "bme680-1" and identity.kind == "thing"
    assert identity.attributes["client_id"] == "claimed-id"
    assert identity.attributes["fingerprint"] == pki.fingerprint(thing.cert)
    assert a.refused == {}
    assert a.still_admitted(identity)
    a.revoked = frozenset({pki.fingerprint(thing.cert)})
    assert not a.still_admitted(identity)


async def test_any_of_several_roots_admits(root: pki.Issued) -> None:
    """During a root rotation the root CA file holds the old and the new root."""
    new_root = pki.make_ca("root 2")
    a = Admission([read(root), read(new_root)], things=["t-old", "t-new"])
    assert (await a.authenticate(info(read(pki.issue(root, "t-old"))))).name == "t-old"
    assert (await a.authenticate(info(read(pki.issue(new_root, "t-new"))))).name == "t-new"


@pytest.mark.parametrize("case", ["other-group", "revoked", "expired", "foreign-root", "none"])
async def test_refusals_are_logged_with_the_reason(
    root: pki.Issued, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    thing = pki.issue(root, "bme680-1")
    cert = read(thing)
    revoked: list[str] = []
    clock = certinfo.now
    if case == "other-group":
        cert = read(pki.issue(root, "other-thing"))
    elif case == "revoked":
        revoked = [pki.fingerprint(thing.cert)]
    elif case == "expired":
        clock = lambda: certinfo.now() + dt.timedelta(days=400)  # noqa: E731
    elif case == "foreign-root":
        cert = read(pki.issue(pki.make_ca("elsewhere"), "bme680-1"))
    a = Admission([read(root)], things=["bme680-1"], revoked=revoked, clock=clock)
    with caplog.at_level(logging.WARNING), pytest.raises(Refused) as e:
        await a.authenticate(info(None if case == "none" else cert))
    assert e.value.silent
    reason = {"other-group": "not-in-group", "revoked": "revoked", "expired": "expired",
              "foreign-root": "untrusted", "none": "no-certificate"}[case]  # fmt: skip
    assert a.refused == {reason: 1}
    assert f"reason={reason}" in caplog.text


def test_a_ca_with_the_roots_very_name_but_another_key_is_untrusted(root: pki.Issued) -> None:
    """Only the key identifier tells an impostor CA named like the root apart from it."""
    impostor = pki.make_ca("root")
    assert read(impostor).subject_der == read(root).subject_der
    forged = read(pki.issue(impostor, "bme680-1"))
    assert forged.issuer_der == read(root).subject_der
    a = Admission([read(root)], things=["bme680-1"])
    assert a.check(forged) == ("untrusted", "the certificate does not chain to the root CA")
    assert a.check(read(pki.issue(root, "bme680-1"))) is None


@pytest.mark.parametrize(
    ("when", "admitted"),
    [
        ("a second before not_before", False),
        ("at not_before", True),
        ("at not_after", True),
        ("a second after not_after", False),
    ],
)
async def test_validity_period_is_checked_against_the_clock(
    root: pki.Issued, when: str, admitted: bool
) -> None:
    """TLS on the local listener does not check times (NO_CHECK_TIME): admission does."""
    cert = read(pki.issue(root, "bme680-1", days=30))
    second = dt.timedelta(seconds=1)
    at = {
        "a second before not_before": cert.not_before - second,
        "at not_before": cert.not_before,
        "at not_after": cert.not_after,
        "a second after not_after": cert.not_after + second,
    }[when]
    a = Admission([read(root)], things=["bme680-1"], clock=lambda: at)
    if admitted:
        assert a.check(cert) is None
        assert (await a.authenticate(info(cert))).name == "bme680-1"
    else:
        assert a.check(cert) == ("expired", "the certificate is expired or not yet valid")
        with pytest.raises(Refused):
            await a.authenticate(info(cert))
        assert a.refused == {"expired": 1}


def test_a_certificate_without_a_common_name_is_unusable(root: pki.Issued) -> None:
    start = certinfo.now() - dt.timedelta(minutes=1)
    nameless = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme")]))
        .issuer_name(root.cert.subject)
        .public_key(pki.new_key().public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()),
            critical=False,
        )
        .sign(root.key, hashes.SHA256())
    )
    cert = certinfo.from_pem(pki.cert_to_pem(nameless))
    a = Admission([read(root)], things=["bme680-1"])
    assert a.check(cert) == ("unusable", "certificate has no common name")


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


async def test_announced_members_win_over_the_deployments_things(root: pki.Issued) -> None:
    newcomer = read(pki.issue(root, "newcomer"))
    a = Admission([read(root)], things=["old-1"], group="factory-1")
    with pytest.raises(Refused) as refused:
        await a.authenticate(info(newcomer))
    # what a v5 client reads in CONNACK's reason string: the cause and the fix
    assert "not a device of group 'factory-1'" in refused.value.message
    assert "hedgerow cloud thing attach --group factory-1 newcomer" in refused.value.message
    a.members = frozenset({"newcomer"})  # the cloud's list: no deployment needed
    identity = await a.authenticate(info(newcomer))
    assert a.still_admitted(identity)
    a.members = frozenset()  # taken out of the group: cut off, whatever the deployment says
    assert not a.still_admitted(identity)
    assert a.admitted == frozenset()


async def test_devices_with_their_own_certificates_are_admitted_by_what_vouches(
    root: pki.Issued,
) -> None:
    """V1 migration: a registered device CA vouches for what it signed; a registered device
    certificate is its own anchor and speaks for the thing the cloud names; dropping either
    from the cloud's list cuts the device off."""
    fleet_ca = pki.make_ca("Acme CA")
    jit = pki.issue(fleet_ca, "bme680-7")
    legacy = pki.issue(pki.make_ca("unknown vendor"), "AWS IoT Certificate")
    stranger = pki.issue(pki.make_ca("Acme CA"), "bme680-7")  # same name, another key
    refreshed: list[bool] = []  # by a device CA?
    a = Admission([read(root)], members=["bme680-7", "legacy-2"])

    async def refresh(cert: certinfo.CertInfo, by_ca: bool) -> None:
        refreshed.append(by_ca)

    a.refresh = refresh
    with pytest.raises(Refused):
        await a.authenticate(info(read(legacy)))
    a.set_trusted([read(fleet_ca), read(legacy)], {pki.fingerprint(legacy.cert): "legacy-2"})
    by_ca = await a.authenticate(info(read(jit)))
    own = await a.authenticate(info(read(legacy)))
    assert (by_ca.name, own.name) == ("bme680-7", "legacy-2")
    assert own.attributes["anchor"] == pki.fingerprint(legacy.cert)
    with pytest.raises(Refused):
        await a.authenticate(info(read(stranger)))
    assert a.refused["untrusted"] == 2 and refreshed == []

    a.set_members(["legacy-2"])  # not a member yet: the core asks the cloud once more
    with pytest.raises(Refused):
        await a.authenticate(info(read(jit)))
    assert refreshed == [True]

    a.set_trusted([read(legacy)], {pki.fingerprint(legacy.cert): "legacy-2"})
    assert a.still_admitted(own) and not a.still_admitted(by_ca)
