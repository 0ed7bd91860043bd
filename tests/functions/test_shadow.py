"""The local shadow service: AWS shadow semantics, replies, persistence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hedgerow.core.shadow import ShadowRejected, ShadowService, delta, parse_topic

BASE = "$aws/things/lamp-1/shadow"


def replies(service: ShadowService, op: str, body: Any) -> dict[str, dict[str, Any]]:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return {topic: json.loads(data) for topic, data in service.handle("lamp-1", op, payload)}


def test_update_desired_yields_accepted_documents_and_delta() -> None:
    service = ShadowService(None, clock=lambda: 1000.0)
    out = replies(
        service, "update", {"state": {"desired": {"color": "red", "level": 3}}, "clientToken": "t1"}
    )
    assert set(out) == {
        f"{BASE}/update/accepted",
        f"{BASE}/update/documents",
        f"{BASE}/update/delta",
    }
    accepted = out[f"{BASE}/update/accepted"]
    assert accepted["version"] == 1 and accepted["clientToken"] == "t1"
    assert accepted["state"] == {"desired": {"color": "red", "level": 3}}
    assert accepted["metadata"] == {
        "desired": {"color": {"timestamp": 1000}, "level": {"timestamp": 1000}}
    }
    assert out[f"{BASE}/update/delta"]["state"] == {"color": "red", "level": 3}
    documents = out[f"{BASE}/update/documents"]
    assert documents["previous"] is None and documents["current"]["version"] == 1

    out = replies(service, "update", {"state": {"reported": {"color": "red", "level": 1}}})
    assert f"{BASE}/update/delta" not in out  # no desired in the request
    got = replies(service, "get", b"")[f"{BASE}/get/accepted"]
    assert got["version"] == 2
    assert got["state"]["delta"] == {"level": 3}
    assert got["state"]["reported"] == {"color": "red", "level": 1}

    service.update("lamp-1", {"state": {"reported": {"level": 3}}})
    assert "delta" not in service.get("lamp-1")["state"]  # type: ignore[index]


def test_null_deletes_keys_and_sections() -> None:
    service = ShadowService(None)
    service.update("lamp-1", {"state": {"desired": {"a": 1, "nested": {"b": 2, "c": 3}}}})
    service.update("lamp-1", {"state": {"desired": {"a": None, "nested": {"b": None}}}})
    assert service.get("lamp-1")["state"]["desired"] == {"nested": {"c": 3}}  # type: ignore[index]
    service.update("lamp-1", {"state": {"desired": None}})
    assert "desired" not in service.get("lamp-1")["state"]  # type: ignore[index]


def test_rejections_carry_aws_codes() -> None:
    service = ShadowService(None)
    out = replies(service, "get", b"")
    assert out[f"{BASE}/get/rejected"]["code"] == 404
    assert replies(service, "update", b"{not json")[f"{BASE}/update/rejected"]["code"] == 400
    assert replies(service, "update", {"nostate": 1})[f"{BASE}/update/rejected"]["code"] == 400
    assert (
        replies(service, "update", {"state": {"other": {}}})[f"{BASE}/update/rejected"]["code"]
        == 400
    )
    assert replies(service, "update", b"x" * 9000)[f"{BASE}/update/rejected"]["code"] == 413
    service.update("lamp-1", {"state": {"reported": {"on": True}}})
    conflict = replies(
        service, "update", {"state": {"reported": {"on": False}}, "version": 7, "clientToken": "c"}
    )
    assert conflict[f"{BASE}/update/rejected"] == {
        "code": 409,
        "message": "Version conflict",
        "timestamp": conflict[f"{BASE}/update/rejected"]["timestamp"],
        "clientToken": "c",
    }
    with pytest.raises(ShadowRejected) as info:
        service.update("lamp-1", {"state": {"reported": {"on": False}}, "version": 0})
    assert info.value.code == 409
    assert (
        replies(service, "update", {"state": {"reported": {"on": False}}, "version": 1})[
            f"{BASE}/update/accepted"
        ]["version"]
        == 2
    )


def test_delete_keeps_the_version_counter() -> None:
    service = ShadowService(None)
    service.update("lamp-1", {"state": {"reported": {"on": True}}})
    out = replies(service, "delete", b"")
    assert out[f"{BASE}/delete/accepted"]["version"] == 1
    assert service.get("lamp-1") is None
    with pytest.raises(ShadowRejected) as info:
        service.delete("lamp-1")
    assert info.value.code == 404
    assert service.update("lamp-1", {"state": {"reported": {"on": False}}})["version"] == 2


def test_persistence_survives_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "shadows.json"
    first = ShadowService(store)
    first.update("a", {"state": {"desired": {"x": 1}}})
    first.update("b", {"state": {"reported": {"y": 2}}})
    second = ShadowService(store)
    assert second.things() == ["a", "b"]
    assert second.get("a")["state"] == {"desired": {"x": 1}, "delta": {"x": 1}}  # type: ignore[index]
    assert second.update("a", {"state": {"reported": {"x": 1}}})["version"] == 2


def test_topic_parsing_and_delta() -> None:
    assert parse_topic("$aws/things/lamp-1/shadow/update") == ("lamp-1", "update")
    assert parse_topic("$aws/things/lamp-1/shadow/update/accepted") is None
    assert parse_topic("sensors/x") is None
    assert delta({"a": 1, "n": {"b": 2, "c": 3}}, {"a": 1, "n": {"b": 2}}) == {"n": {"c": 3}}
