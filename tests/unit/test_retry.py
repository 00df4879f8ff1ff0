"""The backoff policy: pure arithmetic, so properties over the whole input space."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rjobs.worker.retry import RetryPolicy

bases = st.floats(min_value=0, max_value=1e6, allow_nan=False)
factors = st.floats(min_value=1, max_value=100, allow_nan=False)
caps = st.floats(min_value=0, max_value=1e7, allow_nan=False)
attempts = st.integers(min_value=-5, max_value=10_000)
unit = st.floats(min_value=0, max_value=1, exclude_max=True)
policies = st.builds(
    RetryPolicy, base=bases, factor=factors, max_delay=caps, jitter=st.sampled_from(["full", "equal", "none"])
)


@given(policies, attempts, unit)
def test_delay_stays_within_zero_and_the_ceiling(policy: RetryPolicy, attempt: int, r: float) -> None:
    cap = policy.ceiling(attempt)
    assert 0 <= cap <= policy.max_delay and math.isfinite(cap)
    d = policy.delay(attempt, rand=lambda: r)
    assert 0 <= d <= cap + 1e-9


@given(policies, attempts, unit)
def test_jitter_ranges(policy: RetryPolicy, attempt: int, r: float) -> None:
    cap = policy.ceiling(attempt)
    d = policy.delay(attempt, rand=lambda: r)
    if policy.jitter == "none":
        assert d == cap
    elif policy.jitter == "equal":
        assert cap / 2 - 1e-9 <= d <= cap + 1e-9  # never less than half the ceiling
    else:
        assert d == pytest.approx(cap * r)


@given(policies, st.integers(min_value=1, max_value=5000))
def test_ceiling_grows_exponentially_until_capped(policy: RetryPolicy, attempt: int) -> None:
    now, after = policy.ceiling(attempt), policy.ceiling(attempt + 1)
    assert after >= now
    if (
        policy.base > 0
        and policy.max_delay > 0
        and attempt < 20
        and policy.factor**attempt * policy.base < policy.max_delay
    ):
        assert now == pytest.approx(policy.base * policy.factor ** (attempt - 1))


@given(policies, attempts, st.floats(min_value=0, max_value=1e9, allow_nan=False), unit)
def test_retry_after_is_honoured_exactly(policy: RetryPolicy, attempt: int, after: float, r: float) -> None:
    assert policy.delay(attempt, retry_after=after, rand=lambda: r) == after


@given(policies, attempts, st.sampled_from([math.nan, math.inf, -1.0]), unit)
def test_a_nonsense_retry_after_falls_back_to_backoff(
    policy: RetryPolicy, attempt: int, after: float, r: float
) -> None:
    assert policy.delay(attempt, retry_after=after, rand=lambda: r) == policy.delay(attempt, rand=lambda: r)


def test_full_jitter_spreads_over_the_range() -> None:
    policy = RetryPolicy(base=10, factor=2, max_delay=100, jitter="full")
    samples = [policy.delay(3) for _ in range(2000)]
    assert min(samples) < 5 and max(samples) > 35 and all(0 <= s <= 40 for s in samples)


def test_defaults_and_examples() -> None:
    p = RetryPolicy(base=1, factor=2, max_delay=60, jitter="none")
    assert [p.delay(a) for a in (1, 2, 3, 7, 8, 1000)] == [1, 2, 4, 60, 60, 60]
    assert RetryPolicy().jitter == "equal"


@pytest.mark.parametrize(
    "kwargs",
    [{"base": -1}, {"factor": 0.5}, {"max_delay": -2}, {"jitter": "lots"}, {"base": math.inf}, {"factor": True}],
)
def test_bad_settings_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
