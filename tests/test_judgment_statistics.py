"""The exact binomial machinery and the statistical rule: known values, small-n safety, fast failure,
and the stated false-alarm rate under repeated looks (property tests with hypothesis)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollguard.steps.judgment import binomial
from rollguard.steps.judgment.statistical import LookPlan, rate_above_limit, rate_above_stable


def direct_upper_tail(successes: int, trials: int, rate: float) -> float:
    return sum(math.comb(trials, k) * rate**k * (1 - rate) ** (trials - k) for k in range(successes, trials + 1))


@pytest.mark.parametrize(
    ("successes", "trials", "rate"),
    [(1, 3, 0.01), (3, 10, 0.2), (50, 1000, 0.03), (7, 400, 0.005), (0, 5, 0.3), (5, 5, 0.9), (12, 40, 0.5)],
)
def test_upper_tail_matches_direct_sum(successes: int, trials: int, rate: float) -> None:
    assert binomial.upper_tail(successes, trials, rate) == pytest.approx(direct_upper_tail(successes, trials, rate),
                                                                         rel=1e-9, abs=1e-15)


def test_known_values() -> None:
    assert binomial.upper_tail(1, 3, 0.01) == pytest.approx(1 - 0.99**3)  # 0.029701
    # Clopper-Pearson with zero or all successes has a closed form.
    assert binomial.upper_bound(0, 10, 0.05) == pytest.approx(1 - 0.05 ** (1 / 10), rel=1e-9)
    assert binomial.lower_bound(10, 10, 0.05) == pytest.approx(0.05 ** (1 / 10), rel=1e-9)
    assert binomial.regularized_incomplete_beta(0.5, 2.0, 2.0) == pytest.approx(0.5)
    assert binomial.regularized_incomplete_beta(0.3, 1.0, 1.0) == pytest.approx(0.3)


@given(st.integers(0, 200), st.integers(1, 200), st.floats(0.001, 0.2))
@settings(max_examples=150, deadline=None)
def test_bounds_bracket_the_estimate(successes: int, trials: int, alpha: float) -> None:
    successes = min(successes, trials)
    lower = binomial.lower_bound(successes, trials, alpha)
    upper = binomial.upper_bound(successes, trials, alpha)
    assert 0.0 <= lower <= successes / trials <= upper <= 1.0
    if 0 < successes:
        assert binomial.upper_tail(successes, trials, lower) == pytest.approx(alpha, rel=1e-6)


def test_small_counts_do_not_fail_a_healthy_canary() -> None:
    """1 error in 3 requests (a healthy canary's bad luck) is no evidence against a 1 % limit."""
    test = rate_above_limit(1, 3, 0.01, alpha=0.01)
    assert not test.significant
    assert test.p_value == pytest.approx(0.029701)
    assert test.estimate_over_limit  # the naive 33 % would have failed it


@pytest.mark.parametrize("confidence", [0.95, 0.99, 0.999])
def test_blatant_canary_fails_after_a_handful_of_requests(confidence: float) -> None:
    """100 % errors fails within 2-5 requests even with the repeated-looks correction of a 2m/1s plan."""
    plan = LookPlan(confidence, planned_looks=121, tests_per_look=3)
    needed = next(n for n in range(1, 50) if rate_above_limit(n, n, 0.01, plan.alpha_per_test).significant)
    assert 2 <= needed <= 5


def test_look_plan_spends_alpha_over_looks_and_tests() -> None:
    plan = LookPlan(0.99, planned_looks=25, tests_per_look=3)
    assert plan.alpha_per_test == pytest.approx(0.01 / 75)
    with pytest.raises(ValueError, match="confidence"):
        LookPlan(1.0, 10, 1)


def test_comparison_needs_evidence_on_both_sides() -> None:
    # The same canary counts: fail against a clean stable, not against an equally noisy stable.
    clean = rate_above_stable(30, 1000, 0, 5000, increase=0.005, alpha=0.001)
    noisy = rate_above_stable(30, 1000, 150, 5000, increase=0.005, alpha=0.001)
    assert clean.significant
    assert not noisy.significant
    with pytest.raises(ValueError, match="stable"):
        rate_above_stable(1, 10, 0, 0, 0.0, 0.01)


def _binomial(rng: random.Random, trials: int, rate: float) -> int:
    return sum(rng.random() < rate for _ in range(trials))


def _simulated_false_fails(
    rng: random.Random, runs: int, looks: int, canary_rate: float, stable_rate: float, per_look: tuple[int, int],
    confidence: float,
) -> int:
    """Runs of a sequential analysis (cumulative counts, a test at every look) that ended in fail."""
    plan = LookPlan(confidence, planned_looks=looks, tests_per_look=1)
    fails = 0
    for _ in range(runs):
        canary_bad = canary_total = stable_bad = stable_total = 0
        for _look in range(looks):
            canary_total += per_look[0]
            stable_total += per_look[1]
            canary_bad += _binomial(rng, per_look[0], canary_rate)
            stable_bad += _binomial(rng, per_look[1], stable_rate)
            test = rate_above_stable(canary_bad, canary_total, stable_bad, stable_total, 0.0, plan.alpha_per_test)
            if test.significant:
                fails += 1
                break
    return fails


@given(
    stable_rate=st.floats(0.0, 0.3),
    canary_share=st.floats(0.0, 1.0),
    canary_per_look=st.integers(1, 30),
    stable_per_look=st.integers(1, 60),
    looks=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=20, deadline=None)
def test_false_alarm_rate_is_at_most_stated(
    stable_rate: float, canary_share: float, canary_per_look: int, stable_per_look: int, looks: int, seed: int
) -> None:
    """A canary whose true error rate is at or below stable's fails at most 1 - confidence of runs.

    200 seeded runs per example; the bound allows three standard deviations of Monte Carlo noise.
    """
    confidence, runs = 0.9, 200
    rng = random.Random(seed)
    fails = _simulated_false_fails(rng, runs, looks, stable_rate * canary_share, stable_rate,
                                   (canary_per_look, stable_per_look), confidence)
    alpha = 1 - confidence
    assert fails / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


@given(rate=st.floats(0.0, 0.01), per_look=st.integers(1, 80), looks=st.integers(1, 15), seed=st.integers(0, 2**31))
@settings(max_examples=25, deadline=None)
def test_absolute_limit_false_alarm_rate_is_at_most_stated(rate: float, per_look: int, looks: int, seed: int) -> None:
    """A canary at or under the absolute limit fails at most 1 - confidence of runs over all looks."""
    confidence, runs, limit = 0.9, 200, 0.01
    plan = LookPlan(confidence, planned_looks=looks, tests_per_look=1)
    rng = random.Random(seed)
    fails = 0
    for _ in range(runs):
        bad = total = 0
        for _look in range(looks):
            total += per_look
            bad += _binomial(rng, per_look, rate)
            if rate_above_limit(bad, total, limit, plan.alpha_per_test).significant:
                fails += 1
                break
    alpha = 1 - confidence
    assert fails / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)
