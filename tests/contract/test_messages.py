"""The contract's messages: round trips, old formats, versions, and errors naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hedgerow.contract import (
    Artifact,
    ConnectorEntry,
    ContractError,
    DeployedFunction,
    DeploymentDocument,
    DeploymentNotification,
    DeploymentStatus,
    FunctionDefinition,
    Heartbeat,
    InvalidFunction,
    InvalidMessage,
    Route,
    StatusReport,
    UnsupportedSchema,
)
from hedgerow.core.deployment import parse_document
from hedgerow.core.errors import DeploymentError

#: A document as clouds wrote it before the contract (docs/architecture.md): no schema.
OLD_DOCUMENT = (
    '{"deployment_id":"d-5f2a","group":"factory-1","core":"pi-1",'
    '"created_at":"2026-11-26T10:00:00+00:00","things":["bme680-1"],'
    '"functions":[{"name":"temp-correct","version":1,"handler":"temp_correct.handler",'
    '"runtime":"python","pinned":true,"memory_mb":128,"timeout_s":3.0,"max_concurrency":1,'
    '"environment":{"FACTOR":"5"},"encoding":"json","run_as":null,'
    '"artifact":{"sha256":"' + "ab" * 32 + '","size":1234}}],'
    '"subscriptions":[{"source":"thing:bme680-1","topic":"sensors/#",'
    '"target":"function:temp-correct"}],"settings":{"open_broker":false}}'
)


def test_an_old_document_still_parses_on_both_sides() -> None:
    doc = DeploymentDocument.from_json(OLD_DOCUMENT)
    assert doc.schema == 1 and doc.deployment_id == "d-5f2a" and doc.core == "pi-1"
    assert doc.things == ("bme680-1",) and not doc.open_broker
    (function,) = doc.functions
    assert function.name == "temp-correct" and function.definition.environment == {"FACTOR": "5"}
    assert function.artifact == Artifact("ab" * 32, 1234)
    assert doc.subscriptions == (Route("thing:bme680-1", "sensors/#", "function:temp-correct"),)
    # the only difference once written again is the schema field
    again = json.loads(doc.to_json())
    assert again.pop("schema") == 1 and again == json.loads(OLD_DOCUMENT)
    # the core keeps the exact text (the signature covers it)
    core_doc = parse_document(OLD_DOCUMENT)
    assert core_doc.text == OLD_DOCUMENT and core_doc.functions[0]["memory_mb"] == 128


def test_old_reports_heartbeats_and_notifications_still_parse() -> None:
    report = StatusReport.from_json(b'{"deployment_id":"d-1","status":"RolledBack","detail":"x"}')
    assert report == StatusReport("d-1", DeploymentStatus.ROLLED_BACK, "x")
    assert report.status.final and not DeploymentStatus.IN_PROGRESS.final
    beat = Heartbeat.from_json(b'{"version":"0.1.0","uptime":3.6,"devices":2,"spool":0,'
                               b'"functions":{"f":"running"},"counters":{"a":1}}')  # fmt: skip
    assert (beat.uptime, beat.devices, beat.functions, beat.deployment) == (
        4,
        2,
        {"f": "running"},
        None,
    )
    assert DeploymentNotification.from_json(b'{"deployment_id":"d-9"}').deployment_id == "d-9"


NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
FUNCTIONS = st.builds(
    DeployedFunction,
    st.builds(
        FunctionDefinition,
        name=NAMES,
        handler=st.just("m.h"),
        version=st.integers(0, 100),
        runtime=st.sampled_from(["python", "greengrass-v1"]),
        pinned=st.booleans(),
        memory_mb=st.integers(32, 16384),
        timeout_s=st.floats(0.01, 900.0),
        max_concurrency=st.integers(1, 64),
        environment=st.dictionaries(
            st.from_regex(r"[A-Z][A-Z0-9_]{0,5}", fullmatch=True),
            st.text(max_size=5).filter(lambda v: "\0" not in v),
            max_size=3,
        ),  # fmt: skip
        encoding=st.sampled_from(["json", "binary"]),
        run_as=st.sampled_from([None, "ggc_user", "1000:1000"]),
    ),
    st.builds(Artifact, st.from_regex(r"[0-9a-f]{64}", fullmatch=True), st.none() | st.integers(0)),
)
ENDPOINTS = st.sampled_from(["cloud", "shadow", "thing:t-1", "function:f", "connector:meter"])
CONNECTORS = st.builds(
    ConnectorEntry,
    kind=st.sampled_from(["modbus", "opcua"]),
    name=NAMES,
    version=st.integers(1, 50),
    config=st.dictionaries(
        st.sampled_from(["endpoint", "interval", "unit"]),
        st.integers() | st.text(max_size=5),
        max_size=3,
    ),
)
DOCUMENTS = st.builds(
    DeploymentDocument,
    deployment_id=st.from_regex(r"d-[0-9a-f]{4}", fullmatch=True),
    group=NAMES,
    core=NAMES,
    created_at=st.just("2026-12-04T00:00:00+00:00"),
    things=st.lists(NAMES, max_size=3).map(tuple),
    functions=st.lists(FUNCTIONS, max_size=3, unique_by=lambda f: f.name).map(tuple),
    subscriptions=st.lists(
        st.builds(Route, ENDPOINTS, st.sampled_from(["a/#", "+/b", "c"]), ENDPOINTS), max_size=3
    ).map(tuple),
    open_broker=st.booleans(),
    connectors=st.lists(CONNECTORS, max_size=3, unique_by=lambda c: c.name).map(tuple),
)


@given(DOCUMENTS)
def test_documents_round_trip(doc: DeploymentDocument) -> None:
    assert DeploymentDocument.from_json(doc.to_json()) == doc
    assert parse_document(doc.to_json()).deployment_id == doc.deployment_id


@given(
    st.from_regex(r"d-[0-9a-f]{1,8}", fullmatch=True),
    st.sampled_from(list(DeploymentStatus)),
    st.text(max_size=50),
)
def test_reports_and_notifications_round_trip(
    deployment_id: str, status: DeploymentStatus, detail: str
) -> None:
    report = StatusReport(deployment_id, status, detail)
    assert StatusReport.from_json(report.to_json()) == report
    notice = DeploymentNotification(deployment_id)
    assert DeploymentNotification.from_json(notice.to_json()) == notice


@given(
    st.builds(
        Heartbeat,
        version=st.text(max_size=8),
        uptime=st.integers(0, 10**9),
        devices=st.integers(0, 10**5),
        functions=st.dictionaries(NAMES, st.sampled_from(["running", "broken"]), max_size=3),
        spool=st.integers(0, 10**6),
        deployment=st.none() | st.just("d-1"),
        health=st.none() | st.sampled_from(["healthy", "degraded"]),
        counters=st.dictionaries(NAMES, st.integers(1, 10**6), max_size=3),
        refused=st.lists(
            st.fixed_dictionaries(
                {"deployment_id": NAMES, "file": st.just("d-1.json"), "reason": st.text(max_size=9)}
            ),
            max_size=2,
        ).map(tuple),
        things=st.dictionaries(
            NAMES,
            st.fixed_dictionaries(
                {
                    "connected": st.booleans(),
                    "last_activity": st.floats(0, 2e9, allow_nan=False) | st.integers(0, 2**31),
                }
            ),
            max_size=3,
        ),
    )
)
def test_heartbeats_round_trip(beat: Heartbeat) -> None:
    assert Heartbeat.from_json(beat.to_json()) == beat


@pytest.mark.parametrize(
    "parse",
    [
        DeploymentDocument.from_json,
        StatusReport.from_json,
        Heartbeat.from_json,
        DeploymentNotification.from_json,
    ],
)
def test_an_unknown_version_is_refused_by_name(parse: Any) -> None:
    body = json.loads(OLD_DOCUMENT) | {"status": "Success", "schema": 2}
    with pytest.raises(UnsupportedSchema) as info:
        parse(json.dumps(body))
    assert info.value.field == "schema" and "upgrade" in str(info.value)
    with pytest.raises(InvalidMessage) as bad:
        parse(json.dumps(body | {"schema": "1"}))
    assert bad.value.field == "schema"


def _document(**changes: Any) -> str:
    return json.dumps(json.loads(OLD_DOCUMENT) | changes)


def _function(**changes: Any) -> list[dict[str, Any]]:
    return [json.loads(OLD_DOCUMENT)["functions"][0] | changes]


@pytest.mark.parametrize(
    ("text", "field", "kind"),
    [
        ("not json", "document", InvalidMessage),
        ("[1]", "document", InvalidMessage),
        (_document(deployment_id="../x"), "deployment_id", InvalidMessage),
        (_document(core=None), "core", InvalidMessage),
        (_document(things="t"), "things", InvalidMessage),
        (_document(functions=_function(memory_mb=16)), "functions[0].memory_mb", InvalidFunction),
        (_document(functions=_function(name="n" * 65)), "functions[0].name", InvalidFunction),
        (
            _document(functions=_function(artifact={"sha256": "AB"})),
            "functions[0].artifact.sha256",
            InvalidMessage,
        ),
        (_document(functions=_function() * 2), "functions", InvalidMessage),
        (
            _document(subscriptions=[{"source": "device:x", "topic": "a", "target": "cloud"}]),
            "subscriptions[0].source",
            InvalidMessage,
        ),
        (_document(settings={"open_broker": "yes"}), "settings.open_broker", InvalidMessage),
        (_document(connectors={"kind": "modbus"}), "connectors", InvalidMessage),
        (_document(connectors=["modbus"]), "connectors[0].connector", InvalidMessage),
        (_document(connectors=[{"name": "m"}]), "connectors[0].kind", InvalidMessage),
        (
            _document(connectors=[{"kind": "modbus", "name": ""}]),
            "connectors[0].name",
            InvalidMessage,
        ),
        (
            _document(connectors=[{"kind": "modbus", "name": "m", "version": "2"}]),
            "connectors[0].version",
            InvalidMessage,
        ),
        (
            _document(connectors=[{"kind": "modbus", "name": "m", "config": [1]}]),
            "connectors[0].config",
            InvalidMessage,
        ),
        (
            _document(connectors=[{"kind": "modbus", "name": "m"}, {"kind": "opcua", "name": "m"}]),
            "connectors",
            InvalidMessage,
        ),
    ],
)
def test_a_malformed_document_names_the_field(text: str, field: str, kind: type) -> None:
    with pytest.raises(ContractError) as info:
        DeploymentDocument.from_json(text)
    assert type(info.value) is kind and info.value.field == field
    with pytest.raises(DeploymentError) as core_info:  # the core says the same
        parse_document(text)
    assert field in str(core_info.value)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"status":"Success"}', "deployment_id"),
        (b'{"deployment_id":"d-1","status":"Done"}', "status"),
        (b"\xff", "status report"),
    ],
)
def test_a_malformed_report_names_the_field(payload: bytes, field: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        StatusReport.from_json(payload)
    assert info.value.field == field


def test_a_long_or_structured_detail_is_kept_short_and_textual() -> None:
    long = StatusReport.from_json(json.dumps({"deployment_id": "d", "status": "Failure",
                                              "detail": "x" * 10_000}))  # fmt: skip
    assert len(long.detail) == 4096
    structured = StatusReport.from_json(
        b'{"deployment_id":"d","status":"Failure","detail":{"a":1}}'
    )
    assert structured.detail == '{"a":1}'


def test_a_heartbeat_with_streams_round_trips() -> None:
    beat = Heartbeat(version="1", streams={"vib": {"newest": 41, "backlog": 3}})
    assert Heartbeat.from_json(beat.to_json()) == beat
    assert "streams" not in json.loads(Heartbeat(version="1").to_json())  # only when any


def test_a_heartbeat_carries_each_things_state_when_any() -> None:
    beat = Heartbeat(things={"bme-1": {"connected": True, "last_activity": 1.7e9}})
    assert Heartbeat.from_json(beat.to_json()) == beat
    assert json.loads(beat.to_json())["things"] == {
        "bme-1": {"connected": True, "last_activity": 1.7e9}
    }
    assert "things" not in json.loads(Heartbeat().to_json())


def test_a_malformed_heartbeat_names_the_field() -> None:
    for payload, field in (
        (b'{"devices":-1}', "devices"),
        (b'{"counters":{"a":"1"}}', "counters"),
        (b'{"functions":{"f":1}}', "functions"),
        (b'{"deployment":5}', "deployment"),
        (b'{"uptime":"x"}', "uptime"),
        (b'{"health":3}', "health"),
        (b'{"refused":[{"deployment_id":"d-1"}]}', "refused"),
        (b'{"streams":{"s":{"newest":"1","backlog":0}}}', "streams"),
        (b'{"things":{"t":{"connected":1,"last_activity":5}}}', "things"),
        (b'{"things":{"t":{"connected":true}}}', "things"),
    ):
        with pytest.raises(InvalidMessage) as info:
            Heartbeat.from_json(payload)
        assert info.value.field == field


#: A connector entry as the cloud writes it since the industrial connectors (``hedgerow.connectors``).
METER = {
    "kind": "modbus",
    "name": "meter",
    "version": 3,
    "config": {"transport": "tcp", "host": "127.0.0.1", "port": 5020, "tags": [{"name": "v"}]},
}


def test_a_document_with_connectors_keeps_every_field_on_both_sides() -> None:
    route = {"source": "connector:meter", "topic": "meter/#", "target": "cloud"}
    text = _document(connectors=[METER], subscriptions=[route])
    doc = DeploymentDocument.from_json(text)
    assert doc.connectors == (ConnectorEntry("modbus", "meter", 3, METER["config"]),)
    assert doc.subscriptions == (Route("connector:meter", "meter/#", "cloud"),)
    assert json.loads(doc.to_json())["connectors"] == [METER]
    core_doc = parse_document(text)  # the core hands hedgerow.connectors the same entry
    assert core_doc.connectors == (METER,) and core_doc.text == text
    # a version left out is version 1, as the connectors' own reader takes it
    assert DeploymentDocument.from_json(
        _document(connectors=[{"kind": "opcua", "name": "press"}])
    ).connectors == (ConnectorEntry("opcua", "press"),)
    # no connectors: no key, so documents without them are written as before
    assert "connectors" not in json.loads(DeploymentDocument.from_json(OLD_DOCUMENT).to_json())


def test_a_heartbeat_with_connectors_round_trips() -> None:
    report = {"kind": "modbus", "version": 3, "state": "running", "polls": 12, "values": 40,
              "errors": 1, "reconnects": 0, "requests": 12, "latency": 0.004}  # fmt: skip
    beat = Heartbeat(version="1", connectors={"meter": report})
    assert Heartbeat.from_json(beat.to_json()) == beat
    assert json.loads(beat.to_json())["connectors"] == {"meter": report}
    assert "connectors" not in json.loads(Heartbeat(version="1").to_json())  # only when any
    for payload in (b'{"connectors":[1]}', b'{"connectors":{"m":3}}',
                    b'{"connectors":{"m":{"kind":1}}}'):  # fmt: skip
        with pytest.raises(InvalidMessage) as info:
            Heartbeat.from_json(payload)
        assert info.value.field == "connectors"


def test_local_resources_groups_and_secrets_are_kept_on_both_sides() -> None:
    from hedgerow.functions.resources import LocalResource
    from hedgerow.functions.spec import FunctionSpec

    volume = {"kind": "volume", "source": "/srv/data", "destination": "/data", "access": "ro",
              "auto_add_group_owner": True}  # fmt: skip
    sealed = {"name": "db", "version_id": "v1", "stages": ["AWSCURRENT"], "created_ms": 1,
              "binary": False, "sealed": "AAAA"}  # fmt: skip
    functions = _function(resources=[volume], groups=["dialout"], secrets=["db"])
    text = _document(functions=functions, secrets=[sealed])
    doc = DeploymentDocument.from_json(text)
    (function,) = doc.functions
    assert function.definition.groups == ("dialout",) and function.definition.secrets == ("db",)
    assert doc.secrets == (sealed,)
    again = json.loads(doc.to_json())
    assert again["functions"][0]["resources"] == [volume] and again["secrets"] == [sealed]
    core_doc = parse_document(text)  # the runtime holds the resource as a LocalResource
    spec = FunctionSpec.from_document(core_doc.functions[0])
    assert spec.resources == (LocalResource("volume", "/srv/data", "/data", "ro"),)
    assert spec.to_document()["resources"] == [volume]
    assert [s.name for s in core_doc.secrets] == ["db"]
    # none declared: no keys, so the entries of functions without them stay as they were
    plain = json.loads(DeploymentDocument.from_json(OLD_DOCUMENT).to_json())
    assert not {"resources", "groups", "secrets"} & (set(plain["functions"][0]) | set(plain))


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (_document(functions=_function(groups="dialout")), "functions[0].groups"),
        (_document(functions=_function(groups=["no spaces"])), "functions[0].groups"),
        (_document(functions=_function(secrets=["a/b"])), "functions[0].secrets"),
        (_document(functions=_function(resources=[{"kind": "device"}])), "functions[0].resources"),
        (
            _document(functions=_function(resources=[{"source": "/x"}] * 33)),
            "functions[0].resources",
        ),
        (_document(secrets=["db"]), "secrets[0].secret"),
    ],
)
def test_malformed_local_access_names_the_field(text: str, field: str) -> None:
    with pytest.raises(ContractError) as info:
        DeploymentDocument.from_json(text)
    assert info.value.field == field
    with pytest.raises(DeploymentError):  # the core refuses it too
        parse_document(text)


def test_a_heartbeat_with_function_errors_round_trips() -> None:
    errors = {"crunch": {"failed": 2, "crashes": 1, "timeouts": 1, "last_error": "boom"}}
    beat = Heartbeat(version="1", function_errors=errors)
    assert Heartbeat.from_json(beat.to_json()) == beat
    assert json.loads(beat.to_json())["function_errors"] == errors
    assert "function_errors" not in json.loads(Heartbeat(version="1").to_json())
    for payload in (b'{"function_errors":{"f":{"failed":"2"}}}',
                    b'{"function_errors":{"f":{"last_error":3}}}'):  # fmt: skip
        with pytest.raises(InvalidMessage) as info:
            Heartbeat.from_json(payload)
        assert info.value.field == "function_errors"
