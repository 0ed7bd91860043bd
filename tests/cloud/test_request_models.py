"""Request bodies parsed once at the edge: the pure parsing layer, the OpenAPI document
generated from the same models, and a live server answering bad bodies by field path."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import pytest
from starlette.routing import Route

from hedgerow.cloud.api import OPENAPI, OPERATIONS, ApiContext, create_app
from hedgerow.cloud.api.deployments import FleetApply
from hedgerow.cloud.api.functions import UpdateFunction
from hedgerow.cloud.api.parsing import UNSET, BodyError, checked, json_schema, parse, present
from hedgerow.cloud.errors import InvalidInput

from .conftest import Cloud


def error_of(response: Any) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


@dataclasses.dataclass(frozen=True)
class Inner:
    port: int


@dataclasses.dataclass(frozen=True)
class Outer:
    forbid_extra: ClassVar[bool] = True
    name: str = checked(lambda v: _name(v))
    inner: list[Inner] = dataclasses.field(default_factory=list)
    ratio: float | None = None


def _name(value: object) -> str:
    if not isinstance(value, str) or not value.isalpha():
        raise InvalidInput(f"invalid name {value!r}")
    return value


def test_a_nested_value_of_the_wrong_type_is_named_by_its_path() -> None:
    with pytest.raises(BodyError) as caught:
        parse(Outer, {"name": "ok", "inner": [{"port": 1}, {"port": "two"}]})
    assert caught.value.status == 422
    assert caught.value.field == "inner[1].port"
    assert "inner[1].port must be an integer" in caught.value.message


def test_domain_checks_keep_their_message_and_status_and_gain_the_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(Outer, {"name": "not ok"})
    assert type(caught.value) is InvalidInput and caught.value.status == 400
    assert caught.value.field == "name" and "invalid name" in caught.value.message
    with pytest.raises(InvalidInput) as missing:
        parse(Outer, {})
    assert missing.value.field == "name", "an absent checked field goes through its check"


def test_unknown_fields_are_refused_where_the_model_says_so() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(Outer, {"name": "ok", "colour": "red"})
    assert "unknown fields: colour" in caught.value.message and "allowed: inner" in (
        caught.value.message
    )
    parsed = parse(Outer, {"name": "ok", "inner": [{"port": 3}], "ratio": 1})
    assert parsed == Outer("ok", [Inner(3)], 1.0)


def test_bool_is_not_an_integer_and_null_is_not_a_string() -> None:
    with pytest.raises(BodyError):
        parse(Inner, {"port": True})
    with pytest.raises(BodyError) as caught:
        parse(FleetApply, {"groups": ["g"], "subscriptions": [{"source": None}]})
    assert caught.value.field == "subscriptions[0].source"


def test_a_patch_knows_absent_from_null() -> None:
    body = parse(UpdateFunction, {"run_as": None, "memory_mb": 256})
    assert body.handler is UNSET
    assert present(body) == {"run_as": None, "memory_mb": 256}
    assert body.settings() == {"run_as": None, "memory_mb": 256}


def test_the_schema_is_generated_from_the_models() -> None:
    definitions: dict[str, Any] = {}
    ref = json_schema(Outer, definitions)
    assert ref == {"$ref": "#/components/schemas/Outer"}
    outer = definitions["Outer"]
    assert outer["required"] == ["name"] and outer["additionalProperties"] is False
    assert outer["properties"]["inner"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Inner"},
    }
    assert outer["properties"]["ratio"] == {"anyOf": [{"type": "number"}, {"type": "null"}]}
    assert definitions["Inner"]["properties"]["port"] == {"type": "integer"}


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if "$ref" in value else []
        return found + [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def test_every_operation_with_a_body_has_its_schema_and_every_ref_resolves() -> None:
    schemas = OPENAPI["components"]["schemas"]
    for op in OPERATIONS:
        entry = OPENAPI["paths"][op.path][op.method.lower()]
        if op.body is not None:
            schema = entry["requestBody"]["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{op.body.__name__}"}
            assert set(schemas[op.body.__name__]["properties"]) == {
                f.name for f in dataclasses.fields(op.body)
            }
        assert ("security" in entry) == (not op.public), op.path
        if op.response is not None:
            content = entry["responses"][str(op.status)]["content"][op.produces]
            assert content["schema"] == {"$ref": f"#/components/schemas/{op.response.__name__}"}
    for ref in _refs(OPENAPI):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref
    created = schemas["ThingCreated"]
    assert created["properties"]["private_key"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert "deployments" not in schemas["FleetApplied"]["required"]
    create_function = schemas["CreateFunction"]["properties"]
    assert create_function["memory_mb"]["type"] == "integer"
    assert {"$ref": "#/components/schemas/ArtifactRef"} in create_function["artifact"]["anyOf"]


async def test_the_served_document_lists_every_route_of_the_app(cloud: Cloud) -> None:
    served = await cloud.ok("GET", "/api/openapi.json")
    assert served == OPENAPI
    app = create_app(ApiContext(cloud.server.services, [], 1))
    routes = [
        (r.path, method.lower())
        for r in app.routes
        if isinstance(r, Route) and (r.path.startswith("/api/") or r.path == "/metrics")
        for method in r.methods or ()
        if method != "HEAD"
    ]
    assert len(routes) == len(OPERATIONS) == len(set(routes))
    for path, method in routes:
        assert method in served["paths"][path], (method, path)
        assert served["paths"][path][method]["operationId"]
    documented = {(p, m) for p, entry in served["paths"].items() for m in entry}
    assert documented == set(routes)


async def test_bad_bodies_are_refused_by_field_path_and_nothing_is_stored(cloud: Cloud) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "g"})
    wrong_type = await cloud.api.post(
        "/api/v1/groups/g/subscriptions",
        json={"source": "cloud", "topic": 7, "target": "cloud"},
    )
    assert wrong_type.status_code == 422
    assert error_of(wrong_type)["field"] == "topic"
    assert "topic must be a string" in error_of(wrong_type)["message"]
    missing = await cloud.api.post(
        "/api/v1/groups/g/subscriptions", json={"source": "cloud", "target": "cloud"}
    )
    assert missing.status_code == 422 and error_of(missing)["field"] == "topic"
    nested = await cloud.api.post(
        "/api/v1/fleet/apply",
        json={"groups": ["g"], "subscriptions": [{"source": "cloud", "topic": "t", "target": 1}]},
    )
    assert nested.status_code == 422
    assert error_of(nested)["field"] == "subscriptions[0].target"
    memory = await cloud.api.post(
        "/api/v1/groups/g/functions",
        json={"name": "f", "handler": "m.f", "artifact": "0" * 64, "memory_mb": "big"},
    )
    assert memory.status_code == 422 and error_of(memory)["field"] == "memory_mb"
    domain = await cloud.api.post("/api/v1/groups", json={"name": "bad name"})
    # the domain's own field names stay (the console maps them onto its inputs)
    assert domain.status_code == 400 and error_of(domain)["field"] == "group name"
    assert (await cloud.ok("GET", "/api/v1/groups/g/subscriptions"))["count"] == 0
    assert (await cloud.ok("GET", "/api/v1/groups/g/functions"))["count"] == 0
    assert [g["name"] for g in (await cloud.ok("GET", "/api/v1/groups"))["items"]] == ["g"]


def test_response_views_keep_the_entities_json_shapes() -> None:
    import datetime as dt

    from hedgerow.cloud.api.responses import CertificateView, MessageList, plain
    from hedgerow.cloud.domain import Certificate, Message

    text = Message(1, "a/b", b"21.5", "pi-1", 1_700_000_000.0)
    binary = Message(2, "a/b", b"\xff\x00", "pi-1", 1_700_000_001.0)
    listed = plain(MessageList.of([text, binary]))
    assert listed == {"items": [text.to_json(), binary.to_json()], "count": 2}
    assert "payload" not in listed["items"][1] and "payload_base64" not in listed["items"][0]
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert = Certificate("ab" * 32, "thing", "t1", "01", now, now, None, "PEM")
    assert plain(CertificateView.of(cert)) == cert.to_json()
    assert plain(CertificateView.of(cert, pem=True)) == {**cert.to_json(), "pem": "PEM"}
