"""A staged rollout as a pure state machine: waves of groups, health, soak, pause, restore.

No I/O, no clock of its own: the cloud's rollout job (``services/rollouts.py``) loads a
``Rollout`` from the database, gives ``step`` what it observed (each target's deployment
status and the health its core's heartbeat reports) and the time, carries out the actions
``pending_actions`` names (deploy a group, restore a group's previous deployment) and
records their deployment ids with ``deployed``/``restoring``, then stores the rollout
again. A cloud restart resumes from the stored state: an action asked for but not
recorded is asked for again.

Rollout states: ``running`` → ``completed``; ``running`` ⇄ ``paused`` (more failures than
allowed, or the operator; ``resume`` retries the failed targets); ``aborted`` (no wave
starts any more); ``rolling-back`` → ``rolled-back`` (every touched group back on the
deployment it ran before). Target states: ``waiting`` → ``deploying`` → ``soaking`` →
``done``; a failure (the deployment failed, was rolled back by the core, superseded, or
not healthy by the deadline, or the functions broke during the soak) → ``restoring`` →
``restored``; ``skipped`` when the rollout ended before its wave.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: A target not healthy this long after its deployment was asked for has failed.
DEFAULT_DEADLINE_S = 300.0
#: Statuses after which a deployment changes no more (the contract's, and the cloud's own).
FINAL = frozenset({"Success", "Failure", "RolledBack", "Superseded"})
FAILED_STATUSES = frozenset({"Failure", "RolledBack", "Superseded"})


class RolloutError(ValueError):
    """A rollout that cannot be built or an operation its state does not allow."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class RolloutState(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"

    @property
    def active(self) -> bool:
        """The rollout job still looks at it (in-flight deployments are followed while
        paused)."""
        return self in (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.ROLLING_BACK)


class TargetState(enum.StrEnum):
    WAITING = "waiting"
    DEPLOYING = "deploying"
    SOAKING = "soaking"
    DONE = "done"
    RESTORING = "restoring"
    RESTORED = "restored"
    SKIPPED = "skipped"


#: Operator commands and the rollout states they are allowed in.
ALLOWED = {
    "pause": {RolloutState.RUNNING},
    "resume": {RolloutState.PAUSED},
    "abort": {RolloutState.RUNNING, RolloutState.PAUSED},
    "rollback": {
        RolloutState.RUNNING,
        RolloutState.PAUSED,
        RolloutState.COMPLETED,
        RolloutState.ABORTED,
    },
}


@dataclass(frozen=True)
class Observation:
    """What the cloud knows of one target now: the status of the deployment the target
    waits for (its rollout deployment, or its restore), and the core's heartbeat."""

    status: str | None = None
    running: str | None = None  # the deployment id the core's heartbeat names
    health: str | None = None  # the core's health: healthy, pending, broken


@dataclass(frozen=True)
class Deploy:
    group: str


@dataclass(frozen=True)
class Restore:
    group: str
    previous: str | None  # None: the group had no deployment: reset it


Action = Deploy | Restore


@dataclass
class Target:
    group: str
    wave: int
    previous: str | None = None
    state: TargetState = TargetState.WAITING
    deployment: str | None = None
    restore: str | None = None
    failed: bool = False
    since: float | None = None
    detail: str = ""
    core: str = ""  # the group's core (for people: a rollout targets groups)

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "core": self.core,
            "wave": self.wave,
            "previous": self.previous,
            "state": self.state.value,
            "deployment": self.deployment,
            "restore": self.restore,
            "failed": self.failed,
            "since": self.since,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Target:
        return cls(
            group=str(data["group"]),
            wave=int(data["wave"]),
            previous=data.get("previous"),
            state=TargetState(data["state"]),
            deployment=data.get("deployment"),
            restore=data.get("restore"),
            failed=bool(data.get("failed", False)),
            since=data.get("since"),
            detail=str(data.get("detail", "")),
            core=str(data.get("core", "")),
        )


def wave_sizes(total: int, canary: int, waves: Sequence[str]) -> list[int]:
    """Cumulative target counts at the end of each wave: ``canary`` groups first, then
    each ``waves`` entry (``"10%"`` of all, or a count) — always ending with all."""
    if total < 1:
        raise RolloutError("a rollout needs at least one group", field="groups")
    if canary < 0:
        raise RolloutError("canary must be 0 or more", field="canary")
    ends: list[int] = [min(canary, total)] if canary else []
    for raw in waves:
        text = str(raw).strip()
        try:
            if text.endswith("%"):
                percent = float(text[:-1])
                if not 0 < percent <= 100:
                    raise ValueError(text)
                end = math.ceil(total * percent / 100)
            else:
                end = int(text)
                if end < 1:
                    raise ValueError(text)
        except ValueError as exc:
            raise RolloutError(
                f"invalid wave {text!r}: use a percentage like 10% or a group count",
                field="waves",
            ) from exc
        ends.append(min(end, total))
    ends.append(total)
    out: list[int] = []
    for end in ends:
        if end > (out[-1] if out else 0):
            out.append(end)
    return out


def failure_limit(total: int, max_failures: str) -> int:
    """How many failed targets are allowed before the rollout pauses (``"2"`` or ``"10%"``)."""
    text = str(max_failures).strip()
    try:
        if text.endswith("%"):
            percent = float(text[:-1])
            if not 0 <= percent <= 100:
                raise ValueError(text)
            return math.floor(total * percent / 100)
        value = int(text)
        if value < 0:
            raise ValueError(text)
        return value
    except ValueError as exc:
        raise RolloutError(
            f"invalid max failures {text!r}: use a count like 2 or a percentage like 10%",
            field="max_failures",
        ) from exc


@dataclass
class Rollout:
    id: str
    targets: list[Target]
    waves: list[int]
    soak_s: float
    max_failures: int
    deadline_s: float = DEFAULT_DEADLINE_S
    state: RolloutState = RolloutState.RUNNING
    wave: int = 0
    reason: str = ""
    #: what each group receives (opaque here: the service's template), or None: the
    #: groups' own definitions
    template: dict[str, Any] | None = None
    events: list[str] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        rollout_id: str,
        groups: Sequence[tuple[str, str | None]],
        *,
        canary: int = 0,
        waves: Sequence[str] = ("100%",),
        soak_s: float = 0.0,
        max_failures: str = "0",
        deadline_s: float = DEFAULT_DEADLINE_S,
        template: dict[str, Any] | None = None,
        cores: Mapping[str, str] | None = None,
    ) -> Rollout:
        """``groups``: each target group with the deployment it runs now (None: none);
        ``cores``: each group's core, for the views."""
        names = [g for g, _ in groups]
        if len(set(names)) != len(names):
            raise RolloutError("a group is named twice", field="groups")
        if soak_s < 0:
            raise RolloutError("soak must be 0 or more seconds", field="soak_s")
        if deadline_s <= 0:
            raise RolloutError("the deadline must be more than 0 seconds", field="deadline_s")
        ends = wave_sizes(len(names), canary, waves)
        targets = []
        for index, (group, previous) in enumerate(groups):
            wave = next(w for w, end in enumerate(ends) if index < end)
            targets.append(Target(group, wave, previous, core=(cores or {}).get(group, "")))
        return cls(
            rollout_id,
            targets,
            ends,
            soak_s,
            failure_limit(len(names), max_failures),
            deadline_s,
            template=template,
            events=[f"started: {len(names)} groups in {len(ends)} wave(s)"],
        )

    # ---- reading --------------------------------------------------------------------

    def target(self, group: str) -> Target:
        for t in self.targets:
            if t.group == group:
                return t
        raise RolloutError(f"group {group!r} is not in rollout {self.id}", field="group")

    @property
    def failures(self) -> int:
        return sum(1 for t in self.targets if t.failed)

    @property
    def done(self) -> int:
        return sum(1 for t in self.targets if t.state is TargetState.DONE)

    def watched(self) -> dict[str, str]:
        """group → the deployment whose status ``step`` needs."""
        out: dict[str, str] = {}
        for t in self.targets:
            if t.state is TargetState.RESTORING and t.restore:
                out[t.group] = t.restore
            elif t.state in (TargetState.DEPLOYING, TargetState.SOAKING) and t.deployment:
                out[t.group] = t.deployment
        return out

    def pending_actions(self) -> list[Action]:
        """What the driver must do now (asked again until recorded). A wave is deployed a
        pass at a time: only a running rollout deploys its remaining groups."""
        actions: list[Action] = []
        deploying = self.state is RolloutState.RUNNING
        for t in self.targets:
            if t.state is TargetState.DEPLOYING and t.deployment is None:
                if deploying:
                    actions.append(Deploy(t.group))
            elif t.state is TargetState.RESTORING and t.restore is None:
                actions.append(Restore(t.group, t.previous))
        return actions

    # ---- recording what the driver did ------------------------------------------------

    def deployed(self, group: str, deployment_id: str, now: float) -> None:
        t = self.target(group)
        t.deployment = deployment_id
        t.since = now

    def restoring(self, group: str, deployment_id: str | None, now: float) -> None:
        """The restore of ``group`` was asked for (None: there was nothing to restore)."""
        t = self.target(group)
        t.since = now
        if deployment_id is None:
            t.state = TargetState.RESTORED
        else:
            t.restore = deployment_id

    def action_failed(self, group: str, reason: str, now: float) -> None:
        """The driver could not deploy ``group`` (e.g. it has no core): a failure."""
        t = self.target(group)
        if t.state is TargetState.DEPLOYING:
            self._fail(t, f"cannot deploy: {reason}", now)
        else:
            t.detail = f"cannot restore: {reason}"
            t.state = TargetState.RESTORED

    # ---- progress -------------------------------------------------------------------

    def step(self, now: float, seen: Mapping[str, Observation]) -> None:
        """Advance every target by what was observed, then the rollout itself."""
        for t in self.targets:
            self._advance(t, now, seen.get(t.group, Observation()))
        if self.state is RolloutState.ROLLING_BACK:
            if all(t.state is not TargetState.RESTORING for t in self.targets):
                self._set(
                    RolloutState.ROLLED_BACK, "every group is back on its previous deployment"
                )
            return
        if self.state is RolloutState.RUNNING and self.failures > self.max_failures:
            self._set(
                RolloutState.PAUSED,
                f"{self.failures} failed (more than {self.max_failures} allowed): "
                "fix them and resume, or roll back",
            )
            return
        if self.state is not RolloutState.RUNNING:
            return
        while True:
            current = [t for t in self.targets if t.wave <= self.wave]
            for t in current:
                if t.state is TargetState.WAITING:
                    t.state = TargetState.DEPLOYING
                    t.since = now
                    t.deployment = None
            settled = (TargetState.DONE, TargetState.RESTORED)
            if not all(t.state in settled for t in current):
                return
            if self.wave + 1 >= len(self.waves):
                self._set(RolloutState.COMPLETED, f"{self.done} of {len(self.targets)} groups")
                return
            self.wave += 1
            self.events.append(f"wave {self.wave + 1} started")

    def _advance(self, t: Target, now: float, seen: Observation) -> None:
        since = t.since if t.since is not None else now
        if t.state is TargetState.DEPLOYING and t.deployment is not None:
            runs = seen.running == t.deployment
            if seen.status in FAILED_STATUSES:
                self._fail(t, f"deployment {seen.status}", now)
            elif seen.status == "Success" and runs and seen.health == "healthy":
                t.state = TargetState.SOAKING
                t.since = now
                self._soaked(t, now)
            elif seen.status == "Success" and runs and seen.health == "broken":
                self._fail(t, "functions broken after the deployment", now)
            elif now - since >= self.deadline_s:
                self._fail(t, f"not healthy within the deadline ({self.deadline_s:g} s)", now)
        elif t.state is TargetState.SOAKING:
            if seen.running not in (None, t.deployment) or seen.health == "broken":
                self._fail(t, "functions broken during the soak", now)
            else:
                self._soaked(t, now)
        elif t.state is TargetState.RESTORING and t.restore is not None:
            if seen.status in FINAL:
                t.state = TargetState.RESTORED
                t.since = now

    def _soaked(self, t: Target, now: float) -> None:
        if t.since is not None and now - t.since >= self.soak_s:
            t.state = TargetState.DONE
            t.detail = ""

    def _fail(self, t: Target, reason: str, now: float) -> None:
        t.failed = True
        t.detail = reason
        t.state = TargetState.RESTORING
        t.restore = None
        t.since = now
        self.events.append(f"{t.group} failed: {reason}")

    def _set(self, state: RolloutState, reason: str) -> None:
        self.state = state
        self.reason = reason
        self.events.append(f"{state.value}: {reason}")

    # ---- operator commands -----------------------------------------------------------

    def command(self, name: str, now: float) -> None:
        """``pause``, ``resume`` (failed targets are tried again), ``abort`` or
        ``rollback``; ``RolloutError`` when the state does not allow it."""
        allowed = ALLOWED.get(name)
        if allowed is None:
            raise RolloutError(f"unknown command {name!r}: use pause, resume, abort or rollback")
        if self.state not in allowed:
            raise RolloutError(
                f"rollout {self.id} is {self.state.value}: cannot {name} it", field="state"
            )
        if name == "pause":
            self._set(RolloutState.PAUSED, "paused by the operator")
        elif name == "resume":
            for t in self.targets:
                if t.failed and t.state is TargetState.RESTORED:
                    t.failed = False
                    t.state = TargetState.WAITING
                    t.restore = None
                    t.deployment = None
            self._set(RolloutState.RUNNING, "resumed")
        elif name == "abort":
            for t in self.targets:
                if t.state is TargetState.WAITING or self._not_deployed(t):
                    t.state = TargetState.SKIPPED
            self._set(RolloutState.ABORTED, "aborted by the operator")
        else:
            for t in self.targets:
                if t.state is TargetState.WAITING or self._not_deployed(t):
                    t.state = TargetState.SKIPPED
                elif t.state in (TargetState.DEPLOYING, TargetState.SOAKING, TargetState.DONE):
                    t.state = TargetState.RESTORING
                    t.restore = None
                    t.since = now
            self._set(RolloutState.ROLLING_BACK, "rolling back to each group's previous deployment")

    @staticmethod
    def _not_deployed(t: Target) -> bool:
        """In a wave whose deploy was not asked for yet (the next pass would have)."""
        return t.state is TargetState.DEPLOYING and t.deployment is None

    # ---- persistence ----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state.value,
            "reason": self.reason,
            "wave": self.wave,
            "waves": list(self.waves),
            "soak_s": self.soak_s,
            "max_failures": self.max_failures,
            "deadline_s": self.deadline_s,
            "template": self.template,
            "targets": [t.to_json() for t in self.targets],
            "events": list(self.events[-50:]),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Rollout:
        return cls(
            id=str(data["id"]),
            targets=[Target.from_json(t) for t in data["targets"]],
            waves=[int(w) for w in data["waves"]],
            soak_s=float(data["soak_s"]),
            max_failures=int(data["max_failures"]),
            deadline_s=float(data.get("deadline_s", DEFAULT_DEADLINE_S)),
            state=RolloutState(data["state"]),
            wave=int(data["wave"]),
            reason=str(data.get("reason", "")),
            template=data.get("template"),
            events=[str(e) for e in data.get("events", [])],
        )

    def summary(self) -> dict[str, Any]:
        """Per wave: its groups and how many are done, failed, in flight."""
        waves = []
        for index, _end in enumerate(self.waves):
            members = [t for t in self.targets if t.wave == index]
            waves.append(
                {
                    "wave": index + 1,
                    "groups": len(members),
                    "done": sum(1 for t in members if t.state is TargetState.DONE),
                    "failed": sum(1 for t in members if t.failed),
                    "in_flight": sum(
                        1
                        for t in members
                        if t.state
                        in (TargetState.DEPLOYING, TargetState.SOAKING, TargetState.RESTORING)
                    ),
                }
            )
        return {
            "total": len(self.targets),
            "done": self.done,
            "failed": self.failures,
            "waves": waves,
        }
