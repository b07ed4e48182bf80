"""When would the plain threshold rule have decided? Replayed over the same Prometheus data as the run.

The rule is the one other tools use (Flagger, Argo Rollouts): every `interval` compare the metric's
point value with the threshold; fail after `failure_limit` failed checks (optionally in a row).
Checks are evaluated at the ticks a real analysis would have made, with Prometheus's own evaluation
of the query at each tick, so both judges see exactly the same data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rollguard.sandbox.prometheus_queries import value_at
from rollguard.steps.judgment.threshold import FailureCounter, point_breaches


@dataclass(frozen=True)
class ThresholdRule:
    """The plain rule's settings."""

    interval_s: float = 5.0
    failure_limit: int = 3
    consecutive: bool = False


@dataclass(frozen=True)
class RuleDecision:
    """When the rule decides (None: never), whether that moment lies past the observed data, and how
    many failed checks it counted."""

    at: float | None
    extrapolated: bool
    failed_checks: int


def decision_time(
    points: Sequence[tuple[float, float | None]], threshold: float, rule: ThresholdRule, *, observed_until: float
) -> RuleDecision:
    """The check at which the rule reaches its failure limit.

    `points` are (time, value) in check order; a None value (no data) neither counts nor breaks a streak,
    and an infinite value stands for a check past `observed_until` that the persisting fault fails.
    """
    counter = FailureCounter(limit=rule.failure_limit, consecutive=rule.consecutive)
    for at, value in points:
        if value is None:
            continue
        if point_breaches(value, maximum=threshold):
            counter.record_failed()
            if counter.reached:
                return RuleDecision(at, extrapolated=at > observed_until, failed_checks=counter.failed)
        else:
            counter.record_ok()
    return RuleDecision(None, extrapolated=False, failed_checks=counter.failed)


def check_times(start: float, end: float, interval_s: float) -> list[float]:
    """The ticks of an analysis that starts at `start`: start, start + interval, ... up to `end`."""
    if interval_s <= 0:
        raise ValueError("the threshold rule's interval must be greater than zero")
    ticks: list[float] = []
    at = start
    while at <= end:
        ticks.append(at)
        at += interval_s
    return ticks


def replay(
    prometheus_url: str, query: str, threshold: float, start: float, observed_until: float, rule: ThresholdRule,
    *, breach_at: float | None, fault_persists: bool,
) -> RuleDecision:
    """Apply the rule at the ticks of an analysis starting at `start`, on Prometheus's values.

    Up to `observed_until` (rollguard's cut, or the end of the release) each tick uses the query's real
    value at that time. Past it, when `fault_persists` (the canary was never fixed, only its traffic
    moved), every tick at or after the first breach `breach_at` (or, without one, after the data) fails:
    the plain rule's best case.
    """
    # rollguard may cut before Prometheus's rate() shows the breach (a new series needs two samples):
    # then the persisting fault shows at the latest right after the data ends.
    persisting_from = breach_at if breach_at is not None else observed_until
    horizon = max(observed_until, persisting_from) + (rule.failure_limit + 1) * rule.interval_s
    points: list[tuple[float, float | None]] = []
    for at in check_times(start, horizon, rule.interval_s):
        if at <= observed_until:
            points.append((at, value_at(prometheus_url, query, at)))
        elif fault_persists and at >= persisting_from:
            points.append((at, math.inf))
    return decision_time(points, threshold, rule, observed_until=observed_until)
