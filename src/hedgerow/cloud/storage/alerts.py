"""Alert rules, webhooks, and the history of alerts that fired."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from hedgerow.cloud.alerting import AlertEvent, AlertKind, AlertRule, AlertWebhook, Firing
from hedgerow.cloud.errors import Conflict, NotFound
from hedgerow.cloud.storage.base import MAX_PAGE, Store
from hedgerow.cloud.storage.models import AlertEventRow, AlertRuleRow, AlertWebhookRow


def _event(r: AlertEventRow) -> AlertEvent:
    return AlertEvent(
        r.id, r.rule, r.kind, r.subject, r.group, r.message, r.fired_at, r.resolved_at,
        dict(r.deliveries or {}),
    )  # fmt: skip


class AlertStore(Store):
    # ---- rules ------------------------------------------------------------------------
    def add_alert_rule(self, rule: AlertRule) -> AlertRule:
        with self._tx() as s:
            if s.scalar(sa.select(AlertRuleRow.id).where(AlertRuleRow.name == rule.name)):
                raise Conflict(f"alert rule {rule.name!r} exists: remove it first")
            s.add(
                AlertRuleRow(
                    name=rule.name, kind=rule.kind.value, threshold=rule.threshold, group=rule.group
                )
            )
        return rule

    def list_alert_rules(self) -> list[AlertRule]:
        with self._tx() as s:
            rows = s.scalars(sa.select(AlertRuleRow).order_by(AlertRuleRow.name)).all()
            return [AlertRule(r.name, AlertKind(r.kind), r.threshold, r.group) for r in rows]

    def remove_alert_rule(self, name: str) -> None:
        with self._tx() as s:
            done = s.execute(sa.delete(AlertRuleRow).where(AlertRuleRow.name == name))
            if not done.rowcount:  # type: ignore[attr-defined]
                raise NotFound("alert rule", name)

    # ---- webhooks ---------------------------------------------------------------------
    def add_alert_webhook(self, hook: AlertWebhook) -> AlertWebhook:
        with self._tx() as s:
            if s.scalar(sa.select(AlertWebhookRow.id).where(AlertWebhookRow.name == hook.name)):
                raise Conflict(f"webhook {hook.name!r} exists: remove it first")
            s.add(AlertWebhookRow(name=hook.name, url=hook.url, secret=hook.secret))
        return hook

    def list_alert_webhooks(self) -> list[AlertWebhook]:
        with self._tx() as s:
            rows = s.scalars(sa.select(AlertWebhookRow).order_by(AlertWebhookRow.name)).all()
            return [AlertWebhook(r.name, r.url, r.secret) for r in rows]

    def remove_alert_webhook(self, name: str) -> None:
        with self._tx() as s:
            done = s.execute(sa.delete(AlertWebhookRow).where(AlertWebhookRow.name == name))
            if not done.rowcount:  # type: ignore[attr-defined]
                raise NotFound("webhook", name)

    # ---- history ----------------------------------------------------------------------
    def record_alert_changes(
        self, fired: Sequence[Firing], resolved: Sequence[tuple[str, str]], now: float
    ) -> list[AlertEvent]:
        """One evaluation's changes in one transaction: a cloud killed meanwhile leaves the
        history as it was, and the next evaluation (on any replica) records them again."""
        with self._tx() as s:
            rows = [
                AlertEventRow(
                    rule=firing.rule,
                    kind=firing.kind.value,
                    subject=firing.subject,
                    group=firing.group,
                    message=firing.message,
                    fired_at=now,
                    deliveries={},
                )
                for firing in fired
            ]
            s.add_all(rows)
            for rule, subject in resolved:
                s.execute(
                    sa.update(AlertEventRow)
                    .where(
                        AlertEventRow.rule == rule,
                        AlertEventRow.subject == subject,
                        AlertEventRow.resolved_at.is_(None),
                    )
                    .values(resolved_at=now)
                )
            s.flush()
            return [_event(row) for row in rows]

    def record_deliveries(self, event_id: int, deliveries: Mapping[str, str]) -> None:
        with self._tx() as s:
            row = s.get(AlertEventRow, event_id)
            if row is not None:
                row.deliveries = {**(row.deliveries or {}), **deliveries}

    def list_alerts(self, *, active_only: bool = False, limit: int = 100) -> list[AlertEvent]:
        query = sa.select(AlertEventRow)
        if active_only:
            query = query.where(AlertEventRow.resolved_at.is_(None))
        query = query.order_by(AlertEventRow.id.desc()).limit(max(1, min(limit, MAX_PAGE)))
        with self._tx() as s:
            return [_event(r) for r in s.scalars(query).all()]
