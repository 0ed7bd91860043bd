"""The same functions and subscriptions on many groups at once (all or nothing)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hedgerow.cloud.domain import FunctionSettings
from hedgerow.cloud.errors import InvalidInput
from hedgerow.cloud.services.deployments import DeploymentService
from hedgerow.cloud.services.functions import ArtifactService, FunctionService
from hedgerow.cloud.services.notify import RoutesChanged
from hedgerow.cloud.services.subscriptions import SubscriptionService
from hedgerow.cloud.storage.fleet import FleetStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetFunction:
    name: str
    settings: FunctionSettings
    artifact_sha256: str


@dataclass(frozen=True)
class FleetSubscription:
    source: str
    topic: str
    target: str


class FleetService:
    def __init__(
        self,
        store: FleetStore,
        artifacts: ArtifactService,
        functions: FunctionService,
        subscriptions: SubscriptionService,
        deployments: DeploymentService,
        routes_changed: RoutesChanged,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.functions = functions
        self.subscriptions = subscriptions
        self.deployments = deployments
        self.routes_changed = routes_changed

    async def template(self, group: str) -> tuple[list[FleetFunction], list[FleetSubscription]]:
        """The functions and subscriptions of ``group``, to copy onto others."""
        functions = [
            FleetFunction(f.name, f.settings, f.artifact_sha256)
            for f in await self.functions.all(group)
        ]
        subscriptions = [
            FleetSubscription(s.source, s.topic, s.target)
            for s in await self.subscriptions.all(group)
        ]
        return functions, subscriptions

    async def apply(
        self,
        groups: Sequence[str],
        functions: Sequence[FleetFunction],
        subscriptions: Sequence[FleetSubscription],
        *,
        deploy: bool,
    ) -> dict[str, Any]:
        groups = list(dict.fromkeys(groups))
        if len({f.name for f in functions}) != len(functions):
            raise InvalidInput("function names must be unique", field="functions")
        for f in functions:
            await self.artifacts.size(f.artifact_sha256)
        await asyncio.to_thread(
            self.store.apply_to_groups,
            groups,
            [(f.name, f.settings, f.artifact_sha256) for f in functions],
            [(s.source, s.topic, s.target) for s in subscriptions],
        )
        await self.routes_changed()
        result: dict[str, Any] = {
            "groups": groups,
            "functions": len(functions),
            "subscriptions": len(subscriptions),
        }
        if deploy:
            result["deployments"] = [(await self.deployments.deploy(g)).to_json() for g in groups]
        log.info("fleet.applied groups=%s functions=%s", len(groups), len(functions))
        return result
