"""Saved dashboards of a group (charts of its telemetry), kept by the cloud for the console."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from hedgerow.cloud.storage.dashboards import Dashboard
from hedgerow.cloud.storage.repository import Repository

log = logging.getLogger(__name__)


class DashboardService:
    def __init__(self, store: Repository) -> None:
        self.store = store

    async def all(self, group: str) -> list[Dashboard]:
        return await asyncio.to_thread(self.store.list_dashboards, group)

    async def put(self, group: str, name: str, charts: Sequence[dict[str, Any]]) -> Dashboard:
        dashboard = await asyncio.to_thread(self.store.put_dashboard, group, name, charts)
        log.info("cloud.dashboard.saved group=%s name=%s charts=%d", group, name, len(charts))
        return dashboard

    async def delete(self, group: str, name: str) -> None:
        await asyncio.to_thread(self.store.delete_dashboard, group, name)
        log.info("cloud.dashboard.deleted group=%s name=%s", group, name)
