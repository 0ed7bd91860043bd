"""The services without HTTP: built complete by ``CloudServices.build`` over a real
SQLite repository, telling cores what changed through the notifier they were given."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest

from hedgerow.cloud import core_bundle as bundle
from hedgerow.cloud.domain import DeploymentKind
from hedgerow.cloud.errors import Conflict
from hedgerow.contract import DeploymentNotification

from .conftest import Built


async def test_services_are_built_complete_and_cannot_be_rewired(built: Built) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.services.groups = built.services.groups  # type: ignore[misc]
    assert built.services.fleet.deployments is built.services.deployments
    assert built.services.devices.groups is built.services.groups


async def test_a_core_bundle_names_the_endpoints_asked_for_at_build_time(built: Built) -> None:
    s = built.services
    await s.groups.create("g", "", {}, None)
    created = await s.cores.create("pi-1", "g")
    config = bundle.read_bundle(created.bundle)[bundle.CONFIG].decode()
    assert "https://cloud.test:8443" in config and "mqtts://cloud.test:8884" in config
    reissued = await s.cores.reissue_bundle("pi-1")
    assert reissued.bundle != created.bundle
    live = [c for c in await s.certificates.all("pi-1", "core") if not c.revoked]
    assert len(live) == 1, "reissuing revokes the old identity and records the new one"
    assert ("disconnect:pi-1", b"identity reissued", False) in built.notifier.sent


async def test_deploy_and_route_changes_reach_the_notifier_and_the_callback(built: Built) -> None:
    s = built.services
    await s.groups.create("g", "", {}, None)
    await s.cores.create("pi-1", "g")
    with pytest.raises(Conflict):
        await s.deployments.deploy("g", DeploymentKind.REDEPLOY)
    thing = await s.things.create("t1", ["g"], {}, None)
    await s.subscriptions.add("g", "cloud", "commands/#", "thing:t1")
    assert built.routes_changes == [1]
    deployment = await s.deployments.deploy("g")
    topic, payload, retain = built.notifier.sent[-1]
    assert topic == "$hedgerow/cores/pi-1/deployments" and retain
    assert DeploymentNotification.from_json(payload) == DeploymentNotification(deployment.id)
    await s.things.revoke(thing.thing.name)
    revocations = [m for m in built.notifier.sent if m[0] == "$hedgerow/cores/pi-1/revocations"]
    assert len(json.loads(revocations[-1][1])["fingerprints"]) == 1


async def test_a_ca_made_before_its_group_has_a_core_is_announced_once_it_has_one(
    built: Built,
) -> None:
    """The CA job (or any caller) may make a group's first CA between the group and its
    core: nobody to tell yet, so it stays pending instead of being dropped."""
    s = built.services
    await s.groups.create("g", "", {}, None)
    await s.groups.rotate_due_cas()  # makes the first CA: no core to tell
    assert not [t for t, _, _ in built.notifier.sent if t.endswith("/group-cas")]
    await s.cores.create("pi-1", "g")
    await s.groups.announce_rotations()
    sent = [(t, retain) for t, _, retain in built.notifier.sent if t.endswith("/group-cas")]
    assert sent == [("$hedgerow/cores/pi-1/group-cas", True)]
    await s.groups.announce_rotations()  # told once
    assert len([t for t, _, _ in built.notifier.sent if t.endswith("/group-cas")]) == 1


async def test_a_ca_a_killed_holder_stored_but_never_announced_is_announced_on_takeover(
    built: Built,
) -> None:
    s = built.services

    def announced() -> list[list[str]]:
        return [
            json.loads(payload)["group_cas"]
            for topic, payload, _ in built.notifier.sent
            if topic == "$hedgerow/cores/pi-1/group-cas"
        ]

    await s.groups.create("g", "", {}, None)
    await s.cores.create("pi-1", "g")
    await s.groups.ca_job()  # the first CA, made and announced
    assert len(announced()) == 1
    await asyncio.to_thread(s.pki.rotate, "g")  # a new CA stored ...
    s.pki.take_rotated()  # ... and the process was killed before announcing it
    await s.groups.ca_job()  # the same holder's next tick knows nothing of it
    assert len(announced()) == 1
    s.groups.take_over_ca_job(3600)  # another replica takes the job over
    await s.groups.ca_job()
    assert len(announced()) == 2 and len(announced()[-1]) == 2  # newest first, both listed
    assert announced()[-1][1] == announced()[0][0]
    await s.groups.ca_job()  # caught up once
    assert len(announced()) == 2


async def test_a_rotation_is_not_hidden_by_a_reader_that_cached_the_list_meanwhile(
    built: Built,
) -> None:
    """A reader (discovery, an announcement) that read the group's CAs from the database
    while a rotation stored its new CA must not cache the old list after it: the rotation
    answered with one CA instead of two in a CI run."""
    import threading

    services = built.services
    await services.groups.create("factory-1", "", {}, None, {})
    pki_service = services.pki
    assert len(pki_service.group_cas("factory-1")) == 1
    pki_service.forget("factory-1")
    repository = pki_service.repository
    read = repository.group_cas
    old_read = threading.Event()
    rotated = threading.Event()

    def slow_read(group: str) -> Any:
        listed = read(group)
        if threading.current_thread().name == "reader":
            old_read.set()
            rotated.wait(5)  # the rotation stores its CA meanwhile
        return listed

    repository.group_cas = slow_read  # type: ignore[method-assign]
    reader = threading.Thread(target=pki_service.group_cas, args=("factory-1",), name="reader")
    reader.start()
    assert old_read.wait(5)
    real_rotate = pki_service._rotate

    def rotate_then_let_the_reader_cache(*args: Any) -> Any:
        made = real_rotate(*args)
        rotated.set()
        reader.join(5)  # the reader caches what it read before the new CA existed
        return made

    pki_service._rotate = rotate_then_let_the_reader_cache  # type: ignore[method-assign]
    cas = await asyncio.to_thread(pki_service.rotate, "factory-1")
    assert len(cas) == 2
    assert len(pki_service.group_cas("factory-1")) == 2  # and the cache holds the new list
