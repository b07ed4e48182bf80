"""The numbers of one check: every query of the analysis asked of the querier, the raw counters turned into
request counts (keeping the snapshots between checks) and into the window's error rate and p99, and the answers
mapped onto the judgment's inputs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rollguard.steps.analyze.settings import AnalysisSettings, custom_name
from rollguard.steps.judgment.check import CheckInputs, Counts, CustomValue, PointValue
from rollguard.steps.judgment.outcomes import Phase, finite_or_none
from rollguard.steps.metrics.counter_window import CounterHistory, CounterSnapshot, WindowCounts, counts_between
from rollguard.steps.metrics.querier import Querier, QuerySpec
from rollguard.steps.metrics.query_results import QueryResult, QueryStatus

_PHASES = {
    QueryStatus.VALUE: Phase.OK, QueryStatus.EMPTY: Phase.NO_DATA, QueryStatus.NAN: Phase.NAN,
    QueryStatus.MULTIPLE: Phase.MULTIPLE, QueryStatus.ERROR: Phase.ERROR,
}


@dataclass(frozen=True)
class CheckReading:
    """What one check read: the judgment's inputs, and the numbers as the verdict records them."""

    inputs: CheckInputs
    # "canary", "stable" (counts and point values), "query_problems", "query_s" (wall time of the queries)
    readings: dict[str, Any]


@dataclass(frozen=True)
class _VersionReading:
    """One version's numbers from its counters answer: the window's counts, the running totals, the window's
    error rate and p99 (computed from the same answer), and the record for the verdict."""

    window: Counts
    since_start: Counts
    requests_since_start: int
    error_rate: PointValue
    p99_ms: PointValue
    record: dict[str, Any]


@dataclass
class CheckReader:
    """Reads one check's numbers through a querier; keeps the counter snapshots between checks."""

    settings: AnalysisSettings
    querier: Querier
    canary_history: CounterHistory = field(default_factory=CounterHistory)
    stable_history: CounterHistory = field(default_factory=CounterHistory)
    timer: Callable[[], float] = time.perf_counter  # wall time of a check's queries (`query_s`)

    def read(self, elapsed_s: float) -> CheckReading:
        """Query everything for one check; after an unreachable answer, the rest of the check is skipped."""
        asked = self.timer()
        self._resume_baselines()
        results = self._ask_all()
        query_s = self.timer() - asked
        queries = self.settings.queries
        canary = self._version("canary", queries.canary.counters, results[queries.canary.counters.name],
                               self.canary_history, elapsed_s)
        stable = self._version("stable", queries.stable.counters, results[queries.stable.counters.name],
                               self.stable_history, elapsed_s)
        canary_error_rate, stable_error_rate = canary.error_rate, stable.error_rate
        canary_p99, stable_p99 = canary.p99_ms, stable.p99_ms
        if self.settings.point_value_queries:  # the threshold rule judges Prometheus's own rates
            canary_error_rate, stable_error_rate = (_point(results[queries.canary.error_rate.name]),
                                                    _point(results[queries.stable.error_rate.name]))
            canary_p99, stable_p99 = (_point(results[queries.canary.p99_latency_ms.name]),
                                      _point(results[queries.stable.p99_latency_ms.name]))
        custom = tuple(
            CustomValue(metric.name, _point(results[custom_name(metric)]), metric.minimum, metric.maximum)
            for metric in self.settings.custom_metrics
        )
        inputs = CheckInputs(
            canary_counts=canary.window,
            stable_counts=stable.window,
            canary_requests_since_start=canary.requests_since_start,
            canary_error_rate=canary_error_rate,
            stable_error_rate=stable_error_rate,
            canary_p99_ms=canary_p99,
            custom=custom,
            canary_since_start=canary.since_start,
            stable_since_start=stable.since_start,
        )
        readings = {
            "canary": {**canary.record, "error_rate": finite_or_none(canary_error_rate.value),
                       "p99_latency_ms": finite_or_none(canary_p99.value)},
            "stable": {**stable.record, "error_rate": finite_or_none(stable_error_rate.value),
                       "p99_latency_ms": finite_or_none(stable_p99.value)},
            # Only queries that needed retries or gave no plain value: keeps the verdict small.
            "query_problems": {name: {"status": result.status.value, "attempts": result.attempts,
                                      "detail": result.detail}
                               for name, result in results.items()
                               if result.status is not QueryStatus.VALUE or result.attempts > 1},
            "query_s": round(query_s, 4),
        }
        return CheckReading(inputs, readings)

    def _resume_baselines(self) -> None:
        """When resuming (--started-at), the counters as they were at the first start become the baselines.

        PromQL's `@` modifier reads them from Prometheus's history (Prometheus >= 2.33). A series absent then
        (born later) counts in full, as always; a failed query is retried at the next check.
        """
        started_at = self.settings.timing.started_at
        if started_at is None:
            return
        queries = self.settings.queries
        for spec, history in ((queries.canary.counters, self.canary_history),
                              (queries.stable.counters, self.stable_history)):
            if history.first is not None:
                continue
            result = self.querier.vector(resumed_baseline_query(spec.promql, started_at))
            if result.status in (QueryStatus.VALUE, QueryStatus.EMPTY):
                history.add(CounterSnapshot.from_samples(0.0, result.samples), self.settings.limits.max_p99_latency_ms,
                            self.settings.errors)

    def _ask_all(self) -> dict[str, QueryResult]:
        results: dict[str, QueryResult] = {}
        unreachable: QueryResult | None = None
        for spec in self.settings.query_specs():
            if unreachable is not None:
                results[spec.name] = QueryResult(spec.promql, QueryStatus.ERROR,
                                                 detail=f"skipped: {unreachable.detail}", unreachable=True)
                continue
            result = spec.ask(self.querier)
            results[spec.name] = result
            if result.status is QueryStatus.ERROR and result.unreachable:
                unreachable = result
        return results

    def _version(
        self, who: str, spec: QuerySpec, result: QueryResult, history: CounterHistory, elapsed_s: float
    ) -> _VersionReading:
        """The window's counts (at most --window), the running totals since the start, the window's error rate
        and p99, and the record."""
        if result.status not in (QueryStatus.VALUE, QueryStatus.EMPTY):
            # No counts from this answer (an error, or series that are not numbers): say why, keep the history.
            unknown = Counts(_PHASES[result.status], detail=result.detail)
            point = PointValue(unknown.phase, detail=f"{who} counters: {result.detail}")
            return _VersionReading(unknown, unknown, history.requests_since_start, point, point,
                                   {"status": result.status.value})
        limit_ms, errors = self.settings.limits.max_p99_latency_ms, self.settings.errors
        snapshot = CounterSnapshot.from_samples(elapsed_s, result.samples)
        if history.first is None or snapshot.at_s > history.first.at_s:
            history.add(snapshot, limit_ms, errors)
        window = counts_between(history.baseline(elapsed_s, self.settings.timing.window_s), snapshot, limit_ms, errors)
        total = history.since_start or window
        summary = {"status": result.status.value, "requests": window.requests, "errors": window.errors,
                   "slow": window.slow if window.slow_known else None, "window_start_s": round(window.since_s, 3),
                   "requests_since_start": total.requests, "errors_since_start": total.errors,
                   "slow_since_start": total.slow if total.slow_known else None}
        if window.connections:
            summary["tcp_connections"] = window.connections
        if window.failures:
            summary["failures"] = dict(window.failures)
        if result.status is QueryStatus.EMPTY:
            detail = f"no {who} series in Prometheus for {spec.promql} (no traffic yet, or wrong labels?)"
            missing = Counts(Phase.NO_DATA, detail=detail)
            point = PointValue(Phase.NO_DATA, detail=detail)
            return _VersionReading(missing, missing, total.requests, point, point, summary)
        counts = Counts(Phase.OK, window.requests, window.errors, window.slow, window.slow_known, timed=window.timed,
                        connections=window.connections, failures=window.failures, slow_bound_ms=window.slow_bound_ms)
        since_start = Counts(Phase.OK, total.requests, total.errors, total.slow, total.slow_known, timed=total.timed,
                             connections=total.connections, failures=total.failures,
                             slow_bound_ms=total.slow_bound_ms)
        return _VersionReading(counts, since_start, total.requests, _window_error_rate(who, window),
                               _window_p99(who, window, self.settings.limits.latency_quantile), summary)


def _window_error_rate(who: str, window: WindowCounts) -> PointValue:
    """The window's failed share, as the error-rate query would say it: NaN without requests in the window."""
    if window.requests == 0:
        return PointValue(Phase.NAN, detail=f"no {who} requests in the window: no error rate (0 / 0)")
    return PointValue(Phase.OK, window.error_rate)


def _window_p99(who: str, window: WindowCounts, quantile: float) -> PointValue:
    """The window's latency quantile from the duration buckets' increases, as the p99 query would say it:
    no data without bucket series, NaN without requests in them."""
    if not window.latency_buckets:
        return PointValue(Phase.NO_DATA, detail=f"no {who} duration histogram series (TCP only, or no traffic yet)")
    value = window.latency_quantile_ms(quantile)
    if math.isnan(value):
        return PointValue(Phase.NAN, detail=f"no {who} requests in the window's duration histogram")
    return PointValue(Phase.OK, value)


def resumed_baseline_query(counters_promql: str, started_at: float) -> str:
    """The counters query evaluated at the analysis's first start (PromQL `@` modifier).

    The counters query is a union (`A or B or C`) of plain selectors built by istio_queries, whose label
    values (Kubernetes names, flag regexes) hold no " or "; `@` binds to one selector, so each gets it.
    """
    return " or ".join(f"{selector} @ {started_at:.3f}" for selector in counters_promql.split(" or "))


def _point(result: QueryResult) -> PointValue:
    """A query result as the judgment's PointValue."""
    return PointValue(_PHASES[result.status], result.value, result.detail)
