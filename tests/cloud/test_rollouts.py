"""Rollouts, deadlines, superseding and drift in the services (real SQLite repository, no
HTTP): cores are played by their status reports and heartbeats; time is a ManualClock."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from hedgerow.clock import ManualClock
from hedgerow.cloud.errors import Conflict, InvalidInput
from hedgerow.cloud.services import RolloutRequest, RolloutService
from hedgerow.contract import DeploymentNotification
from hedgerow.contract.deployment import DeploymentStatus, StatusReport
from hedgerow.contract.heartbeat import Heartbeat

from .conftest import Built

GROUPS = [f"site-{i}" for i in range(4)]


async def fleet(built: Built, labels: dict[str, str] | None = None) -> None:
    for index, group in enumerate(GROUPS):
        await built.services.groups.create(group, "", {}, None, labels or {"site": f"s{index % 2}"})
        await built.services.cores.create(f"core-{index}", group)


async def report(built: Built, core: str, deployment_id: str, status: DeploymentStatus) -> None:
    await built.services.deployments.record_status(
        core, StatusReport(deployment_id, status).to_json()
    )


async def beat(built: Built, core: str, deployment_id: str | None, health: str) -> None:
    await built.services.identities.record_heartbeat(
        core, Heartbeat(deployment=deployment_id, health=health).to_json()
    )


async def test_labels_select_groups_and_can_be_removed(built: Built) -> None:
    await fleet(built)
    s0 = await built.services.groups.all({"site": "s0"})
    assert [g.name for g in s0] == ["site-0", "site-2"]
    await built.services.groups.update(
        "site-0", description=None, settings=None, ca_rotation_days=None, labels={"site": ""}
    )
    assert [g.name for g in await built.services.groups.all({"site": "s0"})] == ["site-2"]
    assert (await built.services.groups.get("site-0")).labels == {}


async def test_a_newer_deployment_supersedes_and_the_deadline_fails(built: Built) -> None:
    await fleet(built)
    deployments = built.services.deployments
    stuck = await deployments.deploy("site-0", deadline_s=60)
    newer = await deployments.deploy("site-0", deadline_s=60)
    old = await deployments.get(stuck.id)
    assert old.status == "Superseded" and newer.id in old.detail
    await report(built, "core-0", stuck.id, DeploymentStatus.SUCCESS)  # late: kept as an event
    assert (await deployments.get(stuck.id)).status == "Superseded"
    # nobody answers the newer one: failed at its deadline, not before
    store = deployments.store
    assert store.fail_overdue(newer.created_at + dt.timedelta(seconds=59)) == []
    failed = store.fail_overdue(newer.created_at + dt.timedelta(seconds=60))
    assert [d.id for d in failed] == [newer.id]
    assert (await deployments.get(newer.id)).detail.startswith("deadline exceeded")
    # and a deployment after it is not blocked by it
    third = await deployments.deploy("site-0")
    await report(built, "core-0", third.id, DeploymentStatus.SUCCESS)
    assert (await deployments.get(third.id)).status == "Success"


async def test_the_cores_account_of_a_superseded_deployment_replaces_the_clouds(
    built: Built,
) -> None:
    await fleet(built)
    deployments = built.services.deployments
    old = await deployments.deploy("site-0")
    newer = await deployments.deploy("site-0")
    account = f"superseded by {newer.id}: cancelled while applying, rolled back to d-0"
    for _ in range(2):  # a resend changes nothing more
        await built.services.deployments.record_status(
            "core-0", StatusReport(old.id, DeploymentStatus.SUPERSEDED, account).to_json()
        )
    after = await deployments.get(old.id)
    assert after.status == "Superseded" and after.detail == account
    assert [(e.status, e.detail) for e in after.events if e.status == "Superseded"] == [
        ("Superseded", account)
    ]


async def test_a_rollout_pauses_on_a_failure_restores_it_and_completes_after_resume(
    built: Built,
) -> None:
    await fleet(built)
    s = built.services
    before = {}
    for index, group in enumerate(GROUPS):
        first = await s.deployments.deploy(group)
        await report(built, f"core-{index}", first.id, DeploymentStatus.SUCCESS)
        await beat(built, f"core-{index}", first.id, "healthy")
        before[group] = first.id
    clock = ManualClock(1_000_000.0)
    rollouts = RolloutService(s.repository, s.groups, s.deployments, s.fleet, clock.now)
    with pytest.raises(InvalidInput):
        await rollouts.start(RolloutRequest(labels={"site": "nowhere"}))
    rollout = await rollouts.start(
        RolloutRequest(groups=GROUPS[:1], labels={"site": "s1"}, canary=1, waves=["100%"])
    )
    assert [t.group for t in rollout.targets] == ["site-0", "site-1", "site-3"]
    assert [t.core for t in rollout.targets] == ["core-0", "core-1", "core-3"]
    assert [t.previous for t in rollout.targets] == [
        before[g] for g in ("site-0", "site-1", "site-3")
    ]
    canary = rollout.targets[0].deployment
    assert canary is not None
    _topic, payload, _retain = built.notifier.sent[-1]
    assert DeploymentNotification.from_json(payload).deployment_id == canary
    await report(built, "core-0", canary, DeploymentStatus.SUCCESS)
    await beat(built, "core-0", canary, "healthy")
    await rollouts.tick()
    await rollouts.tick()
    rollout = await rollouts.get(rollout.id)
    wave2 = {t.group: t.deployment for t in rollout.targets[1:]}
    assert all(wave2.values())
    # core-1 fails its health check (the core rolls back itself); core-3 is fine
    await report(built, "core-1", wave2["site-1"] or "", DeploymentStatus.ROLLED_BACK)
    await report(built, "core-3", wave2["site-3"] or "", DeploymentStatus.SUCCESS)
    await beat(built, "core-3", wave2["site-3"], "healthy")
    await rollouts.tick()
    rollout = await rollouts.get(rollout.id)
    assert rollout.state.value == "paused"
    restore = rollout.target("site-1").restore
    assert restore is not None
    restored = await s.deployments.get(restore)
    assert restored.restores == before["site-1"]
    await report(built, "core-1", restore, DeploymentStatus.SUCCESS)
    await rollouts.tick()
    rollout = await rollouts.get(rollout.id)
    assert rollout.target("site-1").state.value == "restored"
    assert rollout.target("site-3").state.value == "done"
    with pytest.raises(Conflict):
        await rollouts.command(rollout.id, "pause")
    # the fix, then resume: site-1 is tried again and the rollout completes
    rollout = await rollouts.command(rollout.id, "resume")
    retry = rollout.target("site-1").deployment
    assert retry is not None and retry != wave2["site-1"]
    await report(built, "core-1", retry, DeploymentStatus.SUCCESS)
    await beat(built, "core-1", retry, "healthy")
    await rollouts.tick()
    rollout = await rollouts.get(rollout.id)
    assert rollout.state.value == "completed", rollout.events
    assert rollout.summary()["done"] == 3
    # rollback as a whole: every group back on what it ran before
    rollout = await rollouts.command(rollout.id, "rollback")
    for target in rollout.targets:
        assert target.restore is not None
        assert (await s.deployments.get(target.restore)).restores == before[target.group]
        await report(
            built, f"core-{GROUPS.index(target.group)}", target.restore, DeploymentStatus.SUCCESS
        )
    await rollouts.tick()
    assert (await rollouts.get(rollout.id)).state.value == "rolled-back"


async def test_an_offline_deployment_is_drift_never_overwritten_until_adopted(
    built: Built,
) -> None:
    await fleet(built)
    s = built.services
    online = await s.deployments.deploy("site-0")
    await report(built, "core-0", online.id, DeploymentStatus.SUCCESS)
    exported = await s.deployments.export("site-0")
    assert exported.deployment.kind == "OfflineDeployment"
    assert await s.deployments.latest_for_core("core-0") == online.id  # not sent, not latest
    sent = len(built.notifier.sent)
    # the core applied it offline and reports it, with refusals that would trigger a redeploy
    heartbeat = Heartbeat(
        deployment=exported.deployment.id,
        health="healthy",
        refused=({"deployment_id": "d-x", "file": "d-x.json", "reason": "edited"},),
    )
    await s.identities.record_heartbeat("core-0", heartbeat.to_json())
    await s.deployments.redeploy_refused("core-0", heartbeat)
    assert len(built.notifier.sent) == sent, "nothing is redeployed over the offline deployment"
    drift = await s.deployments.drift("site-0")
    assert drift.drifted and drift.to_json()["signed_here"]
    assert drift.latest == online.id
    adopted = await s.deployments.adopt("site-0")
    assert adopted.id == exported.deployment.id and adopted.status == "Success"
    assert await s.deployments.latest_for_core("core-0") == adopted.id
    assert not (await s.deployments.drift("site-0")).drifted
    # replace: the group's deployment again, over what the core runs
    await beat(built, "core-0", "d-unknown", "healthy")
    with pytest.raises(Conflict):
        await s.deployments.adopt("site-0")
    replaced = await s.deployments.replace("site-0")
    assert replaced.restores == adopted.id


async def test_one_cloud_process_drives_a_rollout_and_a_stale_write_is_refused(
    built: Built,
) -> None:
    await fleet(built)
    s = built.services
    clock = ManualClock(1_000_000.0)
    first = RolloutService(s.repository, s.groups, s.deployments, s.fleet, clock.now)
    second = RolloutService(s.repository, s.groups, s.deployments, s.fleet, clock.now)
    rollout = await first.start(RolloutRequest(groups=GROUPS[:2]))
    store = s.repository
    assert [p["id"] for p, _ in store.claim_rollouts(first.owner, 60)] == [rollout.id]
    assert store.claim_rollouts(second.owner, 60) == []  # the first holds it
    plan, revision = store.get_rollout(rollout.id)
    assert store.save_rollout(rollout.id, "running", plan, revision)
    assert not store.save_rollout(rollout.id, "running", plan, revision), "stale revision"
    # the first process stops renewing: its lease runs out, the second takes over
    store.claim_rollouts(first.owner, -1)
    assert [p["id"] for p, _ in store.claim_rollouts(second.owner, 60)] == [rollout.id]
    # a restarted cloud (a new process) carries the rollout on from the database
    for index, target in enumerate((await second.get(rollout.id)).targets):
        assert target.deployment is not None
        await report(built, f"core-{index}", target.deployment, DeploymentStatus.SUCCESS)
        await beat(built, f"core-{index}", target.deployment, "healthy")
    await second.tick()
    assert (await first.get(rollout.id)).state.value == "completed"
    with pytest.raises(Conflict):  # commands work from any process, checked against the state
        await first.command(rollout.id, "pause")
    rolled = await first.command(rollout.id, "rollback")
    assert rolled.state.value == "rolling-back"


async def test_the_starter_keeps_its_lease_through_a_first_step_longer_than_the_lease(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first wave of thousands of groups takes minutes: while its starter deploys it, the
    replica holding the rollout job may not claim the rollout and deploy it again."""
    from hedgerow.cloud.services import rollouts as rollouts_module

    await fleet(built)
    s = built.services
    monkeypatch.setattr(rollouts_module, "FIRST_STEP_LEASE_SECONDS", 0.3)
    starter = RolloutService(s.repository, s.groups, s.deployments, s.fleet)
    holder = RolloutService(s.repository, s.groups, s.deployments, s.fleet)
    deploy = starter._deploy
    claimed: list[list[object]] = []

    async def slow_deploy(rollout: Any, group: str) -> str:
        await asyncio.sleep(0.4)  # each longer than the lease: only renewal keeps it
        claimed.append(await holder_claims())
        return await deploy(rollout, group)

    async def holder_claims() -> list[object]:
        return list(await asyncio.to_thread(s.repository.claim_rollouts, holder.owner, 10))

    monkeypatch.setattr(starter, "_deploy", slow_deploy)
    rollout = await starter.start(RolloutRequest(groups=GROUPS[:3], waves=["100%"]))
    assert claimed == [[], [], []]  # never claimable while the starter drove it
    assert [t.deployment is not None for t in rollout.targets] == [True, True, True]
    ((plan, _revision),) = await holder_claims()  # released: the job takes it from here
    assert plan["id"] == rollout.id


async def test_a_big_wave_is_deployed_a_pass_at_a_time_and_a_pause_gets_in_between(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting a rollout answers after one bounded pass (a wave of thousands of groups
    once held ``POST /api/v1/rollouts`` for minutes); the job deploys the rest a pass at a
    time, storing progress after each, and an operator's pause stops it between passes."""
    from hedgerow.cloud.services import rollouts as rollouts_module

    await fleet(built)
    s = built.services
    monkeypatch.setattr(rollouts_module, "ACTIONS_PER_PASS", 1)
    starter = RolloutService(s.repository, s.groups, s.deployments, s.fleet)
    rollout = await starter.start(RolloutRequest(groups=GROUPS, waves=["100%"]))
    assert [t.deployment is not None for t in rollout.targets] == [True, False, False, False]
    stored = await starter.get(rollout.id)
    assert sum(t.deployment is not None for t in stored.targets) == 1

    job = RolloutService(s.repository, s.groups, s.deployments, s.fleet)
    assert await job._pass()  # one more group, more to do
    assert sum(t.deployment is not None for t in (await job.get(rollout.id)).targets) == 2
    await job.command(rollout.id, "pause")
    await job.tick()  # a paused rollout deploys nothing more
    paused = await job.get(rollout.id)
    assert paused.state.value == "paused"
    assert sum(t.deployment is not None for t in paused.targets) == 2
    await job.command(rollout.id, "resume")
    await job.tick()  # one tick goes on pass after pass while there is more to do
    resumed = await job.get(rollout.id)
    assert [t.deployment is not None for t in resumed.targets] == [True, True, True, True]
    assert len({t.deployment for t in resumed.targets}) == 4  # each group deployed once


async def test_an_abort_in_the_middle_of_a_wave_skips_the_groups_not_deployed_yet(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hedgerow.cloud.services import rollouts as rollouts_module

    await fleet(built)
    s = built.services
    monkeypatch.setattr(rollouts_module, "ACTIONS_PER_PASS", 2)
    rollouts = RolloutService(s.repository, s.groups, s.deployments, s.fleet)
    rollout = await rollouts.start(RolloutRequest(groups=GROUPS, waves=["100%"]))
    await rollouts.command(rollout.id, "abort")
    await rollouts.tick()
    aborted = await rollouts.get(rollout.id)
    assert [t.state.value for t in aborted.targets] == [
        "deploying", "deploying", "skipped", "skipped",
    ]  # fmt: skip
    assert [t.deployment is not None for t in aborted.targets] == [True, True, False, False]


async def test_a_pass_also_ends_on_its_time_budget_after_one_action_at_least(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hedgerow.cloud.services import rollouts as rollouts_module

    await fleet(built)
    s = built.services
    monkeypatch.setattr(rollouts_module, "PASS_BUDGET_S", 0.0)  # every deploy is "too slow"
    rollouts = RolloutService(s.repository, s.groups, s.deployments, s.fleet)
    rollout = await rollouts.start(RolloutRequest(groups=GROUPS, waves=["100%"]))
    assert sum(t.deployment is not None for t in rollout.targets) == 1
    await rollouts.tick()  # pass after pass, one deploy each: all done within the tick
    done = await rollouts.get(rollout.id)
    assert all(t.deployment is not None for t in done.targets)


async def test_a_pass_deploys_a_few_groups_at_once_never_more(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One group after another, a wave of 1,500 waited 93 s on the database's round trips
    with the replica mostly idle: a pass keeps ``ACTIONS_AT_ONCE`` deploys under way."""
    from hedgerow.cloud.services import rollouts as rollouts_module

    await fleet(built)
    s = built.services
    monkeypatch.setattr(rollouts_module, "ACTIONS_AT_ONCE", 2)
    rollouts = RolloutService(s.repository, s.groups, s.deployments, s.fleet)
    deploy = rollouts._deploy
    under_way: list[int] = []
    running = 0

    async def counted_deploy(rollout: Any, group: str) -> str:
        nonlocal running
        running += 1
        under_way.append(running)
        try:
            await asyncio.sleep(0.05)  # a deploy's database round trips
            return await deploy(rollout, group)
        finally:
            running -= 1

    monkeypatch.setattr(rollouts, "_deploy", counted_deploy)
    rollout = await rollouts.start(RolloutRequest(groups=GROUPS, waves=["100%"]))
    assert all(t.deployment is not None for t in rollout.targets)
    assert max(under_way) == 2 and len(under_way) == len(GROUPS)
    assert len({t.deployment for t in rollout.targets}) == len(GROUPS)
