"""The staged rollout state machine (pure), driven as the cloud's job drives it, with a
``ManualClock`` for the soak and the deadline."""

from __future__ import annotations

import pytest

from hedgerow.clock import ManualClock
from hedgerow.cloud.rollout_plan import (
    Deploy,
    Observation,
    Restore,
    Rollout,
    RolloutError,
    RolloutState,
    TargetState,
    failure_limit,
    wave_sizes,
)


def test_waves_are_cumulative_and_end_with_everyone() -> None:
    assert wave_sizes(10, 1, ["10%", "50%", "100%"]) == [1, 5, 10]
    assert wave_sizes(10, 0, ["30%"]) == [3, 10]
    assert wave_sizes(3, 1, ["10%", "50%"]) == [1, 2, 3]
    assert wave_sizes(100, 0, []) == [100]
    assert failure_limit(10, "20%") == 2
    assert failure_limit(10, "1") == 1
    with pytest.raises(RolloutError) as bad:
        wave_sizes(10, 1, ["abc"])
    assert bad.value.field == "waves"
    with pytest.raises(RolloutError) as bad:
        failure_limit(10, "-1")
    assert bad.value.field == "max_failures"


class Fleet:
    """A fake fleet: deploys become ids, each group's core answers as told."""

    def __init__(self, rollout: Rollout, clock: ManualClock) -> None:
        self.rollout = rollout
        self.clock = clock
        self.count = 0
        self.status: dict[str, str] = {}  # deployment id → status
        self.running: dict[str, str | None] = {}  # group → id its core runs
        self.health: dict[str, str] = {}
        self.asked: list[tuple[str, str, str | None]] = []

    def drive(self) -> None:
        """One tick of the cloud's job: observe and step, then carry out the actions."""
        seen = {
            group: Observation(
                self.status.get(dep), self.running.get(group), self.health.get(group)
            )
            for group, dep in self.rollout.watched().items()
        }
        self.rollout.step(self.clock.now(), seen)
        for action in self.rollout.pending_actions():
            self.count += 1
            new_id = f"d-{self.count}"
            self.status[new_id] = "Pending"
            if isinstance(action, Deploy):
                self.asked.append(("deploy", action.group, new_id))
                self.rollout.deployed(action.group, new_id, self.clock.now())
            else:
                assert isinstance(action, Restore)
                self.asked.append(("restore", action.group, action.previous))
                self.rollout.restoring(action.group, new_id, self.clock.now())

    def succeed(self, group: str, health: str = "healthy") -> None:
        dep = self.rollout.watched()[group]
        self.status[dep] = "Success"
        self.running[group] = dep
        self.health[group] = health


def start(groups: int, **kwargs: object) -> tuple[Rollout, Fleet, ManualClock]:
    clock = ManualClock(1000.0)
    rollout = Rollout.start(
        "r-1",
        [(f"g{i}", f"old-{i}") for i in range(groups)],
        **kwargs,  # type: ignore[arg-type]
    )
    fleet = Fleet(rollout, clock)
    return rollout, fleet, clock


def test_waves_wait_for_health_and_the_soak() -> None:
    rollout, fleet, clock = start(4, canary=1, waves=["50%", "100%"], soak_s=30.0)
    fleet.drive()
    assert [a[1] for a in fleet.asked] == ["g0"]  # the canary alone
    fleet.drive()
    assert len(fleet.asked) == 1  # asked once, recorded
    fleet.succeed("g0")
    fleet.drive()
    assert rollout.target("g0").state is TargetState.SOAKING
    clock.advance(29.0)
    fleet.drive()
    assert rollout.target("g0").state is TargetState.SOAKING
    assert len(fleet.asked) == 1  # the next wave waits for the soak
    clock.advance(1.0)
    fleet.drive()
    assert rollout.target("g0").state is TargetState.DONE
    fleet.drive()
    assert [a[1] for a in fleet.asked] == ["g0", "g1"]  # 50% of 4 = 2 in all
    fleet.succeed("g1")
    fleet.drive()  # healthy seen: the soak starts now
    clock.advance(30.0)
    fleet.drive()
    fleet.drive()
    assert [a[1] for a in fleet.asked] == ["g0", "g1", "g2", "g3"]
    fleet.succeed("g2")
    fleet.succeed("g3")
    fleet.drive()
    clock.advance(30.0)
    fleet.drive()
    assert rollout.state is RolloutState.COMPLETED
    assert rollout.summary()["done"] == 4


def test_a_failure_pauses_restores_and_resume_retries_it() -> None:
    rollout, fleet, clock = start(3, waves=["100%"], max_failures="0")
    fleet.drive()
    fleet.drive()
    assert sorted(a[1] for a in fleet.asked) == ["g0", "g1", "g2"]
    fleet.succeed("g0")
    fleet.succeed("g2")
    fleet.status[rollout.target("g1").deployment or ""] = "RolledBack"
    fleet.drive()
    assert rollout.state is RolloutState.PAUSED
    assert "1 failed" in rollout.reason
    fleet.drive()
    assert ("restore", "g1", "old-1") in fleet.asked
    assert rollout.target("g0").state is TargetState.DONE
    fleet.succeed("g1")  # the restore succeeded
    fleet.drive()
    assert rollout.target("g1").state is TargetState.RESTORED
    assert rollout.state is RolloutState.PAUSED  # no wave starts while paused
    rollout.command("resume", clock.now())
    fleet.drive()
    fleet.drive()
    assert fleet.asked[-1] == ("deploy", "g1", rollout.target("g1").deployment)
    fleet.succeed("g1")
    fleet.drive()
    assert rollout.state is RolloutState.COMPLETED
    assert rollout.failures == 0


def test_the_deadline_fails_a_core_that_never_answers() -> None:
    rollout, fleet, clock = start(2, waves=["100%"], max_failures="1", deadline_s=60.0)
    fleet.drive()
    fleet.succeed("g0")
    clock.advance(59.0)
    fleet.drive()
    assert rollout.target("g1").state is TargetState.DEPLOYING
    clock.advance(1.0)
    fleet.drive()
    assert rollout.target("g1").failed
    assert "deadline" in rollout.target("g1").detail
    assert rollout.state is RolloutState.RUNNING  # one failure is allowed
    fleet.drive()
    fleet.status[rollout.target("g1").restore or ""] = "Failure"  # nobody answers that either
    fleet.drive()
    assert rollout.state is RolloutState.COMPLETED
    assert rollout.summary()["failed"] == 1


def test_broken_functions_during_the_soak_fail_the_target() -> None:
    rollout, fleet, clock = start(1, soak_s=10.0)
    fleet.drive()
    fleet.succeed("g0")
    fleet.drive()
    fleet.health["g0"] = "broken"
    clock.advance(5.0)
    fleet.drive()
    assert rollout.target("g0").state is TargetState.RESTORING
    assert rollout.state is RolloutState.PAUSED


def test_rollback_restores_every_touched_group_and_survives_a_reload() -> None:
    rollout, fleet, clock = start(4, canary=1, waves=["100%"])
    fleet.drive()
    fleet.succeed("g0")
    fleet.drive()
    fleet.drive()
    rollout.command("pause", clock.now())
    with pytest.raises(RolloutError):
        rollout.command("pause", clock.now())
    # the cloud restarts: the state comes back from its JSON
    rollout = Rollout.from_json(rollout.to_json())
    fleet.rollout = rollout
    rollout.command("rollback", clock.now())
    fleet.drive()
    restored = sorted(a[1] for a in fleet.asked if a[0] == "restore")
    assert restored == ["g0", "g1", "g2", "g3"]
    for group in restored:
        fleet.succeed(group)
    fleet.drive()
    assert rollout.state is RolloutState.ROLLED_BACK
    with pytest.raises(RolloutError):
        rollout.command("resume", clock.now())
