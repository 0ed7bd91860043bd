"""Pure rules: names, subscription endpoints, function settings, documents, status reports."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from hedgerow.cloud import deployments, discovery, domain
from hedgerow.cloud.domain import (
    DeploymentStatus,
    Endpoint,
    FunctionSettings,
    FunctionVersion,
    Group,
    Subscription,
)
from hedgerow.cloud.errors import InvalidInput
from hedgerow.cloud.storage.repository import DiscoveryGroup, Snapshot


@pytest.mark.parametrize("name", ["a", "pi-1", "bme680_1.x", "A" * 128, "0start"])
def test_valid_names(name: str) -> None:
    assert domain.validate_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", ".x", "a b", "a/b", "A" * 129, "é", None, 3])
def test_invalid_names(name: object) -> None:
    with pytest.raises(InvalidInput):
        domain.validate_name(name)


def test_endpoint_refs() -> None:
    assert str(domain.parse_endpoint_ref("thing:t-1", "source")) == "thing:t-1"
    assert domain.parse_endpoint_ref("cloud", "target").kind == "cloud"
    for bad in ("thing:", "lambda:x", "function:bad name", 5):
        with pytest.raises(InvalidInput):
            domain.parse_endpoint_ref(bad, "source")


def test_function_settings_defaults_and_merge() -> None:
    base = domain.function_settings_from_json({"handler": "m.f"})
    assert base == FunctionSettings(handler="m.f")
    merged = domain.function_settings_from_json({"memory_mb": 64, "environment": {"K": "v"}}, base)
    assert merged.memory_mb == 64 and merged.handler == "m.f" and merged.environment == {"K": "v"}
    for body in (
        {"handler": "m.f", "timeout_s": 0},
        {"handler": "m.f", "pinned": "yes"},
        {"handler": "m.f", "encoding": "xml"},
    ):
        with pytest.raises(InvalidInput):
            domain.function_settings_from_json(body)


def test_document_shape_follows_the_contract() -> None:
    at = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    group = Group("factory-1", "", at, "pi-1", {"open_broker": True}, None)
    fn = FunctionVersion(
        "factory-1", "temp-correct", 2, FunctionSettings("m.f", pinned=True), "ab" * 32, 10, at
    )
    snapshot = Snapshot(
        group,
        "pi-1",
        ["bme680-1"],
        [fn],
        [Subscription(1, "factory-1", "thing:bme680-1", "s/#", "cloud")],
    )
    document = json.loads(deployments.build_document(snapshot, "d-1", at))
    assert document["deployment_id"] == "d-1" and document["created_at"] == at.isoformat()
    assert document["functions"][0] == {
        "name": "temp-correct",
        "version": 2,
        "handler": "m.f",
        "runtime": "python",
        "pinned": True,
        "memory_mb": 128,
        "timeout_s": 3.0,
        "max_concurrency": 1,
        "environment": {},
        "encoding": "json",
        "run_as": None,
        "artifact": {"sha256": "ab" * 32, "size": 10},
    }
    assert document["subscriptions"] == [
        {"source": "thing:bme680-1", "topic": "s/#", "target": "cloud"}
    ]
    assert document["settings"] == {"open_broker": True}


def test_status_reports() -> None:
    report = deployments.parse_status_report(
        b'{"deployment_id": "d-1", "status": "RolledBack", "detail": "x"}'
    )
    assert report.status is DeploymentStatus.ROLLED_BACK and report.status.final
    for bad in (
        b"nope",
        b"[]",
        b'{"status": "Success"}',
        b'{"deployment_id": "d", "status": "Done"}',
    ):
        with pytest.raises(InvalidInput):
            deployments.parse_status_report(bad)


def test_discovery_body() -> None:
    body = discovery.discovery_body([(DiscoveryGroup("g", "c", [Endpoint("h", 8883)]), ["PEM"])])
    assert body == {
        "GGGroups": [
            {
                "GGGroupId": "g",
                "Cores": [
                    {
                        "thingArn": "arn:aws:iot:hedgerow:000000000000:thing/c",
                        "Connectivity": [
                            {"Id": "h_8883", "HostAddress": "h", "PortNumber": 8883, "Metadata": ""}
                        ],
                    }
                ],
                "CAs": ["PEM"],
            }
        ]
    }
    assert json.loads(discovery.encode(discovery.error_body(404, "gone")))["errorMessage"] == "gone"


def test_function_local_resources_are_validated_and_kept_out_of_old_documents() -> None:
    from hedgerow.cloud.domain import FunctionSettings, function_settings_from_json

    plain = function_settings_from_json({"handler": "m.h"})
    assert "resources" not in plain.to_json() and "groups" not in plain.to_json()
    settings = function_settings_from_json(
        {
            "handler": "m.h",
            "resources": [{"kind": "device", "source": "/dev/ttyUSB0", "access": "ro"}],
            "groups": ["gpio", "gpio"],
        }
    )
    assert settings.to_json()["resources"] == [
        {"kind": "device", "source": "/dev/ttyUSB0", "destination": "/dev/ttyUSB0",
         "access": "ro", "auto_add_group_owner": True}
    ]  # fmt: skip
    assert settings.groups == ("gpio",)
    assert FunctionSettings(**settings.to_json()).to_json() == settings.to_json()
    bad_entries = [
        {"kind": "socket", "source": "/x"},
        {"kind": "volume", "source": "relative"},
        {"kind": "volume", "source": "/var/../etc"},
        {"kind": "device", "source": "/dev/a", "destination": "/dev/b"},
        {"kind": "volume", "source": "/a", "access": "wx"},
    ]
    for bad in bad_entries:
        with pytest.raises(InvalidInput) as caught:
            function_settings_from_json({"handler": "m.h", "resources": [bad]})
        assert caught.value.field == "resources"
    with pytest.raises(InvalidInput, match="OS group"):
        function_settings_from_json({"handler": "m.h", "groups": ["no spaces"]})
