"""The core's connector host: runs the connectors a deployment names.

``ConnectorHost(publish)`` is an async context manager owned by the core. ``await
apply(specs)`` validates every spec first (a bad one raises ``ConnectorConfigError`` naming
the connector and field, and nothing changes), then stops connectors that are gone or whose
kind, version or config changed and starts the new ones. ``await deliver(name, topic,
payload)`` hands a routed request to a connector. ``publish(name, topic, payload)`` is how
the connectors' messages reach the core's router (source ``connector:NAME``).

Connector libraries are imported by ``runtime.create`` when a connector of that kind is
built, so a core without connectors never loads them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType

from hedgerow.lifecycle import Health, State, health_of

from .config import ConnectorSpec, validate
from .errors import ConnectorConfigError, ConnectorError
from .model import ConnectorBase, Publish
from .runtime import create

log = logging.getLogger(__name__)

#: ``publish(connector_name, topic, payload)``: hands a connector's message to the core
HostPublish = Callable[[str, str, bytes], None]


class ConnectorHost:
    def __init__(self, publish: HostPublish) -> None:
        self._publish = publish
        self._running: dict[str, tuple[ConnectorSpec, ConnectorBase]] = {}

    async def __aenter__(self) -> ConnectorHost:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.apply([])

    async def apply(self, specs: Sequence[ConnectorSpec]) -> None:
        wanted: dict[str, ConnectorSpec] = {}
        for spec in specs:
            if spec.name in wanted:
                raise ConnectorConfigError(f"connectors[{spec.name}].name", "is used twice")
            try:
                validate(spec.kind, spec.name, spec.config)
            except ConnectorConfigError as exc:
                raise ConnectorConfigError(
                    f"connectors[{spec.name}].{exc.field}", exc.message
                ) from exc
            wanted[spec.name] = spec
        for name, (spec, connector) in list(self._running.items()):
            if wanted.get(name) != spec:
                del self._running[name]
                await connector.stop()
                log.info("connectors.host.stopped name=%s", name)
        for name, spec in wanted.items():
            if name in self._running:
                continue
            connector = create(spec, self._publisher(name))
            self._running[name] = (spec, connector)
            await connector.start()
            log.info(
                "connectors.host.started name=%s kind=%s version=%s", name, spec.kind, spec.version
            )

    def _publisher(self, name: str) -> Publish:
        async def publish(topic: str, payload: bytes) -> None:
            self._publish(name, topic, payload)

        return publish

    async def deliver(self, name: str, topic: str, payload: bytes) -> None:
        entry = self._running.get(name)
        if entry is None:
            raise ConnectorError(f"connector {name!r} is not deployed")
        await entry[1].handle(topic, payload)

    def get(self, name: str) -> ConnectorBase | None:
        entry = self._running.get(name)
        return entry[1] if entry else None

    def states(self) -> Mapping[str, State]:
        return {name: c.state for name, (_, c) in self._running.items()}

    def health(self) -> Health:
        return health_of(self.states().values())

    def report(self) -> dict[str, dict[str, object]]:
        """Each connector's kind, version, state and counters (for the heartbeat)."""
        return {
            name: {
                "kind": spec.kind,
                "version": spec.version,
                "state": c.state.value,
                **c.counters.as_dict(),
            }
            for name, (spec, c) in self._running.items()
        }
