"""The anytime-valid judge: the martingale arithmetic against values computed other ways (request by request,
the closed-form Beta-Binomial mixture), monotonicity, edge cases, the budget split, one check's outcomes,
and the false-alarm rate under continuous monitoring (seeded simulation)."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollguard.steps.judgment import binomial
from rollguard.steps.judgment import mixture_martingale as martingale
from rollguard.steps.judgment.anytime import (
    OPEN_ENDED,
    Budget,
    Restart,
    RestartMixture,
    comparison_can_decide,
    rate_above_limit,
    rate_above_stable,
    split_budget,
)
from rollguard.steps.judgment.anytime_check import judge_check_anytime
from rollguard.steps.judgment.check import CANARY_ERROR_RATE, CANARY_P99, CANARY_VS_STABLE, CheckInputs, Counts, Limits
from rollguard.steps.judgment.check import PointValue as Point
from rollguard.steps.judgment.mixture_martingale import DEFAULT_MIXTURE, Mixture
from rollguard.steps.judgment.outcomes import MetricOutcome, Phase, Policy, Verdict
from rollguard.steps.judgment.run_decision import RunJudge, RunLimits

LIMITS = Limits(max_error_rate=0.01, max_p99_latency_ms=500.0, max_error_rate_increase=0.01)
BUDGET = split_budget(0.99, 0.01, 0.01, compare_with_stable=True, duration_s=120.0)


# --- the martingale arithmetic ---------------------------------------------------------------------------

def test_one_alternative_is_the_plain_likelihood_ratio() -> None:
    only_double = Mixture((2.0,), (1.0,))
    expected = 3 * math.log(2.0) + 97 * (math.log(0.98) - math.log(0.99))
    assert martingale.log_evidence_above(3, 100, 0.01, only_double) == pytest.approx(expected, rel=1e-12)
    halved = 3 * math.log(0.5) + 97 * (math.log(0.995) - math.log(0.99))
    assert martingale.log_evidence_below(3, 100, 0.01, only_double) == pytest.approx(halved, rel=1e-12)


@given(st.lists(st.booleans(), max_size=300), st.sampled_from([0.001, 0.01, 0.05, 0.3]))
@settings(max_examples=60, deadline=None)
def test_count_formula_equals_the_request_by_request_product(outcomes: list[bool], limit: float) -> None:
    """The martingale is a product of one likelihood-ratio factor per request, mixed over the alternatives:
    its value depends on the running counts only. Computed request by request it must agree."""
    log_products = [math.log(weight) for weight in DEFAULT_MIXTURE.weights]
    thetas = [min(1.0, ratio * limit) for ratio in DEFAULT_MIXTURE.ratios]
    for bad in outcomes:
        for index, theta in enumerate(thetas):
            factor = theta / limit if bad else (1.0 - theta) / (1.0 - limit)
            log_products[index] += math.log(factor) if factor > 0 else -math.inf
    finite = [value for value in log_products if value > -math.inf]
    expected = math.log(sum(math.exp(value) for value in finite)) if finite else -math.inf
    got = martingale.log_evidence_above(sum(outcomes), len(outcomes), limit)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)


def _truncated_beta_mixture(bad: int, total: int, limit: float, a: float, b: float) -> float:
    """log of the closed-form Beta-Binomial mixture over rates above `limit` (Beta(a, b) truncated to
    (limit, 1]): B(a + x, b + n - x) (1 - I_limit(a + x, b + n - x)) / (B(a, b) (1 - I_limit(a, b)))
    / (limit^x (1 - limit)^(n - x))."""
    def log_beta(p: float, q: float) -> float:
        return math.lgamma(p) + math.lgamma(q) - math.lgamma(p + q)

    good = total - bad
    tail = binomial.regularized_incomplete_beta(limit, a + bad, b + good)
    posterior = log_beta(a + bad, b + good) + math.log1p(-tail)
    prior = log_beta(a, b) + math.log1p(-binomial.regularized_incomplete_beta(limit, a, b))
    return posterior - prior - bad * math.log(limit) - good * math.log1p(-limit)


@pytest.mark.parametrize(("bad", "total"), [(0, 0), (0, 200), (3, 3), (5, 100), (12, 300), (40, 1000)])
def test_mixture_arithmetic_matches_the_closed_form_beta_binomial_mixture(bad: int, total: int) -> None:
    """A fine discrete mixture whose weights are a truncated Beta(1, 20) prior's mass per cell must reproduce
    the closed-form Beta-Binomial mixture (computed through the incomplete beta function instead)."""
    limit, a, b, cells = 0.01, 1.0, 20.0, 4000
    edges = [limit + (1.0 - limit) * (index / cells) ** 3 for index in range(cells + 1)]  # dense near the limit
    mass_above = 1.0 - binomial.regularized_incomplete_beta(limit, a, b)
    ratios, weights = [], []
    for low, high in itertools.pairwise(edges):
        mass = (binomial.regularized_incomplete_beta(high, a, b) - binomial.regularized_incomplete_beta(low, a, b))
        if mass > 0:
            ratios.append((low + high) / 2.0 / limit)
            weights.append(mass / mass_above)
    total_weight = sum(weights)
    prior = Mixture(tuple(ratios), tuple(weight / total_weight * (1 - 1e-12) for weight in weights))
    expected = _truncated_beta_mixture(bad, total, limit, a, b)
    assert martingale.log_evidence_above(bad, total, limit, prior) == pytest.approx(expected, abs=2e-3)


@given(st.integers(0, 400), st.integers(0, 400), st.floats(0.001, 0.5))
@settings(max_examples=150, deadline=None)
def test_monotone_in_the_counts_and_in_the_limit(bad: int, total: int, limit: float) -> None:
    """More bad requests is more evidence; a higher limit is harder to reject (so bounds come by bisection)."""
    bad, total = min(bad, total), max(bad, total)
    evidence = martingale.log_evidence_above(bad, total, limit)
    if bad < total:
        assert martingale.log_evidence_above(bad + 1, total, limit) >= evidence
        assert martingale.log_evidence_below(bad + 1, total, limit) <= martingale.log_evidence_below(bad, total, limit)
    assert martingale.log_evidence_above(bad, total, limit * 1.1) <= evidence + 1e-12
    below = martingale.log_evidence_below(bad, total, limit)
    assert martingale.log_evidence_below(bad, total, limit * 1.1) >= below - 1e-12
    lower = martingale.lower_confidence_bound(bad, total, 0.01)
    upper = martingale.upper_confidence_bound(bad, total, 0.01)
    estimate = bad / total if total else 0.0
    assert 0.0 <= lower <= (estimate if total else 1.0) and (estimate if total else 0.0) <= upper <= 1.0
    # The bound and the test agree: the rate is proven above `limit` exactly when the bound exceeds it.
    significant = rate_above_limit(bad, total, limit, 0.01).significant
    assert significant == (lower > limit) or abs(lower - limit) < 1e-9


def test_edge_cases() -> None:
    # No requests: the martingale is at its start (the weights sum to 1): no evidence either way.
    assert martingale.log_evidence_above(0, 0, 0.01) == pytest.approx(0.0, abs=1e-12)
    assert not rate_above_limit(0, 0, 0.01, 0.005).significant
    # A limit of 0 %: one error is impossible under the null, so it is proof; no errors never are.
    assert martingale.log_evidence_above(1, 5, 0.0) == math.inf
    assert martingale.log_evidence_above(0, 5, 0.0) == 0.0
    # A limit of 100 % can never be exceeded.
    assert martingale.log_evidence_above(50, 50, 1.0) == 0.0
    # All errors, and all errors against a high limit (alternatives capped at 100 %).
    assert rate_above_limit(3, 3, 0.01, 0.005).significant
    assert martingale.log_evidence_above(10, 10, 0.5) > 0
    assert martingale.log_evidence_above(9, 10, 0.5) > -math.inf
    with pytest.raises(ValueError, match="bad <= total"):
        martingale.log_evidence_above(3, 2, 0.01)
    with pytest.raises(ValueError, match="sum to"):
        Mixture((2.0, 3.0), (0.6, 0.6))


def test_a_blatant_canary_is_proven_as_fast_as_by_the_fixed_look_test() -> None:
    """100 % errors against 1 %: the anytime test needs no more requests than Bonferroni's 3 (2m at 1s)."""
    needed = next(n for n in range(1, 20) if rate_above_limit(n, n, 0.01, BUDGET.error_rate).significant)
    assert needed <= 3
    # ... and 1 error in 3 requests is no proof of anything.
    assert not rate_above_limit(1, 3, 0.01, BUDGET.error_rate).significant


# --- restarts (long analyses) ------------------------------------------------------------------------------

def test_restart_weights_add_up_to_one_and_the_mixture_is_their_weighted_sum() -> None:
    assert sum(Restart(k, 0.0, 0, 0, 0).weight for k in range(100_000)) == pytest.approx(1.0, abs=1e-5)
    mixture = RestartMixture(every_s=60.0)
    # Totals at the checks: (elapsed, requests, errors); restarts at the first check of each minute.
    for elapsed, requests, errors in [(0, 0, 0), (30, 300, 1), (61, 610, 3), (125, 1250, 6), (130, 1300, 20)]:
        mixture.observe(float(elapsed), requests, errors, 0)
    restarts = [(r.index, r.at_s, r.requests, r.errors) for r in mixture.restarts]
    assert restarts == [(1, 61.0, 610, 3), (2, 125.0, 1250, 6)]
    expected = (0.5 * math.exp(martingale.log_evidence_above(20, 1300, 0.01))
                + 0.5 / 2 * math.exp(martingale.log_evidence_above(17, 690, 0.01))
                + 0.5 / 6 * math.exp(martingale.log_evidence_above(14, 50, 0.01)))
    log_evidence, strongest = mixture.log_evidence(20, 1300, 0.01, errors=True)
    assert log_evidence == pytest.approx(math.log(expected), rel=1e-12)
    assert strongest is not None and strongest.index == 2  # 14 of the last 50 requests failed
    # Dropping old restarts only removes terms: never more evidence.
    short = RestartMixture(every_s=60.0, keep=1)
    for elapsed, requests, errors in [(0, 0, 0), (61, 610, 3), (125, 1250, 6)]:
        short.observe(float(elapsed), requests, errors, 0)
    assert [r.index for r in short.restarts] == [2]
    assert short.log_evidence(20, 1300, 0.01, errors=True)[0] < log_evidence


def test_restarts_false_alarm_rate_at_the_null_boundary() -> None:
    """Exactly at the limit for 30 restart periods of 50 requests, a look every 25 requests: the mixture over
    restarts fails at most alpha of runs (200 seeded runs at alpha = 0.1, three standard deviations)."""
    limit, alpha, runs, periods, per_period, step = 0.01, 0.1, 200, 30, 50, 25
    rng = random.Random(11)
    fails = 0
    for _ in range(runs):
        mixture = RestartMixture(every_s=1.0)
        requests = errors = 0
        mixture.observe(0.0, 0, 0, 0)
        for look in range(1, periods * per_period // step + 1):
            requests += step
            errors += sum(rng.random() < limit for _ in range(step))
            mixture.observe(look * step / per_period, requests, errors, 0)
            if mixture.log_evidence(errors, requests, limit, errors=True)[0] >= -math.log(alpha):
                fails += 1
                break
    assert fails / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def test_long_analyses_restart_and_short_ones_do_not() -> None:
    assert split_budget(0.99, 0.01, 0.01, True, duration_s=120.0, restart_every_s=60.0).restart_every_s is None
    assert split_budget(0.99, 0.01, 0.01, True, duration_s=OPEN_ENDED, restart_every_s=60.0).restart_every_s == 60.0
    assert split_budget(0.99, 0.01, 0.01, True, duration_s=3600.0, restart_every_s=60.0).restart_every_s == 60.0


# --- the budget ------------------------------------------------------------------------------------------

def test_the_comparison_gets_budget_only_when_it_can_decide() -> None:
    assert not comparison_can_decide(0.01, 0.01)  # the defaults: implied by the absolute limit
    assert comparison_can_decide(0.05, 0.005)
    default = split_budget(0.99, 0.01, 0.01, compare_with_stable=True, duration_s=120.0)
    assert (default.error_rate, default.comparison, default.latency) == pytest.approx((0.005, 0.0, 0.005))
    strict = split_budget(0.99, 0.05, 0.005, compare_with_stable=True, duration_s=120.0)
    assert (strict.error_rate, strict.comparison, strict.latency) == pytest.approx((0.01 / 3,) * 3)
    guard = split_budget(0.99, 0.05, 0.005, compare_with_stable=False, duration_s=OPEN_ENDED)
    assert guard.comparison == 0.0 and guard.open_ended
    with pytest.raises(ValueError, match="add up"):
        Budget(0.99, 0.01, 0.01, 0.0, 120.0)


# --- one check ---------------------------------------------------------------------------------------------

def inputs(canary: Counts, stable: Counts | None = None, p99: float = 100.0) -> CheckInputs:
    stable = stable or Counts(Phase.OK, 9000, 45, 10, slow_known=True, slow_bound_ms=500.0)
    return CheckInputs(canary_counts=canary, stable_counts=stable, canary_requests_since_start=canary.requests,
                       canary_error_rate=Point(Phase.OK, 0.0), stable_error_rate=Point(Phase.OK, 0.005),
                       canary_p99_ms=Point(Phase.OK, p99), canary_since_start=canary, stable_since_start=stable)


def counts(requests: int, errors: int, slow: int = 0, bound: float = 500.0) -> Counts:
    return Counts(Phase.OK, requests, errors, slow, slow_known=math.isfinite(bound), slow_bound_ms=bound)


def outcome_of(check_inputs: CheckInputs, name: str, budget: Budget = BUDGET, elapsed: float = 10.0,
               limits: Limits = LIMITS) -> MetricOutcome:
    outcome = judge_check_anytime(3, elapsed, check_inputs, limits, budget)
    return next(metric for metric in outcome.metrics if metric.metric == name)


def test_a_blatant_canary_fails_and_the_detail_shows_the_evidence() -> None:
    failed = outcome_of(inputs(counts(3, 3)), CANARY_ERROR_RATE)
    assert failed.phase is Phase.FAILED and failed.samples == 3
    assert "3 of 3 canary requests failed since the start" in failed.detail
    assert "of the 200 that proves it" in failed.detail


def test_the_comparison_is_skipped_under_the_defaults_and_tested_when_it_can_decide() -> None:
    skipped = outcome_of(inputs(counts(1000, 30)), CANARY_VS_STABLE)
    assert skipped.phase is Phase.SKIPPED and "implied by the absolute limit" in skipped.detail
    limits = Limits(max_error_rate=0.05, max_p99_latency_ms=500.0, max_error_rate_increase=0.005)
    budget = split_budget(0.99, 0.05, 0.005, compare_with_stable=True, duration_s=120.0)
    tested = outcome_of(inputs(counts(2000, 60)), CANARY_VS_STABLE, budget, limits=limits)
    assert tested.phase is Phase.FAILED, tested.detail  # 3 % against stable's 0.5 % + 0.5 point, 2000 requests
    assert outcome_of(inputs(counts(2000, 60)), CANARY_ERROR_RATE, budget, limits=limits).phase is Phase.OK


def test_latency_between_buckets_is_judged_against_the_boundary_above_and_says_so() -> None:
    limits = Limits(max_error_rate=0.01, max_p99_latency_ms=300.0, max_error_rate_increase=0.01)
    # A canary whose true p99 is 250 ms: few requests above 500 ms, so no fail (the old point rule failed it).
    healthy = outcome_of(inputs(counts(2000, 0, slow=2), p99=362.0), CANARY_P99, limits=limits)
    assert healthy.phase is Phase.OK
    assert "bounded: 300 ms lies between bucket boundaries" in healthy.detail
    assert "slower than 500 ms" in healthy.detail
    slow = outcome_of(inputs(counts(2000, 0, slow=200), p99=900.0), CANARY_P99, limits=limits)
    assert slow.phase is Phase.FAILED
    exact = outcome_of(inputs(counts(2000, 0, slow=200), p99=900.0), CANARY_P99)
    assert "500 ms is a bucket boundary: exact" in exact.detail
    beyond = outcome_of(inputs(counts(2000, 0, slow=0, bound=math.inf)), CANARY_P99)
    assert beyond.phase is Phase.SKIPPED and "cannot be seen" in beyond.detail


RUN = RunLimits(duration_s=120.0, min_requests=10, failure_limit=3, consecutive=False, max_consecutive_errors=2,
                on_no_data=Policy.CONTINUE, on_error=Policy.INCONCLUSIVE)


@pytest.mark.parametrize(("errors", "requests"), [(6, 100), (11, 300), (23, 1000)])
def test_end_of_bake_over_the_limit_at_the_last_check_alone_is_inconclusive(errors: int, requests: int) -> None:
    """Not proven over the whole analysis, but over the limit by the exact test at the plain 1 - confidence
    taken as the only look: never a pass (the rule's meaning, unchanged)."""
    outcome = judge_check_anytime(120, 120.0, inputs(counts(requests, errors)), LIMITS, BUDGET)
    error_rate = next(metric for metric in outcome.metrics if metric.metric == CANARY_ERROR_RATE)
    assert error_rate.phase is Phase.SUSPECT and error_rate.over_limit_at_this_check
    decision = RunJudge(RUN).observe(outcome)
    assert decision.verdict is Verdict.INCONCLUSIVE and decision.failed_check is error_rate
    # Before the bake time is over the fixed-look test is not even run.
    early = judge_check_anytime(60, 60.0, inputs(counts(requests, errors)), LIMITS, BUDGET)
    assert not any(metric.over_limit_at_this_check for metric in early.metrics)


def test_a_handful_of_errors_at_the_end_passes() -> None:
    outcome = judge_check_anytime(120, 120.0, inputs(counts(100, 2)), LIMITS, BUDGET)
    assert RunJudge(RUN).observe(outcome).verdict is Verdict.PASS


def test_an_open_ended_analysis_never_reaches_the_end_of_bake() -> None:
    budget = split_budget(0.99, 0.01, 0.01, compare_with_stable=False, duration_s=OPEN_ENDED)
    judge = RunJudge(RunLimits(**{**RUN.__dict__, "duration_s": OPEN_ENDED}))
    outcome = judge_check_anytime(10**6, 10.0**6, inputs(counts(10**6, 5000)), LIMITS, budget)
    assert judge.observe(outcome).verdict is None


# --- the guarantee, simulated ------------------------------------------------------------------------------

def _critical_bad(total: int, limit: float, alpha: float, start: int) -> int:
    """The fewest bad requests among `total` that the anytime test calls proof (monotone in the counts)."""
    bad = start
    while bad <= total and not martingale.log_evidence_above(bad, total, limit) >= -math.log(alpha):
        bad += 1
    return bad


def test_false_alarm_rate_under_continuous_monitoring_at_the_null_boundary() -> None:
    """A canary exactly at the limit (the worst case of H0), looked at after EVERY request for 3,000 requests:
    the anytime test fails at most alpha of runs. The same looks with a fixed-sample test at level alpha
    (no correction) fail far more often: the simulation can see a broken guarantee.

    1,000 seeded runs at alpha = 0.1: the bound allows three standard deviations of Monte Carlo noise
    (0.1 + 3 * sqrt(0.1 * 0.9 / 1000) = 0.128); the naive test's rate is far above it.
    """
    limit, alpha, runs, length = 0.01, 0.1, 1000, 3000
    critical, start = [], 0
    for total in range(length + 1):
        start = _critical_bad(total, limit, alpha, max(0, start - 1))
        critical.append(start)
    naive = [0] * (length + 1)
    bad = 0
    for total in range(1, length + 1):
        bad = max(0, bad - 1)
        while bad <= total and binomial.upper_tail(bad, total, limit) > alpha:
            bad += 1
        naive[total] = bad
    rng = random.Random(18)
    anytime_fails = naive_fails = 0
    for _ in range(runs):
        bad = 0
        anytime_failed = naive_failed = False
        for total in range(1, length + 1):
            bad += rng.random() < limit
            anytime_failed = anytime_failed or bad >= critical[total]
            naive_failed = naive_failed or bad >= naive[total]
            if anytime_failed and naive_failed:
                break
        anytime_fails += anytime_failed
        naive_fails += naive_failed
    tolerance = alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)
    assert anytime_fails / runs <= tolerance
    assert naive_fails / runs > 0.3


def test_comparison_false_alarm_rate_at_the_null_boundary() -> None:
    """Canary exactly at stable's rate + the increase, 25 looks of growing counts: fails at most alpha of runs
    (120 seeded runs at alpha = 0.2; three standard deviations of noise allowed)."""
    alpha, runs, looks, increase = 0.2, 120, 25, 0.01
    stable_rate, canary_rate = 0.02, 0.03
    rng = random.Random(7)
    fails = 0
    for _ in range(runs):
        canary_bad = canary_total = stable_bad = stable_total = 0
        for _look in range(looks):
            canary_total += 10
            stable_total += 90
            canary_bad += sum(rng.random() < canary_rate for _ in range(10))
            stable_bad += sum(rng.random() < stable_rate for _ in range(90))
            if rate_above_stable(canary_bad, canary_total, stable_bad, stable_total, increase, alpha).significant:
                fails += 1
                break
    assert fails / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


@pytest.mark.parametrize("looks", [21, 121])
def test_never_needs_more_bad_requests_than_the_bonferroni_judge(looks: int) -> None:
    """At no request count up to 300 does the anytime test need more bad requests than Bonferroni's exact test
    at (1 - c) / (3 K) for a bake of K >= 21 checks (the sandbox's 20 s at 1 s, and 2 minutes at 1 s)."""
    bonferroni_alpha = 0.01 / (3 * looks)
    for total in range(1, 301):
        exact = next((bad for bad in range(total + 1) if bad and binomial.upper_tail(bad, total, 0.01)
                      <= bonferroni_alpha), None)
        if exact is not None:
            assert rate_above_limit(exact, total, 0.01, BUDGET.error_rate).significant, (exact, total)
