"""``StreamService``: the manager and its server as one component with ``start``/``stop``,
``state`` and ``health()`` — what the core starts when ``[streams] enabled = true``."""

from __future__ import annotations

import logging

from .manager import CloudSink, ServiceState, StreamManager, StreamsSettings
from .server import Authorizer, StreamServer

log = logging.getLogger(__name__)


class StreamService:
    def __init__(
        self,
        settings: StreamsSettings,
        *,
        host: str,
        port: int,
        authorize: Authorizer,
        cloud: CloudSink | None = None,
    ) -> None:
        self.manager = StreamManager(settings, cloud=cloud)
        self.server = StreamServer(self.manager, host=host, port=port, authorize=authorize)
        self.port = port

    @property
    def state(self) -> ServiceState:
        return self.manager.state

    def health(self) -> str | None:
        return self.manager.health()

    async def start(self) -> None:
        await self.manager.start()
        try:
            _host, self.port = await self.server.start()
        except OSError:
            await self.manager.stop()
            raise

    async def stop(self) -> None:
        await self.server.stop()
        await self.manager.stop()

    def connect_cloud(self, cloud: CloudSink) -> None:
        """Cloud exports start moving once the core's spool writer exists."""
        self.manager.cloud = cloud

    def progress(self) -> dict[str, dict[str, int]]:
        return self.manager.progress()
