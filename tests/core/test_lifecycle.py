"""The core's component lifecycle with in-memory components: order, rollback, health."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from hedgerow.core.errors import ConfigError
from hedgerow.core.lifecycle import Components, ComponentStartError, Step
from hedgerow.functions.policy import State as FunctionState
from hedgerow.lifecycle import Component, Health, State, health_of, parse_state


class Part:
    """An in-memory component that records what happens to it in a shared journal."""

    def __init__(self, name: str, journal: list[str], *, fail_start: bool = False) -> None:
        self._name = name
        self.journal = journal
        self.fail_start = fail_start
        self._state = State.STOPPED

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> State:
        return self._state

    def health(self) -> Health:
        return health_of([self._state])

    async def start(self) -> None:
        self._state = State.STARTING
        if self.fail_start:
            self._state = State.BROKEN
            raise RuntimeError(f"{self._name} cannot open its port")
        self.journal.append(f"start {self._name}")
        self._state = State.RUNNING

    async def stop(self) -> None:
        self.journal.append(f"stop {self._name}")
        self._state = State.STOPPED

    def crash(self) -> None:
        self._state = State.BACKOFF

    def give_up(self) -> None:
        self._state = State.BROKEN


def parts(journal: list[str], *names: str, failing: str = "") -> list[Part]:
    return [Part(n, journal, fail_start=n == failing) for n in names]


async def test_started_in_order_and_stopped_in_reverse() -> None:
    journal: list[str] = []
    components = Components(parts(journal, "spool", "broker", "router"))
    await components.start()
    assert journal == ["start spool", "start broker", "start router"]
    assert components.states() == {n: State.RUNNING for n in ("spool", "broker", "router")}
    await components.stop()
    assert journal[3:] == ["stop router", "stop broker", "stop spool"]
    assert set(components.states().values()) == {State.STOPPED}
    await components.stop()  # twice is harmless: nothing is stopped again
    assert len(journal) == 6


async def test_a_component_failing_to_start_stops_those_already_started() -> None:
    journal: list[str] = []
    components = Components(
        parts(journal, "spool", "broker", "router", "metrics", failing="router")
    )
    with pytest.raises(ComponentStartError) as e:
        await components.start()
    assert e.value.component == "router" and "cannot open its port" in str(e.value)
    assert journal == ["start spool", "start broker", "stop broker", "stop spool"]
    states = components.states()
    assert states["router"] is State.BROKEN and states["metrics"] is State.STOPPED
    assert components.health() is Health.BROKEN


async def test_a_core_error_passes_through_unwrapped() -> None:
    """A ConfigError already tells the operator which file to fix: it is not wrapped."""
    journal: list[str] = []

    @contextlib.asynccontextmanager
    async def identity() -> AsyncIterator[None]:
        raise ConfigError("core.key", "cannot read /etc/hedgerow/core.key")
        yield

    first = Part("spool", journal)
    components = Components([first, Step("identity", identity)])
    with pytest.raises(ConfigError, match="core.key"):
        await components.start()
    assert journal == ["start spool", "stop spool"]


async def test_a_cancelled_start_stops_what_started_and_stays_cancelled() -> None:
    journal: list[str] = []
    entered = asyncio.Event()

    @contextlib.asynccontextmanager
    async def slow() -> AsyncIterator[None]:
        entered.set()
        await asyncio.Event().wait()  # never set: only cancellation ends it
        yield

    components = Components([Part("spool", journal), Step("certificate", slow)])
    task = asyncio.create_task(components.start())
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert journal == ["start spool", "stop spool"]


async def test_step_runs_a_context_manager_as_a_component() -> None:
    journal: list[str] = []

    @contextlib.asynccontextmanager
    async def broker() -> AsyncIterator[None]:
        journal.append("open")
        try:
            yield
        finally:
            journal.append("close")

    step: Component = Step("broker", broker)
    assert step.state is State.STOPPED
    await step.start()
    assert step.state is State.RUNNING and step.health() is Health.HEALTHY
    await step.stop()
    assert step.state is State.STOPPED and journal == ["open", "close"]


async def test_health_is_derived_from_the_states() -> None:
    journal: list[str] = []
    spool, connector = parts(journal, "spool", "connector")
    components = Components([spool, connector])
    await components.start()
    assert components.health() is Health.HEALTHY
    connector.crash()
    assert components.health() is Health.PENDING
    connector.give_up()
    assert components.health() is Health.BROKEN
    await components.stop()


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="used twice: spool"):
        Components(parts([], "spool", "spool"))


def test_one_state_enum_for_functions_and_components() -> None:
    assert FunctionState is State
    assert parse_state("running") is State.RUNNING and parse_state("RUNNING") is State.RUNNING
    assert parse_state("idle") is None  # no guessing: an unknown name is not a state
    assert health_of([]) is Health.HEALTHY
    assert health_of([State.RUNNING, State.STOPPED]) is Health.HEALTHY
    assert health_of([State.RUNNING, State.STARTING]) is Health.PENDING
    assert health_of([State.BACKOFF, State.BROKEN]) is Health.BROKEN
