"""Subscriptions (the group's routing table); every change reloads the routes the MQTT
endpoint enforces."""

from __future__ import annotations

import asyncio
import logging

from hedgerow.cloud.domain import Subscription
from hedgerow.cloud.services.notify import RoutesChanged
from hedgerow.cloud.storage.subscriptions import SubscriptionStore

log = logging.getLogger(__name__)


class SubscriptionService:
    def __init__(self, store: SubscriptionStore, routes_changed: RoutesChanged) -> None:
        self.store = store
        self.routes_changed = routes_changed

    async def add(self, group: str, source: str, topic: str, target: str) -> Subscription:
        sub = await asyncio.to_thread(self.store.add_subscription, group, source, topic, target)
        await self.routes_changed()
        log.info(
            "subscription.added group=%s source=%s topic=%s target=%s",
            group,
            sub.source,
            sub.topic,
            sub.target,
        )
        return sub

    async def all(self, group: str) -> list[Subscription]:
        return await asyncio.to_thread(self.store.list_subscriptions, group)

    async def get(self, group: str, subscription_id: int) -> Subscription:
        return await asyncio.to_thread(self.store.get_subscription, group, subscription_id)

    async def update(
        self, group: str, subscription_id: int, changes: dict[str, str]
    ) -> Subscription:
        result = await asyncio.to_thread(
            self.store.update_subscription, group, subscription_id, changes
        )
        await self.routes_changed()
        return result

    async def delete(self, group: str, subscription_id: int) -> None:
        await asyncio.to_thread(self.store.delete_subscription, group, subscription_id)
        await self.routes_changed()
