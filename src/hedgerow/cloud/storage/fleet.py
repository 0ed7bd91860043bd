"""The same functions and subscriptions on many groups, all or nothing."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa

from hedgerow.cloud import domain
from hedgerow.cloud.domain import (
    FunctionSettings,
)
from hedgerow.cloud.storage.base import (
    now,
)
from hedgerow.cloud.storage.functions import FunctionStore
from hedgerow.cloud.storage.models import (
    FunctionVersionRow,
    SubscriptionRow,
)
from hedgerow.cloud.storage.subscriptions import SubscriptionStore

log = logging.getLogger(__name__)


class FleetStore(FunctionStore, SubscriptionStore):
    def apply_to_groups(
        self,
        groups: Sequence[str],
        functions: Sequence[tuple[str, FunctionSettings, str]],
        subscriptions: Sequence[tuple[str, str, str]],
    ) -> None:
        """Make each group's functions and subscriptions exactly these, all or nothing."""
        parsed = [
            (
                domain.parse_endpoint_ref(src, "source"),
                domain.validate_topic_filter_text(topic),
                domain.parse_endpoint_ref(dst, "target"),
            )
            for src, topic, dst in subscriptions
        ]
        names = {name for name, _, _ in functions}
        with self._tx() as s:
            for group in groups:
                group_row = self._group(s, group)
                for src, _, dst in parsed:
                    self._check_ref(s, group_row, src, names)
                    self._check_ref(s, group_row, dst, names)
                s.execute(
                    sa.delete(SubscriptionRow).where(SubscriptionRow.group_id == group_row.id)
                )
                current = {f.name: f for f in self._functions(s, group_row)}
                for name in set(current) - names:
                    function_row = self._function(s, group_row, name)
                    s.execute(
                        sa.delete(FunctionVersionRow).where(
                            FunctionVersionRow.function_id == function_row.id
                        )
                    )
                    s.delete(function_row)
                s.flush()
                for name, settings, sha in functions:
                    old = current.get(name)
                    if old is not None and old.settings == settings and old.artifact_sha256 == sha:
                        continue
                    self._put_function(s, group_row, name, settings, sha, create=old is None)
                for src_text, topic, dst_text in dict.fromkeys(
                    (str(a), b, str(c)) for a, b, c in parsed
                ):
                    s.add(
                        SubscriptionRow(
                            group_id=group_row.id,
                            source=src_text,
                            topic=topic,
                            target=dst_text,
                            created_at=now(),
                        )
                    )
