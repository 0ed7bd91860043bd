"""The collector settings of a routing process (``hedgerow.broker.collector``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from hedgerow.broker import collector


@pytest.fixture(autouse=True)
def kept_threshold() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_the_young_threshold_is_raised_and_the_others_kept() -> None:
    gc.set_threshold(700, 10, 10)
    collector.tune_for_routing()
    assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, 10, 10)


@pytest.mark.parametrize("young", [0, collector.YOUNG_THRESHOLD * 2])
def test_a_threshold_already_higher_or_collection_turned_off_is_left_alone(young: int) -> None:
    gc.set_threshold(young, 5, 5)
    collector.tune_for_routing()
    assert gc.get_threshold() == (young, 5, 5)
