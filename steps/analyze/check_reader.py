"""The numbers of one check: every query of the analysis asked of the querier, the raw counters turned into
request counts (keeping the snapshots between checks), and the answers mapped onto the judgment's inputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rollguard.steps.analyze.settings import AnalysisSettings, custom_name
from rollguard.steps.judgment.check import CheckInputs, Counts, CustomValue, PointValue
from rollguard.steps.judgment.outcomes import Phase, finite_or_none
from rollguard.steps.metrics.counter_window import CounterHistory, CounterSnapshot, counts_between
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
    readings: dict[str, Any]  # "canary", "stable" (counts and point values), "query_problems"


@dataclass
class CheckReader:
    """Reads one check's numbers through a querier; keeps the counter snapshots between checks."""

    settings: AnalysisSettings
    querier: Querier
    canary_history: CounterHistory = field(default_factory=CounterHistory)
    stable_history: CounterHistory = field(default_factory=CounterHistory)

    def read(self, elapsed_s: float) -> CheckReading:
        """Query everything for one check; after an unreachable answer, the rest of the check is skipped."""
        self._resume_baselines()
        results = self._ask_all()
        queries = self.settings.queries
        canary, canary_total, canary_since_start, canary_json = self._counts(
            "canary", queries.canary.counters, results[queries.canary.counters.name], self.canary_history, elapsed_s)
        stable, stable_total, _, stable_json = self._counts(
            "stable", queries.stable.counters, results[queries.stable.counters.name], self.stable_history, elapsed_s)
        canary_error_rate = results[queries.canary.error_rate.name]
        stable_error_rate = results[queries.stable.error_rate.name]
        canary_p99 = results[queries.canary.p99_latency_ms.name]
        stable_p99 = results[queries.stable.p99_latency_ms.name]
        custom = tuple(
            CustomValue(metric.name, _point(results[custom_name(metric)]), metric.minimum, metric.maximum)
            for metric in self.settings.custom_metrics
        )
        inputs = CheckInputs(
            canary_counts=canary,
            stable_counts=stable,
            canary_requests_since_start=canary_since_start,
            canary_error_rate=_point(canary_error_rate),
            stable_error_rate=_point(stable_error_rate),
            canary_p99_ms=_point(canary_p99),
            custom=custom,
            canary_since_start=canary_total,
            stable_since_start=stable_total,
        )
        readings = {
            "canary": {**canary_json, "error_rate": finite_or_none(canary_error_rate.value),
                       "p99_latency_ms": finite_or_none(canary_p99.value)},
            "stable": {**stable_json, "error_rate": finite_or_none(stable_error_rate.value),
                       "p99_latency_ms": finite_or_none(stable_p99.value)},
            # Only queries that needed retries or gave no plain value: keeps the verdict small.
            "query_problems": {name: {"status": result.status.value, "attempts": result.attempts,
                                      "detail": result.detail}
                               for name, result in results.items()
                               if result.status is not QueryStatus.VALUE or result.attempts > 1},
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

    def _counts(
        self, who: str, spec: QuerySpec, result: QueryResult, history: CounterHistory, elapsed_s: float
    ) -> tuple[Counts, Counts, int, dict[str, Any]]:
        """The window's counts (at most --window), the running totals since the start, and the record."""
        if result.status not in (QueryStatus.VALUE, QueryStatus.EMPTY):
            # No counts from this answer (an error, or series that are not numbers): say why, keep the history.
            unknown = Counts(_PHASES[result.status], detail=result.detail)
            return unknown, unknown, history.requests_since_start, {"status": result.status.value}
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
            return missing, missing, total.requests, summary
        counts = Counts(Phase.OK, window.requests, window.errors, window.slow, window.slow_known, timed=window.timed,
                        connections=window.connections, failures=window.failures, slow_bound_ms=window.slow_bound_ms)
        since_start = Counts(Phase.OK, total.requests, total.errors, total.slow, total.slow_known, timed=total.timed,
                             connections=total.connections, failures=total.failures,
                             slow_bound_ms=total.slow_bound_ms)
        return counts, since_start, total.requests, summary


def resumed_baseline_query(counters_promql: str, started_at: float) -> str:
    """The counters query evaluated at the analysis's first start (PromQL `@` modifier).

    The counters query is a union (`A or B or C`) of plain selectors built by istio_queries, whose label
    values (Kubernetes names, flag regexes) hold no " or "; `@` binds to one selector, so each gets it.
    """
    return " or ".join(f"{selector} @ {started_at:.3f}" for selector in counters_promql.split(" or "))


def _point(result: QueryResult) -> PointValue:
    """A query result as the judgment's PointValue."""
    return PointValue(_PHASES[result.status], result.value, result.detail)
