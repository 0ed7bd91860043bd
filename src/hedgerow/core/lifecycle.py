"""The core's components in order: started one after another, stopped in reverse.

``Components([...])`` runs a list of ``hedgerow.lifecycle.Component``: ``start()`` starts
each in order; if one fails, those already started are stopped (in reverse) and
``ComponentStartError`` names the one that failed. ``stop()`` stops the started ones in
reverse order; a component that fails to stop is logged and the others still stop.
``health()`` is derived from the components' states (``hedgerow.lifecycle.health_of``).

``Step`` turns an async context manager factory into a component: what the daemon opens
for a part (the spool, the broker, the function host, ...) is one ``Step``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from hedgerow.lifecycle import Component, Health, State, health_of

from .errors import CoreError

log = logging.getLogger(__name__)


class ComponentStartError(CoreError):
    """A component failed to start; those started before it were stopped again."""

    def __init__(self, component: str, cause: BaseException) -> None:
        super().__init__(f"{component}: {cause}")
        self.component = component
        self.cause = cause


class Step:
    """A component whose start enters ``opener()`` and whose stop exits it."""

    def __init__(self, name: str, opener: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        self._name = name
        self._opener = opener
        self._state = State.STOPPED
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> State:
        return self._state

    def health(self) -> Health:
        return health_of([self._state])

    async def start(self) -> None:
        if self._state is not State.STOPPED:
            return
        self._state = State.STARTING
        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(self._opener())
        except BaseException:
            self._state = State.BROKEN
            await stack.aclose()
            raise
        self._stack = stack
        self._state = State.RUNNING

    async def stop(self) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            if self._state is not State.BROKEN:
                self._state = State.STOPPED
            return
        self._state = State.STOPPING
        try:
            await stack.aclose()
        finally:
            self._state = State.STOPPED


class Components:
    """An ordered list of components with one lifecycle."""

    def __init__(self, components: Sequence[Component]) -> None:
        names = [c.name for c in components]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"component names used twice: {', '.join(duplicates)}")
        self._components = list(components)
        self._started: list[Component] = []

    def __iter__(self) -> Iterator[Component]:
        return iter(self._components)

    async def start(self) -> None:
        """Start each component in order; on a failure stop the started ones in reverse and
        raise ``ComponentStartError`` (a cancellation is re-raised as it is)."""
        for component in self._components:
            log.debug("core.component.starting name=%s", component.name)
            try:
                await component.start()
            except BaseException as exc:
                if not isinstance(exc, Exception):  # cancelled, interrupted: stop and go
                    await self.stop()
                    raise
                log.error("core.component.start_failed name=%s error=%s", component.name, exc)
                await self.stop()
                if isinstance(exc, CoreError):
                    raise  # already says what to do (ConfigError names the file, ...)
                raise ComponentStartError(component.name, exc) from exc
            self._started.append(component)
            log.debug("core.component.running name=%s", component.name)

    async def stop(self) -> None:
        """Stop the started components in reverse order; each one's failure is logged and
        the rest still stop."""
        while self._started:
            component = self._started.pop()
            try:
                await component.stop()
            except Exception as exc:  # one component's failure must not leak the others
                log.error("core.component.stop_failed name=%s error=%s", component.name, exc)

    def states(self) -> Mapping[str, State]:
        return {c.name: c.state for c in self._components}

    def health(self) -> Health:
        """Derived from every component's own health (worst wins)."""
        worst = Health.HEALTHY
        order = [Health.BROKEN, Health.PENDING, Health.HEALTHY]
        for component in self._components:
            health = component.health()
            if order.index(health) < order.index(worst):
                worst = health
        return worst
