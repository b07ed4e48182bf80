"""The anytime-valid statistical rule: sequential tests on running counts, and how the false-alarm budget
1 - confidence is split between them.

Each test spends a share alpha_i of the budget, fixed before any data: it fails the canary when its test
martingale reaches 1 / alpha_i (`mixture_martingale`), which under its null hypothesis happens with
probability at most alpha_i over unbounded time (Ville's inequality). A canary within all its limits is
then failed with probability at most sum(alpha_i) <= 1 - confidence (union bound), however often and
however long it is checked. No number of looks is planned, so an analysis may run open-ended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rollguard.steps.judgment import mixture_martingale as martingale

OPEN_ENDED = math.inf  # the duration of an analysis that watches until it is stopped or fails


@dataclass(frozen=True)
class Budget:
    """The false-alarm budget 1 - confidence, split a priori between the tests that can decide.

    A test with a share of 0 is not run as a test (see `split_budget`).
    """

    confidence: float
    error_rate: float  # canary 5xx share against --max-error-rate
    comparison: float  # canary against stable + --max-error-rate-increase
    latency: float  # share of canary requests slower than the latency limit, against 1 - quantile
    duration_s: float  # the bake time (OPEN_ENDED: none); the end-of-bake rule applies after it
    restart_every_s: float | None = None  # long analyses: a new test every so often, mixed (RestartMixture)

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {self.confidence}")
        shares = (self.error_rate, self.comparison, self.latency)
        if any(share < 0.0 for share in shares) or sum(shares) > (1.0 - self.confidence) * (1.0 + 1e-9):
            raise ValueError(f"the tests' shares {shares} must be >= 0 and add up to at most 1 - confidence")

    @property
    def alpha_single(self) -> float:
        """The level of one test at one look (the end-of-bake rule): the whole 1 - confidence."""
        return 1.0 - self.confidence

    @property
    def open_ended(self) -> bool:
        """True when the analysis has no bake time: it watches until stopped or failed."""
        return math.isinf(self.duration_s)

    def as_json(self) -> dict[str, float]:
        """The shares, as the verdict file records them."""
        return {"canary_error_rate": self.error_rate, "canary_vs_stable_error_rate": self.comparison,
                "canary_p99_latency_ms": self.latency}


def comparison_can_decide(max_error_rate: float, max_error_rate_increase: float) -> bool:
    """Whether "canary <= stable + increase" can be false while "canary <= limit" holds.

    Stable's rate is at least 0, so with increase >= limit a canary over stable + increase is over the
    limit too: the absolute test, given the comparison's share as well, proves everything the comparison
    could, sooner (it need not bound stable's rate). Only increase < limit leaves it something to decide.
    """
    return max_error_rate_increase < max_error_rate


RESTARTS_AFTER_PERIODS = 10


def split_budget(confidence: float, max_error_rate: float, max_error_rate_increase: float,
                 compare_with_stable: bool, duration_s: float, restart_every_s: float | None = None) -> Budget:
    """Equal shares for the tests that can decide; none for a comparison that cannot (or is switched off).

    Why equal: the error and latency tests guard independent failure modes and neither is known to matter
    more; a test's time to a verdict grows only with log(1 / share), so an uneven split buys little.
    Why none for the comparison under the defaults (limit 1 %, increase 1 point): see
    `comparison_can_decide` — it held a third of the budget in the Bonferroni judge and decided nothing.
    """
    alpha = 1.0 - confidence
    compare = compare_with_stable and comparison_can_decide(max_error_rate, max_error_rate_increase)
    share = alpha / (3 if compare else 2)
    # Restarts pay off only when a regression may begin long after the start (see RestartMixture).
    restarts = restart_every_s if restart_every_s and duration_s >= RESTARTS_AFTER_PERIODS * restart_every_s else None
    return Budget(confidence, error_rate=share, comparison=share if compare else 0.0, latency=share,
                  duration_s=duration_s, restart_every_s=restarts)


@dataclass(frozen=True)
class SequentialTest:
    """Result of the anytime test of H0 "bad / total is at most `limit`" at level `alpha`."""

    bad: int
    total: int
    limit: float
    alpha: float
    log_evidence: float  # log of the test martingale (the e-value): fail at log(1 / alpha)
    lower_bound: float  # anytime-valid lower confidence bound at level alpha
    significant: bool

    @property
    def estimate(self) -> float:
        """Observed proportion (0 when there were no requests)."""
        return self.bad / self.total if self.total else 0.0

    @property
    def estimate_over_limit(self) -> bool:
        """The observed proportion alone is over the limit (evidence, not yet proof)."""
        return self.total > 0 and self.estimate > self.limit

    @property
    def evidence(self) -> float:
        """The martingale's value (likelihood ratio of the mixture against the limit), capped for display."""
        return math.exp(min(self.log_evidence, 700.0))

    @property
    def needed(self) -> float:
        """The value the martingale must reach to fail the canary: 1 / alpha."""
        return 1.0 / self.alpha


def rate_above_limit(bad: int, total: int, limit: float, alpha: float) -> SequentialTest:
    """Anytime test of H0: each request is bad with probability <= limit, against "more"."""
    if not 0.0 <= limit <= 1.0:
        raise ValueError(f"limit must be a fraction between 0 and 1, got {limit}")
    log_evidence = martingale.log_evidence_above(bad, total, limit)
    lower = martingale.lower_confidence_bound(bad, total, alpha) if total else 0.0
    return SequentialTest(bad, total, limit, alpha, log_evidence, lower,
                          significant=log_evidence >= -math.log(alpha))


@dataclass(frozen=True)
class SequentialComparison:
    """Result of the anytime test of "canary's rate exceeds stable's rate + increase"."""

    canary_estimate: float
    stable_estimate: float
    canary_lower_bound: float  # anytime lower bound of canary's rate at alpha / 2
    stable_upper_bound: float  # anytime upper bound of stable's rate at alpha / 2
    increase: float
    alpha: float
    significant: bool

    @property
    def estimate_difference(self) -> float:
        """Observed canary rate minus observed stable rate."""
        return self.canary_estimate - self.stable_estimate


def rate_above_stable(canary_bad: int, canary_total: int, stable_bad: int, stable_total: int, increase: float,
                      alpha: float) -> SequentialComparison:
    """Anytime test of H0: some rate r has every stable request bad with probability >= r and every canary
    request with probability <= r + increase (for constant rates: canary <= stable + increase).

    Fails when the canary's anytime lower bound (alpha / 2) exceeds stable's anytime upper bound (alpha / 2)
    plus the increase. Under H0 that needs one of the two bounds to miss the true r (or r + increase) at
    some time, each with probability <= alpha / 2 over unbounded time: level alpha, for any sample sizes.
    """
    if stable_total <= 0:
        raise ValueError("the comparison needs stable requests; skip it when stable served none")
    canary_lower = martingale.lower_confidence_bound(canary_bad, canary_total, alpha / 2.0) if canary_total else 0.0
    stable_upper = martingale.upper_confidence_bound(stable_bad, stable_total, alpha / 2.0)
    return SequentialComparison(
        canary_estimate=canary_bad / canary_total if canary_total else 0.0,
        stable_estimate=stable_bad / stable_total,
        canary_lower_bound=canary_lower,
        stable_upper_bound=stable_upper,
        increase=increase,
        alpha=alpha,
        significant=canary_lower > stable_upper + increase,
    )


@dataclass(frozen=True)
class Restart:
    """The running totals when a restarted test began: its counts are the totals since then."""

    index: int  # k: the k-th restart (0 is the analysis's start)
    at_s: float
    requests: int
    errors: int
    slow: int

    @property
    def weight(self) -> float:
        """w_0 = 1/2 for the start, w_k = 1 / (2 k (k + 1)) for the k-th restart: they add up to 1."""
        return 0.5 if self.index == 0 else 0.5 / (self.index * (self.index + 1))


class RestartMixture:
    """For analyses that watch long: a test begun at the start AND one begun every `every_s` since, mixed.

    A single martingale from the start answers "has the canary been over its limit since the start?". After
    hours within the limit its evidence has sunk far below 1, and a regression that begins then must first
    climb back: the delay grows with the healthy time before it. The mixture sum_k w_k M_k, where M_k is the
    test martingale of the requests since the k-th restart (1 before it), is itself a test supermartingale
    (fixed weights adding up to 1, restarts at times the data do not choose), so Ville's inequality holds as
    before; a regression that began near restart k is found as if the test had begun there, at the price of
    log(1 / w_k) more evidence: about 2 log(k). Keeping only the latest `keep` restarts drops terms, which
    only lowers the sum: still valid.
    """

    def __init__(self, every_s: float, keep: int = 1000) -> None:
        if every_s <= 0 or keep < 1:
            raise ValueError("restarts need a positive period and room for at least one")
        self.every_s = every_s
        self.keep = keep
        self.start: Restart | None = None
        self.restarts: list[Restart] = []
        self._next_index = 1

    def observe(self, elapsed_s: float, requests: int, errors: int, slow: int) -> None:
        """Record the running totals at a check; a restart begins at the first check of each period."""
        if self.start is None:
            self.start = Restart(0, elapsed_s, 0, 0, 0)
            return
        if elapsed_s - self.start.at_s >= self._next_index * self.every_s:
            self._next_index = math.floor((elapsed_s - self.start.at_s) / self.every_s) + 1
            self.restarts.append(Restart(self._next_index - 1, elapsed_s, requests, errors, slow))
            del self.restarts[: -self.keep]

    def log_evidence(self, bad: int, total: int, limit: float, errors: bool) -> tuple[float, Restart | None]:
        """log of sum_k w_k M_k for H0 "rate <= limit", from the running totals now (`errors`: the 5xx
        count, else the slow count); and the restart whose test holds the most evidence."""
        terms: list[tuple[float, Restart | None]] = [
            (math.log(0.5) + martingale.log_evidence_above(bad, total, limit), self.start)]
        for restart in self.restarts:
            since = restart.errors if errors else restart.slow
            later = max(0, total - restart.requests)
            evidence = martingale.log_evidence_above(min(later, max(0, bad - since)), later, limit)
            terms.append((math.log(restart.weight) + evidence, restart))
        strongest = max(terms, key=lambda term: term[0])
        top = strongest[0]
        if top in (math.inf, -math.inf):
            return top, strongest[1]
        return top + math.log(sum(math.exp(term - top) for term, _ in terms)), strongest[1]
