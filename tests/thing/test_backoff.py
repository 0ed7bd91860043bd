from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hedgerow.backoff import Backoff, BackoffPolicy, Jitter


def test_v1_schedule_doubles_to_the_cap_without_jitter() -> None:
    backoff = Backoff(BackoffPolicy.v1())
    assert [backoff.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 32, 32]


def test_full_jitter_draws_between_zero_and_the_ceiling() -> None:
    calls: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        calls.append((low, high))
        return high / 2

    backoff = Backoff(BackoffPolicy(base=0.5, cap=3.0), uniform=uniform)
    delays = [backoff.next_delay() for _ in range(5)]
    assert calls == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (0.0, 3.0)]
    assert delays == [0.25, 0.5, 1.0, 1.5, 1.5]


def test_equal_jitter_keeps_half_the_ceiling() -> None:
    policy = BackoffPolicy(base=2.0, cap=8.0, jitter=Jitter.EQUAL)
    assert policy.delay(1, lambda low, high: low) == 2.0
    assert policy.delay(1, lambda low, high: high) == 4.0


@given(
    base=st.floats(0.001, 10),
    cap_factor=st.floats(1, 100),
    attempt=st.integers(-5, 10_000),
    seed=st.integers(0, 2**32),
)
def test_delays_never_exceed_the_cap_nor_go_negative(
    base: float, cap_factor: float, attempt: int, seed: int
) -> None:
    policy = BackoffPolicy(base=base, cap=base * cap_factor)
    delay = policy.delay(attempt, random.Random(seed).uniform)
    assert 0.0 <= delay <= policy.cap


def test_a_stable_connection_resets_the_schedule_a_short_one_does_not() -> None:
    backoff = Backoff(BackoffPolicy(base=1, cap=32, stable_after=20, jitter=Jitter.NONE))
    for _ in range(4):
        backoff.next_delay()
    backoff.connected(100.0)
    backoff.disconnected(105.0)  # dropped after 5 s: the core is flapping
    assert backoff.next_delay() == 16
    backoff.connected(200.0)
    assert not backoff.check_stable(210.0)
    assert backoff.check_stable(220.0)
    backoff.disconnected(500.0)
    assert backoff.next_delay() == 1


def test_first_delay_spreads_a_power_restore() -> None:
    policy = BackoffPolicy(initial=2.0)
    rng = random.Random(7)
    firsts = [policy.first_delay(rng.uniform) for _ in range(500)]
    assert all(0 <= d <= 2.0 for d in firsts)
    assert len({round(d, 3) for d in firsts}) > 400
    assert BackoffPolicy(initial=2.0, jitter=Jitter.NONE).first_delay(rng.uniform) == 2.0
    assert BackoffPolicy().first_delay(rng.uniform) == 0.0


def test_without_jitter_a_herd_retries_in_lockstep_with_jitter_it_spreads() -> None:
    herd_v1 = {Backoff(BackoffPolicy.v1()).next_delay() for _ in range(500)}
    rng = random.Random(1)
    herd_full = [
        Backoff(BackoffPolicy(base=1, cap=32), uniform=rng.uniform).next_delay() for _ in range(500)
    ]
    assert herd_v1 == {1.0}
    # spread over the window: every tenth of it gets some of the herd
    buckets = {int(d * 10) for d in herd_full}
    assert buckets == set(range(10))


@pytest.mark.parametrize(
    "kwargs",
    [{"base": 0}, {"cap": -1}, {"base": 5, "cap": 1}, {"stable_after": -1}, {"initial": -0.1}],
)
def test_bad_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)  # type: ignore[arg-type]
