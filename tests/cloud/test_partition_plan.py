"""The telemetry partition plan, pure: which day partitions to create and to drop."""

from __future__ import annotations

import datetime as dt

import pytest

from hedgerow.cloud import partition_plan as pp
from hedgerow.cloud.partition_plan import DAY_S, Partition, PartitionPlanError

#: 2026-12-04 15:30 UTC
NOW = dt.datetime(2026, 12, 4, 15, 30, tzinfo=dt.UTC).timestamp()
MIDNIGHT = dt.datetime(2026, 12, 4, tzinfo=dt.UTC).timestamp()


def day(offset: int) -> Partition:
    return pp.partition_for(MIDNIGHT + offset * DAY_S)


def test_an_empty_table_gets_today_and_three_days_ahead_aligned_on_utc_midnight() -> None:
    plan = pp.plan(NOW, [])
    assert [p.name for p in plan.create] == [
        "messages_p20261204",
        "messages_p20261205",
        "messages_p20261206",
        "messages_p20261207",
    ]
    assert plan.create[0].start == MIDNIGHT and plan.create[0].end == MIDNIGHT + DAY_S
    assert plan.drop == ()


def test_existing_partitions_are_not_created_again_and_a_second_run_plans_nothing() -> None:
    first = pp.plan(NOW, [day(0), day(2)])
    assert [p.name for p in first.create] == ["messages_p20261205", "messages_p20261207"]
    again = pp.plan(NOW, [day(0), day(2), *first.create])
    assert again.empty


def test_a_range_overlapping_an_existing_partition_of_another_width_is_left_alone() -> None:
    week = Partition(MIDNIGHT - DAY_S, MIDNIGHT + 6 * DAY_S, "messages_week")
    assert pp.plan(NOW, [week]).create == ()


def test_only_partitions_wholly_older_than_the_cutoff_are_dropped() -> None:
    existing = [day(-9), day(-8), day(-7), day(-6), day(0)]
    cutoff = MIDNIGHT - 7 * DAY_S + 3600  # inside day -7: it straddles, it stays
    plan = pp.plan(NOW, existing, cutoff=cutoff)
    assert [p.name for p in plan.drop] == ["messages_p20261125", "messages_p20261126"]
    on_boundary = pp.plan(NOW, existing, cutoff=MIDNIGHT - 7 * DAY_S)
    assert [p.name for p in on_boundary.drop] == ["messages_p20261125", "messages_p20261126"]


def test_nothing_is_created_that_retention_would_drop() -> None:
    plan = pp.plan(NOW, [], cutoff=MIDNIGHT + 2 * DAY_S)
    assert [p.name for p in plan.create] == ["messages_p20261206", "messages_p20261207"]


def test_hourly_partitions_are_named_with_their_time() -> None:
    plan = pp.plan(NOW, [], width_s=3600, ahead=1)
    assert [p.name for p in plan.create] == [
        "messages_p20261204_150000",
        "messages_p20261204_160000",
    ]


@pytest.mark.parametrize("width", [0, 60, 5 * 3600, DAY_S + 3600])
def test_a_width_that_does_not_tile_days_is_refused(width: int) -> None:
    with pytest.raises(PartitionPlanError, match="divides a day"):
        pp.plan(NOW, [], width_s=width)


def test_negative_ahead_is_refused() -> None:
    with pytest.raises(PartitionPlanError, match="ahead"):
        pp.plan(NOW, [], ahead=-1)


def test_bounds_as_postgresql_prints_them() -> None:
    bound = "FOR VALUES FROM ('1796342400') TO ('1796428800')"
    assert pp.parse_bound("messages_p20261204", bound) == Partition(
        1796342400.0, 1796428800.0, "messages_p20261204"
    )
    assert pp.parse_bound("messages_default", "DEFAULT") is None
    with pytest.raises(PartitionPlanError, match="messages_odd"):
        pp.parse_bound("messages_odd", "FOR VALUES IN ('x')")


def test_timestamps_before_the_epoch_and_on_a_boundary_fall_in_the_right_day() -> None:
    assert pp.partition_for(MIDNIGHT).start == MIDNIGHT
    assert pp.partition_for(MIDNIGHT - 0.001).end == MIDNIGHT
    assert pp.partition_for(-1.0).name == "messages_p19691231"
    assert [p.name for p in pp.covering([MIDNIGHT + 1, MIDNIGHT + 2, MIDNIGHT - 1])] == [
        "messages_p20261203",
        "messages_p20261204",
    ]
