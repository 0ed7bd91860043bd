"""Alerts: rules and webhooks (CRUD), the fleet's state the rules read, and the loop that
evaluates them (``hedgerow.cloud.alerting.evaluate``), records what fired and cleared and
hands it to the webhooks (``hedgerow.cloud.alert_webhooks.deliver``)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from hedgerow.clock import Clock, MonotonicClock
from hedgerow.cloud import alert_webhooks
from hedgerow.cloud.alerting import (
    AlertEvent,
    AlertKind,
    AlertRule,
    AlertWebhook,
    CoreState,
    changes,
    check_rule,
    evaluate,
)
from hedgerow.cloud.domain import CertificateKind, Core
from hedgerow.cloud.errors import CloudError, InvalidInput
from hedgerow.cloud.jobs import Jobs, Schedule
from hedgerow.cloud.services.cores import Presence, presence_of, presence_unknown
from hedgerow.cloud.storage.repository import Repository

log = logging.getLogger(__name__)

#: Seconds between two evaluations of the rules (at least: see ``EVALUATION_SHARE``).
EVALUATE_EVERY_S: Final = 1.0
#: An evaluation reads every core; in a big fleet it is spaced out so that it takes at most
#: this share of the time (5,000 cores: ~0.2 s a read, so every ~4 s rather than every 1 s
#: — heartbeats, the rules' input, come every 10 s anyway).
EVALUATION_SHARE: Final = 0.05


@dataclass(frozen=True)
class CreatedWebhook:
    webhook: AlertWebhook
    #: shown once: the key receivers verify the signature with
    secret: str


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url must be an http:// or https:// URL", field="url")
    return url


def _error_counts(heartbeat: Mapping[str, Any] | None) -> dict[str, int]:
    errors = (heartbeat or {}).get("function_errors") or {}
    out: dict[str, int] = {}
    for name, e in errors.items():
        if isinstance(e, Mapping):
            out[str(name)] = int(e.get("failed", 0) or 0) + int(e.get("crashes", 0) or 0)
    return out


class AlertService:
    def __init__(
        self,
        store: Repository,
        presence: Presence = presence_unknown,
        *,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.presence = presence
        self.clock = clock or MonotonicClock()
        self.wall = wall
        self._active: set[tuple[str, str]] | None = None  # loaded from the history at start
        self._was_connected: dict[str, bool] = {}
        self._offline_since: dict[str, float] = {}
        #: per core: (last_seen epoch, error counts) of the previous and the newest sample
        self._samples: dict[str, tuple[float, dict[str, int], float, dict[str, int]]] = {}
        self.evaluations = 0
        self._started: float | None = None  # the first evaluation's time
        self._next_due = 0.0  # monotonic: when the loop evaluates next

    # ---- rules and webhooks -----------------------------------------------------------
    async def add_rule(
        self, name: str, kind: str, threshold: float, group: str | None = None
    ) -> AlertRule:
        rule = AlertRule(name, check_rule(name, kind, threshold), threshold, group or None)
        await asyncio.to_thread(self.store.add_alert_rule, rule)
        log.info("alerts.rule_added name=%s kind=%s threshold=%s", name, kind, threshold)
        return rule

    async def rules(self) -> list[AlertRule]:
        return await asyncio.to_thread(self.store.list_alert_rules)

    async def remove_rule(self, name: str) -> None:
        await asyncio.to_thread(self.store.remove_alert_rule, name)

    async def add_webhook(self, name: str, url: str, secret: str | None = None) -> CreatedWebhook:
        if not name or len(name) > 128:
            raise InvalidInput("name must be 1-128 characters", field="name")
        key = secret or secrets.token_hex(32)
        hook = AlertWebhook(name, _check_url(url), key)
        await asyncio.to_thread(self.store.add_alert_webhook, hook)
        log.info("alerts.webhook_added name=%s", name)
        return CreatedWebhook(hook, key)

    async def webhooks(self) -> list[AlertWebhook]:
        return await asyncio.to_thread(self.store.list_alert_webhooks)

    async def remove_webhook(self, name: str) -> None:
        await asyncio.to_thread(self.store.remove_alert_webhook, name)

    async def history(self, *, active_only: bool = False, limit: int = 100) -> list[AlertEvent]:
        return await asyncio.to_thread(self.store.list_alerts, active_only=active_only, limit=limit)

    # ---- the fleet as the rules see it --------------------------------------------------
    def fleet_state(self, rules: Sequence[AlertRule], now: float) -> list[CoreState]:
        """Every core's state (in a worker thread: it reads the registry)."""
        kinds = {r.kind for r in rules}
        live = self.presence()
        out: list[CoreState] = []
        for core in self.store.list_cores():
            out.append(self._core_state(core, live, kinds, now))
        return out

    def _core_state(self, core: Core, live: Any, kinds: set[AlertKind], now: float) -> CoreState:
        beat = core.heartbeat or {}
        last_seen = core.last_seen.timestamp() if core.last_seen else None
        known = presence_of(live, core.name)
        connected = True if known is None else known
        if connected:
            self._offline_since.pop(core.name, None)
        elif core.name not in self._offline_since and last_seen is not None:
            # seen going away now; or away since before this process started (counted from
            # the start at the earliest: a cloud restart gives its cores time to come back)
            was = self._was_connected.get(core.name)
            started = self._started if self._started is not None else now
            self._offline_since[core.name] = now if was else max(last_seen, started)
        self._was_connected[core.name] = connected
        status = deployment_id = None
        if AlertKind.DEPLOYMENT_FAILED in kinds:
            deployment_id = self.store.latest_deployment(core.name)
            if deployment_id is not None:
                status = self.store.get_deployment(deployment_id).status
        not_after = None
        if AlertKind.CERT_EXPIRY in kinds:
            certs = self.store.list_certificates(owner=core.name, kind=CertificateKind.CORE.value)
            valid = [c.not_after for c in certs if not c.revoked]
            not_after = max(valid).timestamp() if valid else None
        previous, window, counts = self._errors(core.name, last_seen, beat)
        return CoreState(
            name=core.name,
            group=core.group,
            connected=connected,
            offline_since=self._offline_since.get(core.name),
            deployment_status=status,
            deployment_id=deployment_id,
            function_errors=counts,
            previous_errors=previous,
            errors_window=window,
            spool_bytes=int(beat.get("spool_bytes", 0) or 0),
            spool_max_bytes=int(beat.get("spool_max_bytes", 0) or 0),
            cert_not_after=not_after,
        )

    def _errors(
        self, core: str, last_seen: float | None, beat: Mapping[str, Any]
    ) -> tuple[dict[str, int], float, dict[str, int]]:
        """(previous counts, seconds between the two heartbeats, newest counts)."""
        counts = _error_counts(beat)
        seen = last_seen or 0.0
        sample = self._samples.get(core)
        if sample is None:
            self._samples[core] = (seen, counts, seen, counts)
            return counts, 0.0, counts
        _, _, newest_seen, newest = sample
        if counts != newest:
            self._samples[core] = (newest_seen, newest, seen, counts)
        prev_seen, previous, newest_seen, newest = self._samples[core]
        return previous, max(newest_seen - prev_seen, 1.0), newest

    # ---- the loop -----------------------------------------------------------------------
    async def evaluate_once(self) -> tuple[list[AlertEvent], list[tuple[str, str]]]:
        """One evaluation: what fired (recorded) and which keys cleared (resolved)."""
        now = self.wall()
        if self._started is None:
            self._started = now
        rules = await self.rules()
        # read even without rules: a rule added later compares with the samples kept here
        fleet = await asyncio.to_thread(self.fleet_state, rules, now)
        if self._active is None:
            open_alerts = await self.history(active_only=True, limit=10_000)
            self._active = {(a.rule, a.subject) for a in open_alerts}
        firing = evaluate(rules, fleet, now)
        diff = changes(self._active, firing)
        fired = await asyncio.to_thread(
            self.store.record_alert_changes, list(diff.fired), list(diff.resolved), now
        )
        self._active = {f.key for f in firing}
        self.evaluations += 1
        for event in fired:
            log.warning(
                "alerts.fired rule=%s subject=%s message=%s",
                event.rule,
                event.subject,
                event.message,
            )
        return fired, diff.resolved

    def take_over(self) -> None:
        """This process just took the alert job's lock: the open alerts are read again from
        the history (another replica may have recorded some since this one last looked),
        and the rules evaluated at once."""
        self._active = None
        self._next_due = 0.0

    async def run(self, schedule: Schedule | None = None) -> None:
        """Evaluate every ``EVALUATE_EVERY_S`` (once across replicas when ``schedule`` is a
        ``Jobs.run`` on shared locks); deliver what fired (deliveries run beside the
        evaluation, in this loop's TaskGroup)."""
        async with httpx.AsyncClient() as client, asyncio.TaskGroup() as tg:

            async def tick() -> None:
                started = self.clock.now()
                if started < self._next_due:
                    return
                await self._evaluate_and_deliver(client, tg)
                took = self.clock.now() - started
                self._next_due = started + max(EVALUATE_EVERY_S, took / EVALUATION_SHARE)

            run = schedule or Jobs().run
            await run("alerts", tick, EVALUATE_EVERY_S, taken_over=self.take_over)

    async def _evaluate_and_deliver(self, client: httpx.AsyncClient, tg: asyncio.TaskGroup) -> None:
        try:
            fired, resolved = await self.evaluate_once()
            hooks = await self.webhooks() if fired or resolved else []
        except CloudError as exc:
            log.warning("alerts.evaluation_failed error=%s", exc.message)
            return
        except Exception as exc:
            log.warning("alerts.evaluation_failed error=%s", exc)
            return
        for event in fired:
            for hook in hooks:
                tg.create_task(
                    self._deliver(client, hook, event, "firing"),
                    name=f"alert-{event.id}-{hook.name}",
                )
        for rule, subject in resolved:
            body = {"rule": rule, "subject": subject, "resolved_at": self.wall()}
            for hook in hooks:
                tg.create_task(
                    alert_webhooks.deliver(client, hook, {"state": "resolved", "alert": body}),
                    name=f"alert-resolved-{hook.name}",
                )

    async def _deliver(
        self, client: httpx.AsyncClient, hook: AlertWebhook, event: AlertEvent, state: str
    ) -> None:
        outcome = await alert_webhooks.deliver(
            client,
            hook,
            {"state": state, "alert": event.to_json()},
            clock=self.clock,
            wall=self.wall,
        )
        await asyncio.to_thread(self.store.record_deliveries, event.id, {hook.name: outcome})
