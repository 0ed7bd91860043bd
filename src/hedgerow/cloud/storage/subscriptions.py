"""Subscriptions (each group's routing table) and the routes to and from the cloud."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hedgerow.cloud import domain
from hedgerow.cloud.domain import (
    Subscription,
)
from hedgerow.cloud.errors import Conflict, InvalidInput, NotFound
from hedgerow.cloud.storage.base import (
    Store,
    now,
)
from hedgerow.cloud.storage.models import (
    FunctionRow,
    GroupRow,
    GroupThingRow,
    SubscriptionRow,
    ThingRow,
)

log = logging.getLogger(__name__)


class SubscriptionStore(Store):
    def _check_ref(
        self,
        s: Session,
        group_row: GroupRow,
        ref: domain.EndpointRef,
        function_names: set[str] | None = None,
    ) -> None:
        if ref.kind == "thing":
            thing = s.scalar(sa.select(ThingRow).where(ThingRow.name == ref.name))
            if thing is None or s.get(GroupThingRow, (group_row.id, thing.id)) is None:
                raise InvalidInput(
                    f"thing {ref.name!r} is not in group {group_row.name!r}", field="thing"
                )
        elif ref.kind == "function":
            if function_names is not None:
                if ref.name not in function_names:
                    raise InvalidInput(
                        f"function {ref.name!r} is not in group {group_row.name!r}",
                        field="function",
                    )
                return
            exists = s.scalar(
                sa.select(FunctionRow.id).where(
                    FunctionRow.group_id == group_row.id, FunctionRow.name == ref.name
                )
            )
            if exists is None:
                raise InvalidInput(
                    f"function {ref.name!r} is not in group {group_row.name!r}", field="function"
                )

    def add_subscription(self, group: str, source: str, topic: str, target: str) -> Subscription:
        src = domain.parse_endpoint_ref(source, "source")
        dst = domain.parse_endpoint_ref(target, "target")
        topic = domain.validate_topic_filter_text(topic)
        if str(src) == str(dst):
            raise InvalidInput("source and target must differ")
        with self._tx() as s:
            group_row = self._group(s, group)
            self._check_ref(s, group_row, src)
            self._check_ref(s, group_row, dst)
            dup = s.scalar(
                sa.select(SubscriptionRow.id).where(
                    SubscriptionRow.group_id == group_row.id,
                    SubscriptionRow.source == str(src),
                    SubscriptionRow.topic == topic,
                    SubscriptionRow.target == str(dst),
                )
            )
            if dup is not None:
                raise Conflict(f"subscription {src} {topic} -> {dst} already exists (id {dup})")
            row = SubscriptionRow(
                group_id=group_row.id,
                source=str(src),
                topic=topic,
                target=str(dst),
                created_at=now(),
            )
            s.add(row)
            s.flush()
            return Subscription(row.id, group, row.source, row.topic, row.target)

    def _subscriptions(self, s: Session, group_row: GroupRow) -> list[Subscription]:
        rows = s.scalars(
            sa.select(SubscriptionRow)
            .where(SubscriptionRow.group_id == group_row.id)
            .order_by(SubscriptionRow.id)
        )
        return [Subscription(r.id, group_row.name, r.source, r.topic, r.target) for r in rows]

    def list_subscriptions(self, group: str) -> list[Subscription]:
        with self._tx() as s:
            return self._subscriptions(s, self._group(s, group))

    def all_cloud_routes(self) -> dict[str, tuple[list[str], list[str]]]:
        """Per group: (filters routed to the cloud, filters routed from the cloud)."""
        with self._tx() as s:
            query = sa.select(GroupRow.name, SubscriptionRow).join(
                GroupRow, GroupRow.id == SubscriptionRow.group_id
            )
            routes: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
            for group, row in s.execute(query):
                if row.target == "cloud":
                    routes[group][0].append(row.topic)
                if row.source == "cloud":
                    routes[group][1].append(row.topic)
            return dict(routes)

    @staticmethod
    def _subscription(s: Session, group_row: GroupRow, subscription_id: int) -> SubscriptionRow:
        row = s.get(SubscriptionRow, subscription_id)
        if row is None or row.group_id != group_row.id:
            raise NotFound(
                "subscription",
                str(subscription_id),
                f"subscription {subscription_id} does not exist in group {group_row.name!r}",
            )
        return row

    def get_subscription(self, group: str, subscription_id: int) -> Subscription:
        with self._tx() as s:
            group_row = self._group(s, group)
            row = self._subscription(s, group_row, subscription_id)
            return Subscription(row.id, group, row.source, row.topic, row.target)

    def update_subscription(
        self, group: str, subscription_id: int, changes: dict[str, Any]
    ) -> Subscription:
        with self._tx() as s:
            group_row = self._group(s, group)
            row = self._subscription(s, group_row, subscription_id)
            src = domain.parse_endpoint_ref(changes.get("source", row.source), "source")
            dst = domain.parse_endpoint_ref(changes.get("target", row.target), "target")
            topic = domain.validate_topic_filter_text(changes.get("topic", row.topic))
            if str(src) == str(dst):
                raise InvalidInput("source and target must differ")
            self._check_ref(s, group_row, src)
            self._check_ref(s, group_row, dst)
            row.source, row.topic, row.target = str(src), topic, str(dst)
            s.flush()
            return Subscription(row.id, group, row.source, row.topic, row.target)

    def delete_subscription(self, group: str, subscription_id: int) -> None:
        with self._tx() as s:
            s.delete(self._subscription(s, self._group(s, group), subscription_id))
