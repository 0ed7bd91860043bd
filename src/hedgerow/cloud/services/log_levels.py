"""Log levels set from the cloud, per core and per function, without a deployment.

Kept with the group (``groups.log_levels``) and published to the group's core, retained,
on ``$hedgerow/cores/{core}/log-levels`` (``hedgerow.contract.logs.LogLevels``): a
connected core applies them at once, one that is offline when it connects, and the core
keeps them across its restarts. ``announce_all`` publishes every group's levels again at
start (the embedded broker keeps no retained messages across a restart) and ``announce``
when a core is created for a group that has some.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from hedgerow.cloud.errors import InvalidInput
from hedgerow.cloud.services.notify import Notifier
from hedgerow.cloud.storage.repository import Repository
from hedgerow.contract.errors import ContractError
from hedgerow.contract.functions import check_function_name
from hedgerow.contract.logs import LEVELS, LogLevels, level_number
from hedgerow.contract.topics import CoreLeaf, core_topic

log = logging.getLogger(__name__)

#: What resets a level to the core's config file (the API also takes null).
DEFAULT = "default"


def _level(value: str | None, field: str) -> str | None:
    """A level name (upper case), or None for "the config file's"."""
    if value is None or value.lower() == DEFAULT:
        return None
    try:
        level_number(value)
    except ValueError as exc:
        raise InvalidInput(f"{exc} (or {DEFAULT!r})", field=field) from None
    return value.upper()


def message_of(levels: Mapping[str, Any]) -> LogLevels:
    core = levels.get("core")
    return LogLevels(
        None if core is None else LEVELS[core],
        {name: LEVELS[level] for name, level in (levels.get("functions") or {}).items()},
    )


class LogLevelService:
    def __init__(self, store: Repository, notifier: Notifier) -> None:
        self.store = store
        self.notifier = notifier

    async def get(self, group: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.store.log_levels, group)

    async def update(
        self,
        group: str,
        *,
        core: str | None = None,
        set_core: bool = False,
        functions: Mapping[str, str | None] | None = None,
    ) -> dict[str, Any]:
        """Merge in the core's level (when ``set_core``) and functions' levels (None or
        ``"default"``: the config file's again), then tell the group's core."""
        checked: dict[str, str | None] = {}
        for name, value in (functions or {}).items():
            try:
                check_function_name(name)
            except ContractError as exc:
                raise InvalidInput(exc.reason, field=f"functions.{name}") from None
            checked[name] = _level(value, f"functions.{name}")
        core_level = _level(core, "core") if set_core else None
        levels = await asyncio.to_thread(
            self.store.update_log_levels, group, core_level, checked, set_core=set_core
        )
        log.info(
            "cloud.log_levels.set group=%s core=%s functions=%s",
            group,
            levels["core"],
            levels["functions"],
        )
        await self.announce(group, levels)
        return levels

    async def announce(self, group: str, levels: Mapping[str, Any] | None = None) -> bool:
        """Publish the group's levels (retained) to its core; False: no core yet."""
        if levels is None:
            levels = await self.get(group)
        core = (await asyncio.to_thread(self.store.get_group, group)).core
        if not core:
            return False
        await self.notifier.publish(
            core_topic(core, CoreLeaf.LOG_LEVELS), message_of(levels).to_json(), retain=True
        )
        return True

    async def announce_all(self) -> int:
        """Every group's levels again (the cloud's start); how many were published."""
        every = await asyncio.to_thread(self.store.all_log_levels)
        count = 0
        for group, levels in every.items():
            try:
                count += await self.announce(group, levels)
            except Exception as exc:  # one group's failure must not stop the others
                log.warning("cloud.log_levels.announce_failed group=%s error=%s", group, exc)
        if count:
            log.info("cloud.log_levels.announced count=%d", count)
        return count
