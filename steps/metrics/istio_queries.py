"""The built-in PromQL over Istio's standard metrics (reporter="destination"), as pure functions.

A query is an interface with users (dashboards, alert rules, the sandbox), so the tests assert
every rendered query verbatim: a change here must show up as a diff there.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollguard.steps.metrics.promql import range_window, selector
from rollguard.steps.metrics.querier import AnswerShape, QuerySpec

REQUESTS = "istio_requests_total"
DURATION_BUCKETS = "istio_request_duration_milliseconds_bucket"
SERVER_ERRORS = 'response_code=~"5.."'


def version_selector(namespace: str, service: str, version: str, extra: str = "") -> str:
    """Label matchers for one version (subset) of a service, as Istio's destination reporter labels it."""
    return selector(
        {
            "reporter": "destination",
            "destination_workload_namespace": namespace,
            "destination_service_name": service,
            "destination_version": version,
        },
        extra,
    )


def error_rate_query(namespace: str, service: str, version: str, window: str | float) -> str:
    """Share of requests answered 5xx over `window`: 0 when there were none, NaN without traffic."""
    errors_selector = version_selector(namespace, service, version, SERVER_ERRORS)
    errors = f"sum(rate({REQUESTS}{errors_selector}[{range_window(window)}]))"
    total = f"sum(rate({REQUESTS}{version_selector(namespace, service, version)}[{range_window(window)}]))"
    # `or on() vector(0)`: with no 5xx series at all the error rate is 0, not "no data".
    return f"({errors} or on() vector(0)) / {total}"


def p99_latency_query(namespace: str, service: str, version: str, window: str | float) -> str:
    """99th percentile request duration in milliseconds over `window`, from Istio's histogram."""
    buckets = f"rate({DURATION_BUCKETS}{version_selector(namespace, service, version)}[{range_window(window)}])"
    return f"histogram_quantile(0.99, sum by (le) ({buckets}))"


def counters_query(namespace: str, service: str, version: str) -> str:
    """The raw request counters and duration buckets of one version, every series, in one snapshot.

    rollguard subtracts two snapshots itself (per series, minding counter resets), so a series that
    appears during the analysis (the first 500) is counted in full, which increase() would not do.
    """
    names = f'__name__=~"{REQUESTS}|{DURATION_BUCKETS}"'
    return version_selector(namespace, service, version, names)


@dataclass(frozen=True)
class VersionQueries:
    """The built-in queries of one version: raw counters (all series), error rate and p99 (one value each)."""

    counters: QuerySpec
    error_rate: QuerySpec
    p99_latency_ms: QuerySpec


@dataclass(frozen=True)
class AnalysisQueries:
    """Every built-in query of an analysis, canary and stable over the same window."""

    canary: VersionQueries
    stable: VersionQueries

    def in_order(self) -> tuple[QuerySpec, ...]:
        """The queries in the order they run, are logged and are recorded in the verdict's settings."""
        return (self.canary.counters, self.stable.counters, self.canary.error_rate, self.stable.error_rate,
                self.canary.p99_latency_ms, self.stable.p99_latency_ms)


def analysis_queries(namespace: str, service: str, canary_version: str, stable_version: str,
                     window: str) -> AnalysisQueries:
    """The built-in queries for one canary analysis; each version's names start with canary_ or stable_."""

    def of(role: str, version: str) -> VersionQueries:
        return VersionQueries(
            counters=QuerySpec(f"{role}_counters", counters_query(namespace, service, version), AnswerShape.SERIES),
            error_rate=QuerySpec(f"{role}_error_rate", error_rate_query(namespace, service, version, window),
                                 AnswerShape.ONE_VALUE),
            p99_latency_ms=QuerySpec(f"{role}_p99_latency_ms", p99_latency_query(namespace, service, version, window),
                                     AnswerShape.ONE_VALUE),
        )

    return AnalysisQueries(canary=of("canary", canary_version), stable=of("stable", stable_version))
