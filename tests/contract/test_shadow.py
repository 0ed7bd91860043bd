"""The shadow sync rules (pure): messages, AWS-style merges, and the convergence rule."""

from __future__ import annotations

import pytest

from hedgerow.contract.errors import InvalidMessage, UnsupportedSchema
from hedgerow.contract.shadow import (
    CloudShadow,
    ShadowState,
    ShadowUpdate,
    delta,
    merge_cloud_update,
    merge_core_update,
    merge_state,
    patch_between,
)


def test_messages_round_trip_and_refuse_what_they_do_not_know() -> None:
    update = ShadowUpdate("lamp", 3, 2, {"led": "on"}, {"led": "off"})
    assert ShadowUpdate.from_json(update.to_json()) == update
    state = ShadowState("lamp", 5, {"led": "on"}, {}, 3, ("desired",), "tok")
    assert ShadowState.from_json(state.to_json()) == state
    with pytest.raises(UnsupportedSchema) as schema:
        ShadowUpdate.from_json(b'{"schema": 2, "thing": "lamp", "seq": 1}')
    assert schema.value.field == "schema"
    with pytest.raises(InvalidMessage) as section:
        ShadowUpdate.from_json(b'{"thing": "lamp", "seq": 1, "reported": [1]}')
    assert section.value.field == "reported"
    deep: dict[str, object] = {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}
    with pytest.raises(InvalidMessage, match="deeper"):
        ShadowUpdate.from_json(ShadowUpdate("lamp", 1, 0, deep).to_json())
    with pytest.raises(InvalidMessage) as rejected:
        ShadowState.from_json(b'{"thing": "lamp", "version": 1, "rejected": ["state"]}')
    assert rejected.value.field == "rejected"


def test_merges_follow_aws_and_patches_invert_them() -> None:
    base = {"led": "on", "fan": {"speed": 2, "mode": "auto"}, "old": 1}
    merged = merge_state(base, {"fan": {"speed": None, "mode": None}, "old": None, "new": [1]})
    assert merged == {"led": "on", "new": [1]}
    assert base["fan"] == {"speed": 2, "mode": "auto"}  # inputs untouched
    target = {"led": "off", "fan": {"speed": 3}}
    assert merge_state(base, patch_between(base, target)) == target
    assert patch_between(target, target) == {}
    assert delta({"led": "on", "fan": {"speed": 3}}, {"led": "on", "fan": {"speed": 1}}) == {
        "fan": {"speed": 3}
    }


def test_reported_device_wins_desired_cloud_wins_on_a_conflict() -> None:
    shadow = CloudShadow("lamp", {"led": "on"}, {"led": "off"}, version=4, desired_version=4)
    # the cloud changes desired while the core (which had seen version 4) is offline
    shadow = merge_cloud_update(shadow, {"led": "green"}, None)
    assert (shadow.version, shadow.desired_version) == (5, 5)
    # the core's offline changes arrive: reported taken, its desired (base 4 < 5) refused
    out = merge_core_update(
        shadow, "pi-1", ShadowUpdate("lamp", 7, 4, {"led": "red"}, {"led": "red", "t": 30})
    )
    assert out.rejected == ("desired",)
    assert out.changed and out.shadow.version == 6
    assert out.shadow.desired == {"led": "green"}
    assert out.shadow.reported == {"led": "red", "t": 30}
    assert out.shadow.core_seqs == {"pi-1": 7}
    assert out.shadow.state_for("pi-1", out.rejected).seq == 7


def test_a_core_that_saw_the_latest_desired_may_change_it_twice_in_a_row() -> None:
    shadow = merge_cloud_update(CloudShadow("lamp"), {"led": "on"}, None)
    first = merge_core_update(shadow, "pi-1", ShadowUpdate("lamp", 1, 1, {"led": "red"}))
    second = merge_core_update(first.shadow, "pi-1", ShadowUpdate("lamp", 2, 1, {"led": "blue"}))
    assert not first.rejected and not second.rejected
    assert second.shadow.desired == {"led": "blue"} and second.shadow.version == 3
    # reported-only changes from the cloud do not move desired_version
    third = merge_cloud_update(second.shadow, None, {"t": 1})
    assert third.desired_version == shadow.desired_version
    # an update that changes nothing keeps the version
    same = merge_core_update(third, "pi-1", ShadowUpdate("lamp", 3, 4, None, {"t": 1}))
    assert not same.changed and same.shadow.version == third.version
    cleared = merge_cloud_update(third, None, None, clear_desired=True)
    assert cleared.desired == {} and cleared.document()["state"]["reported"] == {"t": 1}
