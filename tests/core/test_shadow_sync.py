"""The core's side of shadow sync, without sockets: local changes become updates for the
cloud (with seq and base version), cloud states are applied by the version rules, and the
sync state survives a restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hedgerow.contract.shadow import ShadowState, ShadowUpdate
from hedgerow.core.shadow import ShadowService
from hedgerow.core.shadow_sync import ShadowSync


class Wire:
    def __init__(self) -> None:
        self.sent: list[ShadowUpdate] = []
        self.heard: list[tuple[str, str]] = []

    def send(self, payload: bytes) -> None:
        self.sent.append(ShadowUpdate.from_json(payload))

    def replies(self, thing: str, messages: list[tuple[str, bytes]]) -> None:
        self.heard += [(thing, topic) for topic, _ in messages]


def device_update(shadow: ShadowService, thing: str, state: dict[str, Any]) -> None:
    reply = shadow.request(thing, "update", json.dumps({"state": state}).encode())
    assert reply.accepted, reply.document


def build(tmp_path: Path) -> tuple[ShadowService, ShadowSync, Wire]:
    shadow = ShadowService(tmp_path / "shadows.json")
    wire = Wire()
    sync = ShadowSync(shadow, tmp_path / "shadow-sync.json", wire.send, wire.replies)
    return shadow, sync, wire


def test_only_synced_things_go_up_with_their_whole_changed_sections(tmp_path: Path) -> None:
    shadow, sync, wire = build(tmp_path)
    sync.set_things(["lamp"], connected=False)
    assert wire.sent == []  # offline: nothing until the link is up
    device_update(shadow, "lamp", {"reported": {"led": "off", "t": 20}})
    device_update(shadow, "lamp", {"reported": {"t": 21}})
    device_update(shadow, "other", {"reported": {"t": 1}})
    assert [(u.thing, u.seq, u.reported, u.desired) for u in wire.sent] == [
        ("lamp", 1, {"led": "off", "t": 20}, None),
        ("lamp", 2, {"led": "off", "t": 21}, None),
    ]
    sync.connected()
    assert wire.sent[-1].reported == {"led": "off", "t": 21} and wire.sent[-1].seq == 3


def test_cloud_states_apply_by_version_and_seq(tmp_path: Path) -> None:
    shadow, sync, wire = build(tmp_path)
    sync.set_things(["lamp"], connected=True)  # no local shadow: asks with no sections
    assert wire.sent[0].reported is None and wire.sent[0].seq == 1
    device_update(shadow, "lamp", {"reported": {"led": "off"}})  # seq 2, not yet processed
    # the cloud answers seq 1: its desired applies, its (older) reported does not
    sync.cloud_state(ShadowState("lamp", 3, {"led": "on"}, {"led": "?"}, seq=1).to_json())
    desired, reported = shadow.sections("lamp")
    assert desired == {"led": "on"} and reported == {"led": "off"}
    assert ("lamp", "$aws/things/lamp/shadow/update/delta") in wire.heard
    assert len(wire.sent) == 2  # applying the cloud's copy sends nothing back up
    # an older state than the one applied is ignored
    sync.cloud_state(ShadowState("lamp", 2, {"led": "old"}, {}, seq=2).to_json())
    assert shadow.sections("lamp")[0] == {"led": "on"} and sync.counters["stale"] == 1
    # the cloud has everything (seq 2): its reported applies too (an API edit)
    sync.cloud_state(
        ShadowState("lamp", 4, {"led": "on"}, {"led": "off", "note": "x"}, seq=2).to_json()
    )
    assert shadow.sections("lamp")[1] == {"led": "off", "note": "x"}
    # a conflict is counted; not-synced things and bad messages are ignored
    sync.cloud_state(ShadowState("lamp", 5, {"led": "on"}, {}, 2, ("desired",)).to_json())
    sync.cloud_state(ShadowState("other", 9, {"x": 1}).to_json())
    sync.cloud_state(b"{not json")
    assert sync.counters["conflicts"] == 1 and shadow.sections("other") == ({}, {})


def test_sync_state_survives_a_restart(tmp_path: Path) -> None:
    shadow, sync, wire = build(tmp_path)
    sync.set_things(["lamp"], connected=False)
    device_update(shadow, "lamp", {"desired": {"led": "red"}})
    sync.cloud_state(ShadowState("lamp", 7, {"led": "red"}, {}, seq=1).to_json())
    _, again, wire2 = build(tmp_path)
    again.set_things(["lamp"], connected=True)  # newly synced in this process: sends reported
    assert wire2.sent[0].seq == 2 and wire2.sent[0].base_version == 7
    again.cloud_state(ShadowState("lamp", 6, {"led": "stale"}, {}, seq=2).to_json())
    assert again.counters["stale"] == 1
    assert again.report()["state"] == {"lamp": {"cloud_version": 7, "seq": 2}}


def test_a_first_sync_offers_the_local_desired_once(tmp_path: Path) -> None:
    shadow, sync, wire = build(tmp_path)
    device_update(shadow, "lamp", {"desired": {"led": "on"}, "reported": {"led": "off"}})
    sync.set_things(["lamp"], connected=True)
    first = wire.sent[-1]
    assert (first.desired, first.reported, first.base_version) == ({"led": "on"}, {"led": "off"}, 0)
    sync.cloud_state(ShadowState("lamp", 1, {"led": "on"}, {"led": "off"}, seq=first.seq).to_json())
    sync.connected()  # a cloud copy was applied: from now on only reported goes up on connect
    assert wire.sent[-1].desired is None and wire.sent[-1].reported == {"led": "off"}
