"""Judge one check: measured numbers in, one outcome per metric out (pure, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from rollguard.steps.judgment.outcomes import CheckOutcome, Judge, MetricOutcome, Phase
from rollguard.steps.judgment.statistical import LookPlan, planned_looks, rate_above_limit, rate_above_stable
from rollguard.steps.judgment.threshold import point_breaches

CANARY_ERROR_RATE = "canary_error_rate"
CANARY_VS_STABLE = "canary_vs_stable_error_rate"
CANARY_P99 = "canary_p99_latency_ms"


@dataclass(frozen=True)
class PointValue:
    """A single number read for a check, or the reason there is none (phase other than OK)."""

    phase: Phase
    value: float = math.nan
    detail: str = ""


@dataclass(frozen=True)
class Counts:
    """Requests counted in the judged window: all, failed, and slower than the latency limit."""

    phase: Phase  # OK, or why the counts are unknown (NO_DATA, ERROR, ...)
    requests: int = 0  # HTTP and gRPC requests and TCP connections
    errors: int = 0
    slow: int = 0
    slow_known: bool = False  # the histogram has a boundary at or above the latency limit: `slow` counts above it
    detail: str = ""
    timed: int | None = None  # requests with a measured duration (None: all of them): the base of `slow`
    connections: int = 0  # of `requests`, TCP connections (Istio measures no latency for them)
    failures: tuple[tuple[str, int], ...] = ()  # how the errors failed, most frequent first

    @property
    def latency_base(self) -> int:
        """The requests `slow` is a share of."""
        return self.requests if self.timed is None else self.timed

    @property
    def tcp_only(self) -> bool:
        """Every counted request is a TCP connection: there is no request latency to judge."""
        return self.requests > 0 and self.connections == self.requests

    def failures_text(self) -> str:
        """`: 30 gRPC UNAVAILABLE (14), 2 HTTP 503` (empty when nothing failed or the kinds are unknown)."""
        if not self.failures:
            return ""
        return ": " + ", ".join(f"{count} {kind}" for kind, count in self.failures)
    slow_bound_ms: float = math.nan  # that boundary: the limit itself (exact), or the next one above it


@dataclass(frozen=True)
class CustomValue:
    """A custom metric's value at this check, with its limits."""

    name: str
    point: PointValue
    minimum: float = -math.inf
    maximum: float = math.inf


@dataclass(frozen=True)
class Limits:
    """The thresholds the built-in metrics are judged against."""

    max_error_rate: float
    max_p99_latency_ms: float
    max_error_rate_increase: float
    latency_quantile: float = 0.99


@dataclass(frozen=True)
class CheckInputs:
    """Everything measured at one check."""

    canary_counts: Counts
    stable_counts: Counts
    canary_requests_since_start: int
    canary_error_rate: PointValue
    stable_error_rate: PointValue
    canary_p99_ms: PointValue
    custom: tuple[CustomValue, ...] = field(default_factory=tuple)
    # Running totals since the analysis started (never capped by --window): the anytime rule's counts.
    canary_since_start: Counts = field(default_factory=lambda: Counts(Phase.NO_DATA, detail="not counted"))
    stable_since_start: Counts = field(default_factory=lambda: Counts(Phase.NO_DATA, detail="not counted"))


def judge_check(
    index: int, elapsed_s: float, inputs: CheckInputs, limits: Limits, judge: Judge, plan: LookPlan
) -> CheckOutcome:
    """Judge the built-in and custom metrics of one check with the Bonferroni or the threshold rule (the
    anytime rule, `--judge statistical`, is `anytime_check.judge_check_anytime`)."""
    if judge is Judge.STATISTICAL:
        raise ValueError("the anytime rule is judged by anytime_check.judge_check_anytime")
    if judge is Judge.BONFERRONI:
        if plan.tests_per_look < STATISTICAL_TESTS_PER_LOOK:
            # Each test spends alpha / (K T): a plan for fewer tests than are run breaks the guarantee.
            raise ValueError(f"the look plan shares alpha over {plan.tests_per_look} tests per check, but "
                             f"{STATISTICAL_TESTS_PER_LOOK} run; build it with look_plan()")
        builtin = [test(inputs, limits, plan) for test in _STATISTICAL_TESTS]
    else:
        builtin = [
            _point_metric(CANARY_ERROR_RATE, inputs.canary_error_rate, limits.max_error_rate,
                          samples=_samples(inputs.canary_counts)),
            _point_comparison(inputs.canary_error_rate, inputs.stable_error_rate, limits),
            _tcp_latency(inputs.canary_counts, limits.max_p99_latency_ms)
            or _point_metric(CANARY_P99, inputs.canary_p99_ms, limits.max_p99_latency_ms),
        ]
    return CheckOutcome(index, elapsed_s, inputs.canary_requests_since_start, tuple(builtin) + custom_outcomes(inputs))


def custom_outcomes(inputs: CheckInputs) -> tuple[MetricOutcome, ...]:
    """The custom metrics' outcomes: point values against their limits, under every rule."""
    return tuple(_custom_metric(value) for value in inputs.custom)


def _samples(counts: Counts) -> int | None:
    return counts.requests if counts.phase is Phase.OK else None


def _percent(value: float) -> str:
    return f"{value * 100:.2f}%"


def _above(significant: bool) -> str:
    return "above" if significant else "not above"


def _statistical_error_rate(inputs: CheckInputs, limits: Limits, plan: LookPlan) -> MetricOutcome:
    counts = inputs.canary_counts
    if counts.phase is not Phase.OK:
        return MetricOutcome(CANARY_ERROR_RATE, counts.phase, threshold=limits.max_error_rate, detail=counts.detail)
    if counts.requests == 0:
        return MetricOutcome(CANARY_ERROR_RATE, Phase.OK, threshold=limits.max_error_rate, samples=0,
                             detail="no canary requests in the window yet")
    test = rate_above_limit(counts.errors, counts.requests, limits.max_error_rate, plan.alpha_per_test)
    detail = (f"{counts.errors} of {counts.requests} canary requests failed ({_percent(test.estimate)}"
              f"{counts.failures_text()}; limit {_percent(limits.max_error_rate)}); lower confidence bound "
              f"{_percent(test.lower_bound)} is "
              f"{_above(test.significant)} the limit (p = {test.p_value:.2g}, per-test level {test.alpha:.2g})")
    phase = Phase.FAILED if test.significant else Phase.SUSPECT if test.estimate_over_limit else Phase.OK
    alone = rate_above_limit(counts.errors, counts.requests, limits.max_error_rate, plan.alpha_single).significant
    return MetricOutcome(CANARY_ERROR_RATE, phase, test.estimate, limits.max_error_rate, detail, counts.requests,
                         over_limit_at_this_check=alone)


def _statistical_comparison(inputs: CheckInputs, limits: Limits, plan: LookPlan) -> MetricOutcome:
    canary, stable = inputs.canary_counts, inputs.stable_counts
    name, increase = CANARY_VS_STABLE, limits.max_error_rate_increase
    unjudged = comparison_not_testable(canary, stable, increase, "in the window")
    if unjudged is not None:
        return unjudged
    test = rate_above_stable(canary.errors, canary.requests, stable.errors, stable.requests, increase,
                             plan.alpha_per_test)
    difference = test.estimate_difference
    detail = (f"canary {_percent(test.canary.estimate)} ({canary.errors}/{canary.requests}"
              f"{canary.failures_text()}) vs stable {_percent(test.stable_estimate)} ({stable.errors}/{stable.requests}"
              f"{stable.failures_text()}), allowed increase "
              f"{_percent(increase)}; canary's lower bound {_percent(test.canary.lower_bound)} is "
              f"{_above(test.significant)} stable's upper bound {_percent(test.stable_upper_bound)} + the increase")
    phase = (Phase.FAILED if test.significant else Phase.SUSPECT if difference > increase else Phase.OK)
    alone = rate_above_stable(canary.errors, canary.requests, stable.errors, stable.requests, increase,
                              plan.alpha_single).significant
    return MetricOutcome(name, phase, difference, increase, detail, canary.requests, over_limit_at_this_check=alone)


def _statistical_latency(inputs: CheckInputs, limits: Limits, plan: LookPlan) -> MetricOutcome:
    counts, p99 = inputs.canary_counts, inputs.canary_p99_ms
    limit_ms = limits.max_p99_latency_ms
    unjudged = latency_not_testable(counts, p99, limit_ms)
    if unjudged is not None:
        return unjudged
    shown = p99.value if p99.phase is Phase.OK else math.nan
    timed = counts.latency_base
    if timed == 0:
        return MetricOutcome(CANARY_P99, Phase.OK, shown, limit_ms, "no canary requests in the window yet", 0)
    allowed = 1.0 - limits.latency_quantile
    test = rate_above_limit(counts.slow, timed, allowed, plan.alpha_per_test)
    detail = (f"{counts.slow} of {timed} canary requests slower than {counts.slow_bound_ms:g} ms "
              f"({_percent(test.estimate)}, allowed {_percent(allowed)}; {latency_rule(counts, limit_ms)}); lower "
              f"confidence bound {_percent(test.lower_bound)} is {_above(test.significant)} the allowed share "
              f"(per-test level {test.alpha:.2g})")
    phase = Phase.FAILED if test.significant else Phase.SUSPECT if test.estimate_over_limit else Phase.OK
    alone = rate_above_limit(counts.slow, timed, allowed, plan.alpha_single).significant
    return MetricOutcome(CANARY_P99, phase, shown, limit_ms, detail, timed, over_limit_at_this_check=alone)


def _tcp_latency(counts: Counts, limit_ms: float) -> MetricOutcome | None:
    """Latency skipped, and why, when every canary request in the window is a TCP connection; else None."""
    if counts.phase is not Phase.OK or not counts.tcp_only:
        return None
    return MetricOutcome(CANARY_P99, Phase.SKIPPED, threshold=limit_ms, samples=0,
                         detail=f"not judged: the canary's {counts.requests} requests in the window are TCP "
                                "connections, for which Istio measures no request latency")


def latency_rule(counts: Counts, limit_ms: float) -> str:
    """Which latency rule applied, in words: exact at a bucket boundary, or bounded by the next one above."""
    if counts.slow_bound_ms == limit_ms:
        return f"{limit_ms:g} ms is a bucket boundary: exact, more than 1 % slower means p99 > {limit_ms:g} ms"
    return (f"bounded: {limit_ms:g} ms lies between bucket boundaries, so only a p99 above {counts.slow_bound_ms:g} ms "
            f"(the boundary above it) can be proven; a p99 between {limit_ms:g} and {counts.slow_bound_ms:g} ms "
            "cannot be told from the histogram")


def latency_not_testable(counts: Counts, p99: PointValue, limit_ms: float) -> MetricOutcome | None:
    """The latency outcome when the buckets cannot carry the test, else None.

    No histogram boundary at or above the limit: nothing over it can be seen (skipped, and analyze warns at
    start-up). No histogram series or counts at all: the p99 point value against --failure-limit, as before.
    """
    skipped = _tcp_latency(counts, limit_ms)
    if skipped is not None:
        return skipped
    if counts.phase is Phase.OK and not counts.slow_known and math.isinf(counts.slow_bound_ms):
        return MetricOutcome(CANARY_P99, Phase.SKIPPED, threshold=limit_ms,
                             detail=f"the histogram has no bucket boundary at or above {limit_ms:g} ms: a p99 over "
                             "the limit cannot be seen")
    if not counts.slow_known or counts.phase is not Phase.OK:
        return _point_metric(CANARY_P99, p99, limit_ms)
    return None


# Every statistical test run at each check. Each spends its share of the false-alarm budget, so their
# number is T in alpha = (1 - confidence) / (K T): a test added here is counted in every plan.
_STATISTICAL_TESTS: tuple[Callable[[CheckInputs, Limits, LookPlan], MetricOutcome], ...] = (
    _statistical_error_rate,
    _statistical_comparison,
    _statistical_latency,
)
STATISTICAL_TESTS_PER_LOOK = len(_STATISTICAL_TESTS)


def look_plan(confidence: float, duration_s: float, interval_s: float) -> LookPlan:
    """The plan of an analysis: its confidence shared over every planned check and every test run at each."""
    return LookPlan(confidence, planned_looks(duration_s, interval_s), STATISTICAL_TESTS_PER_LOOK)


def _point_metric(name: str, point: PointValue, maximum: float, samples: int | None = None) -> MetricOutcome:
    if point.phase is not Phase.OK:
        return MetricOutcome(name, point.phase, threshold=maximum, detail=point.detail, samples=samples)
    phase = Phase.BREACH if point_breaches(point.value, maximum=maximum) else Phase.OK
    return MetricOutcome(name, phase, point.value, maximum, point.detail, samples)


def _point_comparison(canary: PointValue, stable: PointValue, limits: Limits) -> MetricOutcome:
    name, increase = CANARY_VS_STABLE, limits.max_error_rate_increase
    if canary.phase is not Phase.OK:
        return MetricOutcome(name, Phase.SKIPPED, threshold=increase, detail="no canary error rate")
    if stable.phase.is_error:
        return MetricOutcome(name, stable.phase, threshold=increase, detail=f"stable error rate: {stable.detail}")
    if stable.phase is not Phase.OK:
        return MetricOutcome(name, Phase.SKIPPED, threshold=increase,
                             detail="stable served no requests in the window; nothing to compare with")
    difference = canary.value - stable.value
    detail = f"canary {_percent(canary.value)} vs stable {_percent(stable.value)}"
    phase = Phase.BREACH if difference > increase else Phase.OK
    return MetricOutcome(name, phase, difference, increase, detail)


def _custom_metric(custom: CustomValue) -> MetricOutcome:
    point = custom.point
    shown_limit = custom.maximum if math.isfinite(custom.maximum) else custom.minimum
    if point.phase is not Phase.OK:
        return MetricOutcome(custom.name, point.phase, threshold=shown_limit, detail=point.detail)
    breached = point_breaches(point.value, custom.minimum, custom.maximum)
    bounds = " and ".join(
        part for part in (
            f">= {custom.minimum:g}" if math.isfinite(custom.minimum) else "",
            f"<= {custom.maximum:g}" if math.isfinite(custom.maximum) else "",
        ) if part
    )
    detail = f"value {point.value:g}, must be {bounds}"
    return MetricOutcome(custom.name, Phase.BREACH if breached else Phase.OK, point.value, shown_limit, detail)


def comparison_not_testable(canary: Counts, stable: Counts, increase: float, span: str) -> MetricOutcome | None:
    """The canary-vs-stable outcome when the counts cannot carry the comparison (either judge), else None."""
    name = CANARY_VS_STABLE
    if canary.phase is not Phase.OK:
        return MetricOutcome(name, Phase.SKIPPED, threshold=increase, detail="no canary counts (see canary_error_rate)")
    if stable.phase is Phase.ERROR or stable.phase is Phase.MULTIPLE:
        return MetricOutcome(name, stable.phase, threshold=increase, detail=f"stable counts: {stable.detail}")
    if stable.phase is not Phase.OK or stable.requests == 0:
        return MetricOutcome(name, Phase.SKIPPED, threshold=increase,
                             detail=f"stable served no requests {span}; nothing to compare with")
    if canary.requests == 0:
        return MetricOutcome(name, Phase.OK, threshold=increase, samples=0, detail="no canary requests yet")
    return None
