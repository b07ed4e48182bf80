"""The statistical rule: exact one-sided tests on proportions of requests, safe under repeated looks.

Guarantee: with `confidence` c, the planned number of looks K and T tests per look, each test runs
at level alpha = (1 - c) / (K * T) (Bonferroni). By the union bound, a canary for which every tested
hypothesis holds (error rate <= limit, error rate <= stable's + increase, slow fraction <= 1 - q) is
failed with probability at most 1 - c over the WHOLE analysis, however the looks are correlated.
Blatant failures still fail fast: 3 errors in 3 requests has p = 1e-6 against a 1 % limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rollguard.steps.judgment import binomial


@dataclass(frozen=True)
class LookPlan:
    """How much false-alarm probability each single test may spend."""

    confidence: float  # e.g. 0.99: at most 1 % false fails over the whole analysis
    planned_looks: int  # checks planned over the bake time: see planned_looks()
    tests_per_look: int  # statistical tests run at each check (judgment.check counts its own)

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {self.confidence}")
        if self.planned_looks < 1 or self.tests_per_look < 1:
            raise ValueError("planned_looks and tests_per_look must be at least 1")

    @property
    def alpha_single(self) -> float:
        """The level of one test taken alone (no share-out): what the end-of-bake check uses."""
        return 1.0 - self.confidence

    @property
    def alpha_per_test(self) -> float:
        """False-alarm probability one test at one look may use."""
        return (1.0 - self.confidence) / (self.planned_looks * self.tests_per_look)


def planned_looks(duration_s: float, interval_s: float) -> int:
    """K, the checks an analysis plans: one at the start and one per interval until the bake time is over,
    ceil(duration / interval) + 1. The loop never looks more often than this (a late check skips slots)."""
    if duration_s <= 0 or interval_s <= 0:
        raise ValueError(f"duration and interval must be positive, got {duration_s} and {interval_s}")
    return math.ceil(duration_s / interval_s - 1e-9) + 1


@dataclass(frozen=True)
class ProportionTest:
    """Result of testing "bad / total is above `limit`" at level `alpha`."""

    bad: int
    total: int
    limit: float
    alpha: float
    p_value: float  # P(at least `bad` bad requests | the true rate is exactly `limit`)
    lower_bound: float  # one-sided Clopper-Pearson lower bound at level alpha
    significant: bool  # the rate is above `limit` with confidence 1 - alpha

    @property
    def estimate(self) -> float:
        """Observed proportion (0 when there were no requests)."""
        return self.bad / self.total if self.total else 0.0

    @property
    def estimate_over_limit(self) -> bool:
        """The observed proportion alone is over the limit (evidence, not yet proof)."""
        return self.total > 0 and self.estimate > self.limit


def rate_above_limit(bad: int, total: int, limit: float, alpha: float) -> ProportionTest:
    """Exact one-sided binomial test of H0: rate <= limit against H1: rate > limit."""
    if not 0.0 <= limit <= 1.0:
        raise ValueError(f"limit must be a fraction between 0 and 1, got {limit}")
    p_value = binomial.upper_tail(bad, total, limit) if total else 1.0
    lower = binomial.lower_bound(bad, total, alpha) if total else 0.0
    return ProportionTest(bad, total, limit, alpha, p_value, lower, significant=total > 0 and p_value <= alpha)


@dataclass(frozen=True)
class ComparisonTest:
    """Result of testing "canary's rate exceeds stable's rate + increase"."""

    canary: ProportionTest  # canary tested against stable's upper bound + increase
    stable_estimate: float  # observed stable rate
    stable_upper_bound: float  # stable's rate is below this with confidence 1 - alpha / 2
    increase: float
    significant: bool

    @property
    def estimate_difference(self) -> float:
        """Observed canary rate minus observed stable rate."""
        return self.canary.estimate - self.stable_estimate


def rate_above_stable(
    canary_bad: int, canary_total: int, stable_bad: int, stable_total: int, increase: float, alpha: float
) -> ComparisonTest:
    """Test H0: canary rate <= stable rate + increase, at level alpha, from the same window's counts.

    Splits alpha in two: an upper bound on stable's rate (alpha / 2) and an exact test of the canary
    against that bound plus `increase` (alpha / 2). If H0 holds, a false fail needs one of the two
    to be wrong, so the level is at most alpha (union bound), for any sample sizes.
    """
    if stable_total <= 0:
        raise ValueError("the comparison needs stable requests; skip it when stable served none")
    stable_upper = binomial.upper_bound(stable_bad, stable_total, alpha / 2.0)
    limit = min(1.0, stable_upper + increase)
    canary = rate_above_limit(canary_bad, canary_total, limit, alpha / 2.0)
    return ComparisonTest(
        canary=canary,
        stable_estimate=stable_bad / stable_total,
        stable_upper_bound=stable_upper,
        increase=increase,
        significant=canary.significant,
    )
