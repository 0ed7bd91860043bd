"""Logs from cores: storing the batches the ingest hands over, and reading them back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from hedgerow.cloud.domain import LogEntry
from hedgerow.cloud.errors import CloudError, InvalidInput
from hedgerow.cloud.services.telemetry import MessagesWritten
from hedgerow.cloud.storage.logs import LogValues
from hedgerow.cloud.storage.repository import Repository
from hedgerow.contract.errors import ContractError
from hedgerow.contract.logs import LogBatch, level_number

log = logging.getLogger(__name__)

#: What the ingest hands over per MQTT message: ``(group, payload, core, received_at)``
#: (the group is "" when the broker could not tell: it is then looked up).
BatchRow = tuple[str, bytes, str, float]


class LogService:
    def __init__(self, store: Repository, written: MessagesWritten | None = None) -> None:
        self.store = store
        #: wakes live log views when this process stored records
        self.written = written or MessagesWritten()
        self.stored = 0  # records
        self.refused = 0  # batches that did not parse
        self.dropped_at_cores = 0  # records the cores' rate caps dropped, as reported
        self._groups: dict[str, str] = {}

    def store_batches(self, rows: Sequence[BatchRow]) -> None:
        """Parse and store (called by the log ingest worker in a thread). A batch that does
        not parse is counted and logged, never retried: it would never parse."""
        values: list[LogValues] = []
        for group, payload, core, _ in rows:
            try:
                batch = LogBatch.from_json(payload)
            except ContractError as exc:
                self.refused += 1
                log.warning("cloud.logs.refused core=%s error=%s", core, exc)
                continue
            group = group or self._group_of(core)
            self.dropped_at_cores += batch.dropped
            values.extend(
                (group, core, r.source, r.level, r.ts, r.logger, r.message) for r in batch.records
            )
        self.store.insert_logs(values)
        self.stored += len(values)

    def _group_of(self, core: str) -> str:
        group = self._groups.get(core)
        if group is None:
            try:
                group = self.store.get_core(core).group
            except CloudError:
                group = ""
            self._groups[core] = group
        return group

    def delete_before(self, ts: float) -> int:
        return self.store.delete_logs_before(ts)

    async def query(
        self,
        *,
        group: str | None,
        core: str | None = None,
        function: str | None = None,
        level: str | None = None,
        since: float | None = None,
        after_id: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[LogEntry]:
        try:
            min_level = level_number(level) if level else 0
        except ValueError as exc:
            raise InvalidInput(str(exc), field="level") from exc
        return await asyncio.to_thread(
            self.store.query_logs,
            group=group,
            core=core,
            function=function,
            min_level=min_level,
            since=since,
            after_id=after_id,
            limit=limit,
            newest_first=newest_first,
        )

    async def newest_id(self) -> int:
        return await asyncio.to_thread(self.store.newest_log_id)
