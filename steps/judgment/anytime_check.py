"""Judge one check with the anytime-valid rule (the default `--judge statistical`): each built-in metric's
sequential test on the running counts since the analysis started, and the end-of-bake rule."""

from __future__ import annotations

import math

from rollguard.steps.judgment import statistical
from rollguard.steps.judgment.anytime import Budget, RestartMixture, rate_above_limit, rate_above_stable
from rollguard.steps.judgment.check import (
    CANARY_ERROR_RATE,
    CANARY_P99,
    CANARY_VS_STABLE,
    CheckInputs,
    Limits,
    comparison_not_testable,
    custom_outcomes,
    latency_not_testable,
    latency_rule,
)
from rollguard.steps.judgment.outcomes import CheckOutcome, MetricOutcome, Phase


def judge_check_anytime(index: int, elapsed_s: float, inputs: CheckInputs, limits: Limits, budget: Budget,
                        restarts: RestartMixture | None = None) -> CheckOutcome:
    """Judge the built-in metrics by their sequential tests and the custom metrics by their limits.

    `restarts` (a long analysis, `Budget.restart_every_s`) is told this check's running totals first and then
    carries the error and latency tests.
    """
    # The end-of-bake rule needs one fixed-look test per metric, run only once the bake time is over.
    final = elapsed_s >= budget.duration_s
    canary = inputs.canary_since_start
    if restarts is not None and canary.phase is Phase.OK:
        restarts.observe(elapsed_s, canary.requests, canary.errors, canary.slow)
    builtin = (
        _error_rate(inputs, limits, budget, final, restarts),
        _comparison(inputs, limits, budget, final),
        _latency(inputs, limits, budget, final, restarts),
    )
    return CheckOutcome(index, elapsed_s, inputs.canary_requests_since_start, builtin + custom_outcomes(inputs))


def _percent(value: float) -> str:
    return f"{value * 100:.2f}%"


def _evidence(log_evidence: float, alpha: float) -> str:
    """The martingale's value against the value that fails (1 / alpha), for the verdict's detail."""
    value = "inf" if math.isinf(log_evidence) and log_evidence > 0 else f"{math.exp(min(log_evidence, 700.0)):.3g}"
    return f"evidence {value} of the {1.0 / alpha:.3g} that proves it (test martingale, level {alpha:.2g})"


def _sequential(bad: int, total: int, limit: float, alpha: float, restarts: RestartMixture | None,
                errors: bool) -> tuple[bool, str]:
    """The test's decision and its evidence in words: from the start, or mixed over restarts."""
    if restarts is None:
        test = rate_above_limit(bad, total, limit, alpha)
        bound = f"anytime lower bound {_percent(test.lower_bound)}"
        return test.significant, f"{bound}; {_evidence(test.log_evidence, alpha)}"
    log_evidence, strongest = restarts.log_evidence(bad, total, limit, errors)
    since = ""
    if strongest is not None and strongest.index > 0:
        later, worse = total - strongest.requests, bad - (strongest.errors if errors else strongest.slow)
        since = f"; strongest since the restart at +{strongest.at_s:.0f}s: {worse} of {later}"
    return (log_evidence >= -math.log(alpha),
            f"{_evidence(log_evidence, alpha)}, mixed over tests restarted every {restarts.every_s:g}s{since}")


def _error_rate(inputs: CheckInputs, limits: Limits, budget: Budget, final: bool,
                restarts: RestartMixture | None) -> MetricOutcome:
    counts, limit = inputs.canary_since_start, limits.max_error_rate
    if counts.phase is not Phase.OK:
        return MetricOutcome(CANARY_ERROR_RATE, counts.phase, threshold=limit, detail=counts.detail)
    if counts.requests == 0:
        return MetricOutcome(CANARY_ERROR_RATE, Phase.OK, threshold=limit, samples=0,
                             detail="no canary requests since the start yet")
    significant, evidence = _sequential(counts.errors, counts.requests, limit, budget.error_rate, restarts, True)
    estimate = counts.errors / counts.requests
    detail = (f"{counts.errors} of {counts.requests} canary requests failed since the start{counts.failures_text()} "
              f"({_percent(estimate)}, limit {_percent(limit)}); {evidence}")
    phase = Phase.FAILED if significant else Phase.SUSPECT if estimate > limit else Phase.OK
    alone = final and statistical.rate_above_limit(counts.errors, counts.requests, limit,
                                                   budget.alpha_single).significant
    return MetricOutcome(CANARY_ERROR_RATE, phase, estimate, limit, detail, counts.requests,
                         over_limit_at_this_check=alone)


def _comparison(inputs: CheckInputs, limits: Limits, budget: Budget, final: bool) -> MetricOutcome:
    canary, stable = inputs.canary_since_start, inputs.stable_since_start
    name, increase = CANARY_VS_STABLE, limits.max_error_rate_increase
    if budget.comparison <= 0.0:
        return MetricOutcome(name, Phase.SKIPPED, threshold=increase,
                             detail="not tested: implied by the absolute limit (the increase is not below "
                             "--max-error-rate) or switched off (--absolute-only); its budget went to the other tests")
    unjudged = comparison_not_testable(canary, stable, increase, "since the start")
    if unjudged is not None:
        return unjudged
    test = rate_above_stable(canary.errors, canary.requests, stable.errors, stable.requests, increase,
                             budget.comparison)
    difference = test.estimate_difference
    detail = (f"canary {_percent(test.canary_estimate)} ({canary.errors}/{canary.requests}) vs stable "
              f"{_percent(test.stable_estimate)} ({stable.errors}/{stable.requests}) since the start, allowed "
              f"increase {_percent(increase)}; canary's anytime lower bound {_percent(test.canary_lower_bound)} is "
              f"{'above' if test.significant else 'not above'} stable's anytime upper bound "
              f"{_percent(test.stable_upper_bound)} + the increase (level {test.alpha:.2g})")
    phase = Phase.FAILED if test.significant else Phase.SUSPECT if difference > increase else Phase.OK
    alone = final and statistical.rate_above_stable(canary.errors, canary.requests, stable.errors, stable.requests,
                                                    increase, budget.alpha_single).significant
    return MetricOutcome(name, phase, difference, increase, detail, canary.requests, over_limit_at_this_check=alone)


def _latency(inputs: CheckInputs, limits: Limits, budget: Budget, final: bool,
             restarts: RestartMixture | None) -> MetricOutcome:
    counts, p99, limit_ms = inputs.canary_since_start, inputs.canary_p99_ms, limits.max_p99_latency_ms
    unjudged = latency_not_testable(counts, p99, limit_ms)
    if unjudged is not None:
        return unjudged
    shown = p99.value if p99.phase is Phase.OK else math.nan
    if counts.requests == 0:
        return MetricOutcome(CANARY_P99, Phase.OK, shown, limit_ms, "no canary requests since the start yet", 0)
    allowed = 1.0 - limits.latency_quantile
    significant, evidence = _sequential(counts.slow, counts.requests, allowed, budget.latency, restarts, False)
    estimate = counts.slow / counts.requests
    detail = (f"{counts.slow} of {counts.requests} canary requests since the start slower than "
              f"{counts.slow_bound_ms:g} ms ({_percent(estimate)}, allowed {_percent(allowed)}; "
              f"{latency_rule(counts, limit_ms)}); {evidence}")
    phase = Phase.FAILED if significant else Phase.SUSPECT if estimate > allowed else Phase.OK
    alone = final and statistical.rate_above_limit(counts.slow, counts.requests, allowed,
                                                   budget.alpha_single).significant
    return MetricOutcome(CANARY_P99, phase, shown, limit_ms, detail, counts.requests, over_limit_at_this_check=alone)
