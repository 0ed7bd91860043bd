"""Staged rollouts: start one over many groups, drive it, and the operator's commands.

The state machine is ``hedgerow.cloud.rollout_plan`` (pure); this service is its shell:
``tick`` loads every active rollout from the database, observes its targets (deployment
status, the core's heartbeat), steps it, carries out the deploys and restores it asks for
and stores it again — so a cloud restart carries on where it stopped. ``run`` is the
cloud's background job: ``tick`` and the deployment deadline sweep, every
``TICK_SECONDS``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hedgerow.cloud.domain import DeploymentKind, FunctionSettings
from hedgerow.cloud.errors import CloudError, Conflict, InvalidInput
from hedgerow.cloud.jobs import Jobs, Schedule
from hedgerow.cloud.rollout_plan import (
    DEFAULT_DEADLINE_S,
    Action,
    Deploy,
    Observation,
    Rollout,
    RolloutError,
)
from hedgerow.cloud.services.deployments import DeploymentService
from hedgerow.cloud.services.fleet import FleetFunction, FleetService, FleetSubscription
from hedgerow.cloud.services.groups import GroupService
from hedgerow.cloud.storage.rollouts import RolloutStore

log = logging.getLogger(__name__)

#: How often the rollout job looks at active rollouts and overdue deployments.
TICK_SECONDS = 0.5
#: How long a cloud process holds the rollouts it drives without renewing (another
#: ``serve`` on the same database takes them over after that; at once when it takes the
#: rollout job's lock).
LEASE_SECONDS = 10.0
#: The lease of the process that starts a rollout while it takes its first pass, renewed
#: every third of it for as long as the pass lasts (a slow database); released after it,
#: and the rollout job carries on.
FIRST_STEP_LEASE_SECONDS = 30.0
#: Operator commands tried again this often when the rollout changed meanwhile.
COMMAND_ATTEMPTS = 3
#: Deploys and restores carried out before a rollout is stored again, at most, and for at
#: most ``PASS_BUDGET_S``: a wave of thousands of groups shows its progress, leaves little
#: to redo after a crash, lets operator commands in between, and ``POST
#: /api/v1/rollouts`` answers in seconds — while storing a rollout of thousands of targets
#: (a second or so) happens seldom enough not to slow the wave down.
ACTIONS_PER_PASS = 500
PASS_BUDGET_S = 5.0
#: Actions of one pass under way at once: each is a few short transactions, so one after
#: another a wave waits on the database's round trips (1,500 groups: 93 s, the replica
#: mostly idle); a few at once, and the thread pool stays free for the API and core events.
ACTIONS_AT_ONCE = 4
#: How long one tick of the rollout job keeps going while a rollout has more to do at
#: once (then the job's lock is checked again and the next tick goes on).
TICK_BUDGET_S = 10.0


@dataclass(frozen=True)
class RolloutRequest:
    """Which groups (``groups`` or every group with all of ``labels``), what they get
    (``functions``/``subscriptions``, e.g. a source group's; None: each group's own
    definition) and how: waves, soak, failure threshold, deadline."""

    groups: Sequence[str] = ()
    labels: dict[str, str] | None = None
    functions: Sequence[FleetFunction] | None = None
    subscriptions: Sequence[FleetSubscription] = ()
    canary: int = 0
    waves: Sequence[str] = ("100%",)
    soak_s: float = 0.0
    max_failures: str = "0"
    deadline_s: float = DEFAULT_DEADLINE_S


def _template(
    functions: Sequence[FleetFunction] | None, subscriptions: Sequence[FleetSubscription]
) -> dict[str, Any] | None:
    if functions is None:
        return None
    return {
        "functions": [
            {
                "name": f.name,
                "settings": dataclasses.asdict(f.settings),
                "artifact_sha256": f.artifact_sha256,
            }
            for f in functions
        ],
        "subscriptions": [dataclasses.asdict(s) for s in subscriptions],
    }


def _from_template(
    template: dict[str, Any],
) -> tuple[list[FleetFunction], list[FleetSubscription]]:
    functions = [
        FleetFunction(f["name"], FunctionSettings(**f["settings"]), f["artifact_sha256"])
        for f in template["functions"]
    ]
    return functions, [FleetSubscription(**s) for s in template["subscriptions"]]


def _invalid(exc: RolloutError) -> InvalidInput:
    return InvalidInput(exc.message, field=exc.field)


class RolloutService:
    def __init__(
        self,
        store: RolloutStore,
        groups: GroupService,
        deployments: DeploymentService,
        fleet: FleetService,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.groups = groups
        self.deployments = deployments
        self.fleet = fleet
        self.clock = clock
        self._lock = asyncio.Lock()
        #: this process, as the holder of rollout leases
        self.owner = f"cloud-{uuid.uuid4().hex[:12]}"
        self._take_all = False

    async def start(self, request: RolloutRequest) -> Rollout:
        names = list(dict.fromkeys(request.groups))
        if request.labels:
            names += [g.name for g in await self.groups.all(request.labels) if g.name not in names]
        if not names:
            raise InvalidInput("no group matches: name groups or a label", field="groups")
        cores: dict[str, str] = {}
        for name in names:
            core = (await self.groups.get(name)).core
            if core is None:
                raise Conflict(f"group {name!r} has no core: a rollout deploys to cores")
            cores[name] = core
        if request.functions is not None:
            for f in request.functions:
                await self.fleet.artifacts.size(f.artifact_sha256)
        current = await asyncio.to_thread(self.store.current_deployments, names)
        try:
            rollout = Rollout.start(
                f"r-{uuid.uuid4().hex[:12]}",
                [(g, current[g]) for g in names],
                canary=request.canary,
                waves=request.waves,
                soak_s=request.soak_s,
                max_failures=request.max_failures,
                deadline_s=request.deadline_s,
                template=_template(request.functions, request.subscriptions),
                cores=cores,
            )
        except RolloutError as exc:
            raise _invalid(exc) from exc
        async with self._lock:
            # leased to this process while it takes the first step (it may not be the
            # replica holding the rollout job: that one must not deploy the same wave too)
            await asyncio.to_thread(
                self.store.create_rollout,
                rollout.id,
                rollout.state.value,
                rollout.to_json(),
                self.owner,
                FIRST_STEP_LEASE_SECONDS,
            )
            # the first pass is bounded (ACTIONS_PER_PASS, PASS_BUDGET_S); the job does the rest
            renewing = asyncio.ensure_future(self._keep_lease(rollout.id))
            try:
                await self._drive(rollout, 0)
            finally:
                renewing.cancel()
                await asyncio.gather(renewing, return_exceptions=True)
                await asyncio.to_thread(self.store.release_rollout, rollout.id, self.owner)
        log.info(
            "rollout.started id=%s groups=%s waves=%s soak=%s max_failures=%s",
            rollout.id,
            len(names),
            rollout.waves,
            rollout.soak_s,
            rollout.max_failures,
        )
        return rollout

    async def _keep_lease(self, rollout_id: str) -> None:
        while True:
            await asyncio.sleep(FIRST_STEP_LEASE_SECONDS / 3)
            await asyncio.to_thread(
                self.store.renew_rollout, rollout_id, self.owner, FIRST_STEP_LEASE_SECONDS
            )

    async def get(self, rollout_id: str) -> Rollout:
        plan, _revision = await asyncio.to_thread(self.store.get_rollout, rollout_id)
        return Rollout.from_json(plan)

    async def all(self, limit: int = 100) -> list[Rollout]:
        found = await asyncio.to_thread(self.store.list_rollouts, limit)
        return [Rollout.from_json(r) for r in found]

    async def command(self, rollout_id: str, name: str) -> Rollout:
        """``pause``, ``resume``, ``abort`` or ``rollback`` (``Conflict`` when its state
        does not allow it)."""
        async with self._lock:
            for _attempt in range(COMMAND_ATTEMPTS):
                plan, revision = await asyncio.to_thread(self.store.get_rollout, rollout_id)
                rollout = Rollout.from_json(plan)
                try:
                    rollout.command(name, self.clock())
                except RolloutError as exc:
                    raise Conflict(exc.message) from exc
                if await self._drive(rollout, revision):
                    break
            else:
                raise Conflict(f"rollout {rollout_id} keeps changing: try {name} again")
        log.info("rollout.command command=%s id=%s state=%s", name, rollout_id, rollout.state.value)
        return rollout

    async def tick(self) -> None:
        """Passes over every active rollout this process holds the lease of, one after
        another while one has more to do at once (a big wave), for up to ``TICK_BUDGET_S``."""
        started = time.monotonic()
        while await self._pass() and time.monotonic() - started < TICK_BUDGET_S:
            pass

    async def _pass(self) -> bool:
        """One pass (at most ``ACTIONS_PER_PASS`` actions per rollout); whether a rollout
        has actions left for the next one."""
        more = False
        async with self._lock:  # released between passes: operator commands get in
            take_all, self._take_all = self._take_all, False
            claimed = await asyncio.to_thread(
                self.store.claim_rollouts, self.owner, LEASE_SECONDS, take_all=take_all
            )
            for plan, revision in claimed:
                rollout = Rollout.from_json(plan)
                if await self._drive(rollout, revision) and rollout.pending_actions():
                    more = True
        return more

    async def _drive(self, rollout: Rollout, revision: int) -> bool:
        """Step, act (at most ``ACTIONS_PER_PASS``; the rest are asked for again by the next
        pass), store (compare-and-set on ``revision``; False: it changed meanwhile and
        nothing was stored — the deployments made are superseded by the next pass's)."""
        before = rollout.state
        seen = {
            group: Observation(*inputs)
            for group, inputs in (
                await asyncio.to_thread(self.store.rollout_inputs, rollout.watched())
            ).items()
        }
        rollout.step(self.clock(), seen)
        started = time.monotonic()
        gate = asyncio.Semaphore(ACTIONS_AT_ONCE)

        async def act(index: int, action: Action) -> None:
            async with gate:
                if index and time.monotonic() - started > PASS_BUDGET_S:
                    return  # the rest next pass (one action at least: progress, however slow)
                try:
                    if isinstance(action, Deploy):
                        deployment_id = await self._deploy(rollout, action.group)
                        rollout.deployed(action.group, deployment_id, self.clock())
                    else:
                        restored = await self._restore(rollout, action.group, action.previous)
                        rollout.restoring(action.group, restored, self.clock())
                except CloudError as exc:
                    log.warning(
                        "rollout.action_failed id=%s group=%s error=%s",
                        rollout.id,
                        action.group,
                        exc.message,
                    )
                    rollout.action_failed(action.group, exc.message, self.clock())

        async with asyncio.TaskGroup() as tasks:
            for index, action in enumerate(rollout.pending_actions()[:ACTIONS_PER_PASS]):
                tasks.create_task(act(index, action))
        saved = await asyncio.to_thread(
            self.store.save_rollout, rollout.id, rollout.state.value, rollout.to_json(), revision
        )
        if not saved:
            log.warning("rollout.changed_meanwhile id=%s revision=%s", rollout.id, revision)
            return False
        if rollout.state is not before:
            log.info(
                "rollout.state id=%s state=%s reason=%s",
                rollout.id,
                rollout.state.value,
                rollout.reason,
            )
        return True

    async def _deploy(self, rollout: Rollout, group: str) -> str:
        if rollout.template is not None:
            functions, subscriptions = _from_template(rollout.template)
            await self.fleet.apply([group], functions, subscriptions, deploy=False)
        deployment = await self.deployments.deploy(group, deadline_s=rollout.deadline_s)
        return deployment.id

    async def _restore(self, rollout: Rollout, group: str, previous: str | None) -> str:
        if previous is None:
            deployment = await self.deployments.deploy(
                group, DeploymentKind.RESET, deadline_s=rollout.deadline_s
            )
        else:
            deployment = await self.deployments.deploy(
                group, DeploymentKind.REDEPLOY, previous, deadline_s=rollout.deadline_s
            )
        return deployment.id

    async def job_tick(self) -> None:
        """One pass of the rollout job: deployment deadlines, then rollouts."""
        for name, step in (
            ("deadlines", self.deployments.fail_overdue),
            ("rollouts", self.tick),
        ):
            try:
                await step()
            except Exception:  # the job outlives any one bad pass; the next one retries
                log.exception("rollout.job_failed step=%s", name)

    def take_over(self) -> None:
        """This process just took the rollout job's lock (``hedgerow.cloud.jobs``): the next
        pass claims every active rollout at once, not after the leases of a replica that
        died ran out (the lock says no other process drives them)."""
        self._take_all = True

    async def run(self, schedule: Schedule | None = None, interval: float = TICK_SECONDS) -> None:
        """The cloud's rollout job: rollouts and deployment deadlines, forever (once across
        replicas when ``schedule`` is a ``Jobs.run`` on shared locks)."""
        run = schedule or Jobs().run
        await run("rollouts", self.job_tick, interval, taken_over=self.take_over)
